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
    by_identity: dict[str, list[Path]] = defaultdict(list)
    for name, path in items:
        by_identity[name].append(path)
    enroll, known, unknown = {}, [], []
    for name in sorted(by_identity):
        paths = sorted(by_identity[name])
        if len(paths) >= MIN_PHOTOS_TO_ENROLL:
            enroll[name] = paths[0]
            known += [(name, p) for p in paths[1:]]
        elif len(paths) == 1:
            unknown.append((name, paths[0]))
    return enroll, known, unknown


def run_openset(pipeline, root: Path, *, rule, masked_rule=None, gallery_sizes=(1500,), margin: float = 0.0,
                baseline_threshold: float | None = None, cache: bool = True, masked_probes: bool = False) -> dict:
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
    return report


def grow_gallery(items, enroll: dict, size: int) -> dict | None:
    """The protocol's gallery plus distractor people (first photo each) up to ``size`` identities."""
    by_identity: dict[str, list[Path]] = defaultdict(list)
    for name, path in items:
        by_identity[name].append(path)
    others = sorted(set(by_identity) - set(enroll))
    if size <= len(enroll) or size > len(enroll) + len(others):
        return None
    order = np.random.default_rng(0).permutation(len(others))
    grown = dict(enroll)
    for i in order[: size - len(enroll)]:
        grown[others[i]] = sorted(by_identity[others[i]])[0]
    return grown


def evaluate(emb: dict, enroll: dict, known, unknown, *, rule, masked_rule=None, margin: float = 0.0,
             masked=None) -> dict:
    """``masked`` (ml.eval.masked.MaskedViews): probes wear synthetic masks; as in the service, a probe the
    mask classifier calls masked also meets the masked-probe templates, at ``masked_rule`` (default
    ``rule``) for all templates."""
    names = sorted(n for n in enroll if str(enroll[n]) in emb)
    gallery = np.stack([emb[str(enroll[n])] for n in names])
    index = {n: i for i, n in enumerate(names)}
    probe_emb = emb if masked is None else masked.probes
    known = [(n, p) for n, p in known if str(p) in probe_emb]
    unknown = [(n, p) for n, p in unknown if str(p) in probe_emb]
    threshold = float(rule(len(names)))
    masked_threshold = float((masked_rule or rule)(2 * len(names)))  # bare + masked-probe template per identity

    def flagged(probes):
        return np.array([masked is not None and masked.flagged[str(p)] for _, p in probes], dtype=bool)

    def best(probes):
        vectors = np.stack([probe_emb[str(p)] for _, p in probes])
        scores = vectors @ gallery.T
        if masked is not None:
            blends = np.stack([masked.templates[str(enroll[n])] for n in names])
            scores = np.where(flagged(probes)[:, None], np.maximum(scores, vectors @ blends.T), scores)
        for row, (name, _) in enumerate(probes):  # a probe never meets its own identity's template as a stranger
            if name in index and str(enroll[name]) == str(probes[row][1]):
                scores[row, index[name]] = -np.inf
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

    k_named, u_named = named(k_top, k_second, known), named(u_top, u_second, unknown)
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
