"""``openset``: archive-style open-set identification on a folder-per-identity tree.

Protocol (shared/data README, mirrors archive indexing): enroll the first photo
of every person with >= 3 photos; probe their other photos, plus the one photo
of every person who has only one (never enrolled). One face per photo: the
face nearest the image centre. Each probe is named as the best-scoring
enrolled identity when that score passes the threshold, else unknown.

- identification_rate: enrolled people's probes named correctly;
- misidentified: enrolled people's probes named as someone else;
- false_accept_rate (FPIR): never-enrolled probes named as anyone;
- identification_rate_at_fpir: the same, at the threshold that lets through
  0.1% / 1% / 5% of never-enrolled probes (read off the score distribution).

``gallery_sizes`` repeats the measurement with the gallery grown by distractor
people (the first photo of people outside the protocol's gallery, in a fixed
random order): a never-enrolled probe is never compared with its own photo.

``templates_per_person`` (k = 1, 2, 3 ...) enrolls each protocol person's first
min(k, n - 1) photos as separate templates (distractors: their first min(k, n))
and scores every k on the same probes: the photos no k enrolls. An identity
scores its best template and the rule's T counts templates, as in the service.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ml.eval.images import NO_FACE_POLICY, embed_images, identity_folders
from ml.openset import openset_threshold

FPIR_POINTS = (0.001, 0.01, 0.05)
MIN_PHOTOS_TO_ENROLL = 3


def split_protocol(items: list[tuple[str, Path]]):
    """(enroll {identity: path}, enrolled probes [(identity, path)], never-enrolled probes)."""
    enroll, known, unknown = split_templates(items, 1, most=1)
    return {name: paths[0] for name, paths in enroll.items()}, known, unknown


def split_templates(items: list[tuple[str, Path]], templates: int, *, most: int):
    """Like split_protocol with up to ``templates`` enrolled photos per person (``{identity: [paths]}``).

    Probes are the photos not enrolled at ``most`` templates per person, so every
    ``templates`` <= ``most`` is scored on the same probes.
    """
    by_identity: dict[str, list[Path]] = defaultdict(list)
    for name, path in items:
        by_identity[name].append(path)
    enroll, known, unknown = {}, [], []
    for name in sorted(by_identity):
        paths = sorted(by_identity[name])
        if len(paths) >= MIN_PHOTOS_TO_ENROLL:
            enroll[name] = paths[:min(templates, len(paths) - 1)]
            known += [(name, p) for p in paths[min(most, len(paths) - 1):]]
        elif len(paths) == 1:
            unknown.append((name, paths[0]))
    return enroll, known, unknown


def run_templates_per_person(emb: dict, items, ks, *, rule, gallery_sizes, margin: float) -> dict:
    """Figures for each k templates per enrolled person, on common probes (see split_templates)."""
    most = max(ks)
    out = {}
    for k in ks:
        enroll, known, unknown = split_templates(items, k, most=most)
        row = {}
        for size in gallery_sizes:
            gallery = enroll if size == len(enroll) else grow_gallery(items, enroll, size, templates=k)
            if gallery is None:
                continue
            figures = evaluate(emb, gallery, known, unknown, rule=rule, margin=margin)
            row[str(size)] = {key: figures[key] for key in (
                "enrolled", "templates", "threshold", "probes_enrolled", "probes_never_enrolled", "identification_rate",
                "false_accept_rate", "misidentified", "rank1_rate")}
        out[str(k)] = row
    return out


QUALITY_CUTS = (0.0, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def quality_sweep(emb: dict, gallery: dict, known, unknown, degraded, *, rule, margin: float) -> dict:
    """For each quality cut: the figures, and what it removes (wrong names) against what it loses (right names).

    ``errors_removed``: share of the no-cut run's misidentifications and false accepts that sit below the cut;
    ``correct_lost``: share of its correct identifications that do.
    """
    def counts(figures):
        n_known, n_unknown = figures["probes_enrolled"], figures["probes_never_enrolled"]
        return (figures["identification_rate"] * n_known,
                figures["misidentified"] * n_known + figures["false_accept_rate"] * n_unknown)

    base_right, base_wrong = counts(evaluate(emb, gallery, known, unknown, rule=rule, margin=margin, degraded=degraded))
    out = {}
    for cut in QUALITY_CUTS:
        figures = evaluate(emb, gallery, known, unknown, rule=rule, margin=margin, degraded=degraded, min_quality=cut)
        right, wrong = counts(figures)
        out[f"{cut:g}"] = {**{k: figures[k] for k in ("identification_rate", "misidentified", "false_accept_rate",
                                                       "low_quality")},
                           "errors_removed": round(1 - wrong / base_wrong, 4) if base_wrong else None,
                           "correct_lost": round(1 - right / base_right, 4) if base_right else None}
    return out


def run_degraded(pipeline, emb: dict, items, enroll, known, unknown, *, rule, gallery_sizes, margin: float,
                 cache: bool) -> dict:
    from ml.eval.degraded import VARIANTS, degraded_views

    views = degraded_views(pipeline, [p for _, p in known + unknown if str(p) in emb], face="centre", cache=cache)
    report = {"variants": list(VARIANTS), "face_found_again": float(np.mean(list(views.face_found.values()))),
              "quality_by_variant": {}}
    for variant in VARIANTS:
        q = np.array([views.quality[p] for p, v in views.variant.items() if v == variant])
        report["quality_by_variant"][variant] = {"probes": len(q), **({"median": round(float(np.median(q)), 3),
                                                 "p10": round(float(np.percentile(q, 10)), 3)} if len(q) else {})}
    sweeps = {}
    for size in gallery_sizes:
        gallery = enroll if size == len(enroll) else grow_gallery(items, enroll, size)
        if gallery is not None:
            sweeps[str(size)] = quality_sweep(emb, gallery, known, unknown, views, rule=rule, margin=margin)
    report["quality_cuts_by_gallery_size"] = sweeps
    return report


def run_openset(pipeline, root: Path, *, rule, masked_rule=None, gallery_sizes=(1500,), margin: float = 0.0,
                baseline_threshold: float | None = None, cache: bool = True, masked_probes: bool = False,
                templates_per_person: tuple[int, ...] = (), degraded_probes: bool = False) -> dict:
    """``rule(comparisons) -> threshold``: the decision under test (the shipped default in __main__);
    ``masked_rule``: the same for probes called masked (default ``rule``).

    ``masked_probes``: every probe photo wears a synthetic mask (ml.eval.masked); enrolled faces get
    their masked-probe templates as enrollment stores them.
    """
    items = identity_folders(root)
    embedded = embed_images(pipeline, [p for _, p in items], desc="openset: embedding", face="centre", cache=cache)
    emb = {path: e.embedding for path, e in embedded.items() if e.embedding is not None}
    enroll, known, unknown = split_protocol(items)
    report = {"protocol": f"enroll first photo of people with >= {MIN_PHOTOS_TO_ENROLL} photos; face nearest centre",
              "no_face": sum(1 for e in embedded.values() if e.faces_found == 0), "no_face_policy": NO_FACE_POLICY}
    masked = None
    if masked_probes:
        from ml.eval.masked import PROBE_FABRIC, masked_views

        galleries = [enroll] + [g for g in (grow_gallery(items, enroll, s) for s in gallery_sizes) if g is not None]
        probe_paths = [p for _, p in known + unknown if str(p) in emb]
        masked = masked_views(pipeline, probe_paths, {p for g in galleries for p in g.values() if str(p) in emb},
                              face="centre", cache=cache)
        report["masked_probes"] = {"fabric": PROBE_FABRIC, "drawn_on": "whole photo, then detected again",
                                   "face_found_again": masked.redetected, "probes": len(probe_paths)}
    figures = evaluate(emb, enroll, known, unknown, rule=rule, masked_rule=masked_rule, margin=margin, masked=masked)
    report.update({k: v for k, v in figures.items() if not k.startswith("_")})
    if baseline_threshold is not None:
        fixed = evaluate(emb, enroll, known, unknown, rule=lambda _: baseline_threshold, margin=margin, masked=masked)
        report["fixed_pair_threshold"] = {k: fixed[k] for k in ("threshold", "identification_rate", "false_accept_rate", "misidentified")}
    by_size = {}
    for size in gallery_sizes:
        grown = grow_gallery(items, enroll, size)
        if grown is None:
            continue
        figures = evaluate(emb, grown, known, unknown, rule=rule, masked_rule=masked_rule, margin=margin,
                           masked=masked)
        by_size[str(size)] = {k: figures[k] for k in ("enrolled", "threshold", "masked_threshold", "flagged_masked",
                                                      "identification_rate", "false_accept_rate",
                                                      "misidentified", "identification_rate_at_fpir") if k in figures}
        if baseline_threshold is not None:
            fixed = evaluate(emb, grown, known, unknown, rule=lambda _: baseline_threshold, margin=margin,
                             masked=masked)
            by_size[str(size)]["fixed_pair_threshold"] = {
                k: fixed[k] for k in ("identification_rate", "false_accept_rate", "misidentified")}
    report["by_gallery_size"] = by_size
    if degraded_probes:
        report["degraded_probes"] = run_degraded(pipeline, emb, items, enroll, known, unknown, rule=rule,
                                                 gallery_sizes=gallery_sizes, margin=margin, cache=cache)
    if templates_per_person:
        report["by_templates_per_person"] = run_templates_per_person(
            emb, items, templates_per_person, rule=rule, gallery_sizes=gallery_sizes, margin=margin)
    return report


def grow_gallery(items, enroll: dict, size: int, *, templates: int | None = None) -> dict | None:
    """The protocol's gallery plus distractor people (first photo each) up to ``size`` identities.

    ``templates``: distractors enroll their first ``templates`` photos (a list per person).
    """
    by_identity: dict[str, list[Path]] = defaultdict(list)
    for name, path in items:
        by_identity[name].append(path)
    others = sorted(set(by_identity) - set(enroll))
    if size <= len(enroll) or size > len(enroll) + len(others):
        return None
    order = np.random.default_rng(0).permutation(len(others))
    grown = dict(enroll)
    for i in order[: size - len(enroll)]:
        photos = sorted(by_identity[others[i]])
        grown[others[i]] = photos[0] if templates is None else photos[:templates]
    return grown


def evaluate(emb: dict, enroll: dict, known, unknown, *, rule, masked_rule=None, margin: float = 0.0, masked=None,
             degraded=None, min_quality: float = 0.0) -> dict:
    """``masked`` (ml.eval.masked.MaskedViews): probes wear synthetic masks; as in the service, a probe the
    mask classifier calls masked also meets the masked-probe templates, at ``masked_rule`` (default ``rule``)
    for all templates.

    ``degraded`` (ml.eval.degraded.DegradedViews): probes are the degraded photos, and a probe whose face
    quality is below ``min_quality`` is never named (low_quality), as FACEINDEX_MATCH_MIN_QUALITY does."""
    photos = {n: [p for p in (v if isinstance(v, list) else [v]) if str(p) in emb] for n, v in enroll.items()}
    names = sorted(n for n in photos if photos[n])
    rows = [(n, p) for n in names for p in photos[n]]  # one template per row, grouped by identity
    gallery = np.stack([emb[str(p)] for _, p in rows])
    starts = np.array([i for i, (n, _) in enumerate(rows) if i == 0 or rows[i - 1][0] != n])
    row_of = {str(p): i for i, (_, p) in enumerate(rows)}
    probe_emb = emb if masked is None else masked.probes
    probe_emb = probe_emb if degraded is None else degraded.probes
    known = [(n, p) for n, p in known if str(p) in probe_emb]
    unknown = [(n, p) for n, p in unknown if str(p) in probe_emb]
    threshold = float(rule(len(rows)))
    masked_threshold = float((masked_rule or rule)(2 * len(rows)))  # bare + masked-probe template per enrolled photo

    def flagged(probes):
        return np.array([masked is not None and masked.flagged[str(p)] for _, p in probes], dtype=bool)

    def best(probes):
        vectors = np.stack([probe_emb[str(p)] for _, p in probes])
        scores = vectors @ gallery.T
        if masked is not None:
            blends = np.stack([masked.templates[str(p)] for _, p in rows])
            scores = np.where(flagged(probes)[:, None], np.maximum(scores, vectors @ blends.T), scores)
        for row, (_, path) in enumerate(probes):  # a probe never meets its own photo's template
            if str(path) in row_of:
                scores[row, row_of[str(path)]] = -np.inf
        scores = np.maximum.reduceat(scores, starts, axis=1)  # an identity scores its best template
        order = np.argsort(-scores, axis=1)[:, :2]
        top = scores[np.arange(len(probes)), order[:, 0]]
        second = scores[np.arange(len(probes)), order[:, 1]] if len(names) > 1 else np.full(len(probes), -np.inf)
        return order[:, 0], top, second

    k_idx, k_top, k_second = best(known)
    u_idx, u_top, u_second = best(unknown)
    k_right = np.array([names[i] == n for i, (n, _) in zip(k_idx, known)])

    def named(top, second, probes):
        cut = np.where(flagged(probes), masked_threshold, threshold)
        accepted = top >= cut
        if margin > 0:
            accepted &= ~((second >= cut) & (top - second < margin))
        return accepted

    def good(probes):
        return np.array([degraded is None or degraded.quality[str(p)] >= min_quality for _, p in probes], dtype=bool)

    k_good, u_good = good(known), good(unknown)
    k_named, u_named = named(k_top, k_second, known) & k_good, named(u_top, u_second, unknown) & u_good
    n_named = int(k_named.sum() + u_named.sum())
    at_fpir = {}
    for fpir in FPIR_POINTS:
        cut = _cut_at_fpir(u_top, fpir)
        at_fpir[f"{fpir:g}"] = {
            "identification_rate": float((k_right & (k_top >= cut)).mean()),
            "threshold": round(float(cut), 4),
            "measurable": bool(len(u_top) * fpir >= 1),
        }
    return {
        "enrolled": len(names),
        "templates": len(rows),
        "probes_enrolled": len(known),
        "probes_never_enrolled": len(unknown),
        "threshold": round(threshold, 4),
        **({"masked_threshold": round(masked_threshold, 4),
            "flagged_masked": float(np.concatenate([flagged(known), flagged(unknown)]).mean())}
           if masked is not None else {}),
        "margin": margin,
        "identification_rate": float((k_named & k_right).mean()),
        "misidentified": float((k_named & ~k_right).mean()),
        "false_accept_rate": float(u_named.mean()),
        "precision_named": float((k_named & k_right).sum() / n_named) if n_named else None,
        "rank1_rate": float(k_right.mean()),
        **({"min_quality": min_quality, "low_quality": float(1 - np.concatenate([k_good, u_good]).mean())}
           if degraded is not None else {}),
        "identification_rate_at_fpir": at_fpir,
        "_scores": {"known_top": k_top, "known_right": k_right, "unknown_top": u_top},
    }


def _cut_at_fpir(stranger_best: np.ndarray, fpir: float) -> float:
    """Lowest threshold that names at most ``fpir`` of the strangers."""
    ordered = np.sort(stranger_best)[::-1]
    allowed = int(np.floor(fpir * len(ordered)))
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


def default_rule(pipeline, target_fpir: float, *, masked: bool = False):
    """The shipped decision: the recognizer's impostor tail at ``target_fpir``, else its fixed threshold.

    ``masked``: for probes called masked, the masked-probe tail where the manifest has one.
    """
    tail = pipeline.tail_for(masked)
    if tail is None:
        return lambda comparisons: pipeline.threshold
    return lambda comparisons: openset_threshold(tail, target_fpir=target_fpir, comparisons=comparisons)
