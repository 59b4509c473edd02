"""The open-set rule keeps the false-positive identification rate at its target as the gallery grows.

Synthetic embeddings: random unit vectors in 128-d behave like independent
impostors (cosine ~ N(0, 1/128)). The impostor tail is fitted on one random
set with ml.eval.calibrate, the FPIR measured on fresh galleries and strangers.
"""
from __future__ import annotations

import numpy as np
import pytest

from ml.eval.calibrate import impostor_scores, tail_table
from ml.openset import ImpostorTail, openset_threshold, pair_rate_for

DIM, TARGET = 128, 0.01


def unit_vectors(rng, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def tail() -> ImpostorTail:
    rng = np.random.default_rng(1)
    vectors = unit_vectors(rng, 3300)  # ~5.4M impostor pairs: the table reaches 1e-5, then extrapolates
    items = [(f"p{i}", f"p{i}.jpg") for i in range(len(vectors))]
    table = tail_table(impostor_scores({f"p{i}.jpg": v for i, v in enumerate(vectors)}, items))
    assert "1e-05" in table
    return ImpostorTail.from_table(table)


def stranger_fpir(rng, threshold: float, gallery_size: int, strangers: int = 4000) -> float:
    gallery, probes = unit_vectors(rng, gallery_size), unit_vectors(rng, strangers)
    return float(((probes @ gallery.T).max(axis=1) >= threshold).mean())


def test_fpir_stays_at_target_as_identities_are_added(tail):
    rng = np.random.default_rng(2)
    thresholds, rates = [], []
    for size in (10, 300, 1500, 3001):
        threshold = openset_threshold(tail, target_fpir=TARGET, comparisons=size)
        thresholds.append(threshold)
        rates.append(stranger_fpir(rng, threshold, size))
    # Each enrollment raises the threshold: nobody's match gets looser.
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == len(thresholds)
    # At every size the measured FPIR stays near the 1% target (4000 strangers: +-0.3% at 2 sigma).
    assert all(0.003 <= r <= 0.018 for r in rates), rates


def test_a_fixed_pair_threshold_names_more_strangers_as_the_gallery_grows(tail):
    rng = np.random.default_rng(3)
    fixed = openset_threshold(tail, target_fpir=TARGET, comparisons=10)
    small, large = stranger_fpir(rng, fixed, 10), stranger_fpir(rng, fixed, 1500)
    assert small < 0.02 and large > 0.5  # the failure the rule exists for


def test_tail_interpolates_and_extrapolates_monotonically(tail):
    rates = [1e-2, 3e-3, 1e-4, 1e-6, 1e-8, 1e-10]
    values = [tail.threshold_at(r) for r in rates]
    assert values == sorted(values)
    assert tail.threshold_at(1e-3) == pytest.approx(tail.thresholds[tail.log10_rates.index(-3.0)])
    assert pair_rate_for(0.01, 1) == pytest.approx(0.01)
    assert pair_rate_for(0.01, 1000) == pytest.approx(1.005e-5, rel=1e-3)
    with pytest.raises(ValueError):
        pair_rate_for(1.5, 10)
    with pytest.raises(ValueError):
        ImpostorTail.from_table({"1e-2": 0.5, "1e-3": 0.4})


def test_openset_protocol_and_figures_on_synthetic_people():
    from pathlib import Path

    from ml.eval.openset import evaluate, split_protocol

    rng = np.random.default_rng(4)
    centres = unit_vectors(rng, 40)
    items, emb = [], {}
    for person in range(40):
        photos = 4 if person < 20 else (2 if person < 25 else 1)  # 20 enrolled, 5 ignored, 15 strangers
        for k in range(photos):
            path = Path(f"p{person:02d}/p{person:02d}_{k + 1:04d}.jpg")
            items.append((f"p{person:02d}", path))
            v = centres[person] + 0.04 * rng.standard_normal(DIM).astype(np.float32)
            emb[str(path)] = v / np.linalg.norm(v)
    enroll, known, unknown = split_protocol(items)
    assert len(enroll) == 20 and len(known) == 60 and len(unknown) == 15
    assert all(str(p).endswith("_0001.jpg") for p in enroll.values())

    # An impostor that looks like person 0 (e.g. a twin) is a stranger named.
    twin = centres[0] + 0.04 * rng.standard_normal(DIM).astype(np.float32)
    emb[str(unknown[0][1])] = twin / np.linalg.norm(twin)
    figures = evaluate(emb, enroll, known, unknown, rule=lambda comparisons: 0.5)
    assert figures["enrolled"] == 20 and figures["threshold"] == 0.5
    assert figures["identification_rate"] == 1.0 and figures["misidentified"] == 0.0
    assert figures["false_accept_rate"] == pytest.approx(1 / 15)
    # FPIR 5% of 15 strangers allows none: the cut sits just above the twin's score.
    twin_score = float(emb[str(unknown[0][1])] @ emb[str(enroll["p00"])])
    assert figures["identification_rate_at_fpir"]["0.05"]["threshold"] == pytest.approx(twin_score, abs=1e-4)


def test_masked_probes_meet_masked_templates_at_the_masked_threshold():
    """As in the service: a probe called masked also meets the masked-probe templates, at rule(2N)."""
    from pathlib import Path

    from ml.eval.masked import MaskedViews
    from ml.eval.openset import evaluate

    rng = np.random.default_rng(5)
    centres = unit_vectors(rng, 4)
    enroll = {f"p{i}": Path(f"p{i}/e.jpg") for i in range(4)}
    emb = {str(p): centres[i] for i, p in enumerate(enroll.values())}
    # p0's probe scores 0.45 against the bare template and 0.7 against its masked-probe template.
    other = unit_vectors(rng, 1)[0]
    other -= (other @ centres[0]) * centres[0]
    other /= np.linalg.norm(other)
    probe = 0.45 * centres[0] + np.sqrt(1 - 0.45 ** 2) * other
    blend = 0.7 * probe + np.sqrt(1 - 0.7 ** 2) * unit_vectors(rng, 1)[0]
    templates = {str(p): centres[i] for i, p in enumerate(enroll.values())}
    templates[str(enroll["p0"])] = blend / np.linalg.norm(blend)
    known, strangers = [("p0", Path("p0/probe.jpg"))], [("s0", Path("s0/probe.jpg"))]

    def run(flagged: bool):
        views = MaskedViews(probes={"p0/probe.jpg": probe.astype(np.float32), "s0/probe.jpg": unit_vectors(rng, 1)[0]},
                            flagged={"p0/probe.jpg": flagged, "s0/probe.jpg": flagged}, templates=templates)
        return evaluate(emb, enroll, known, strangers, rule=lambda comparisons: 0.4 + 0.1 * (comparisons > 4),
                        masked=views)

    masked, bare = run(True), run(False)
    assert masked["threshold"] == 0.4 and masked["masked_threshold"] == 0.5  # bare N=4, masked 2N=8 comparisons
    assert masked["identification_rate"] == 1.0 and masked["flagged_masked"] == 1.0  # 0.7 via the masked template
    assert bare["identification_rate"] == 1.0 and bare["flagged_masked"] == 0.0  # 0.45 >= bare threshold 0.4
    # Without its masked-probe template the flagged probe (0.45) misses the masked threshold.
    templates[str(enroll["p0"])] = centres[0]
    assert run(True)["identification_rate"] == 0.0


def test_several_templates_per_person_score_the_best_one_count_in_t_and_share_probes():
    """--templates-per-person: k photos enrolled, an identity scores its best template, T counts templates."""
    from pathlib import Path

    from ml.eval.openset import evaluate, split_templates

    rng = np.random.default_rng(6)
    centres = unit_vectors(rng, 12)
    items, emb = [], {}
    for person in range(12):
        photos = 5 if person < 6 else (3 if person < 8 else 1)
        for k in range(photos):
            path = Path(f"p{person:02d}/p{person:02d}_{k + 1:04d}.jpg")
            items.append((f"p{person:02d}", path))
            v = centres[person] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
            emb[str(path)] = v / np.linalg.norm(v)
    # p00's first photo is a poor one (another direction): with one template p00's probes are missed.
    emb[str(items[0][1])] = unit_vectors(rng, 1)[0]
    one, known1, unknown1 = split_templates(items, 1, most=3)
    three, known3, unknown3 = split_templates(items, 3, most=3)
    assert known1 == known3 and unknown1 == unknown3  # the same probes for every k
    assert [len(v) for v in three.values()] == [3] * 6 + [2] * 2  # people with 3 photos keep one probe
    assert all(p not in {q for v in three.values() for q in v} for _, p in known3)
    seen = []
    k1 = evaluate(emb, one, known1, unknown1, rule=lambda t: seen.append(t) or 0.5)
    k3 = evaluate(emb, three, known3, unknown3, rule=lambda t: seen.append(t) or 0.5)
    assert seen[0] == 8 and seen[2] == 22  # T counts templates (bare), not identities
    assert k1["templates"] == 8 and k3["templates"] == 22 and k3["enrolled"] == 8
    p00 = sum(1 for n, _ in known1 if n == "p00") / len(known1)
    assert k1["identification_rate"] == pytest.approx(1 - p00)
    assert k3["identification_rate"] == 1.0  # p00's other templates find its probes


def test_probes_below_the_quality_cut_are_never_named():
    from pathlib import Path

    from ml.eval.degraded import DegradedViews
    from ml.eval.openset import evaluate

    rng = np.random.default_rng(7)
    centres = unit_vectors(rng, 3)
    enroll = {f"p{i}": Path(f"p{i}/e.jpg") for i in range(3)}
    emb = {str(p): centres[i] for i, p in enumerate(enroll.values())}
    known = [(f"p{i}", Path(f"p{i}/probe.jpg")) for i in range(3)]
    strangers = [("s", Path("s/probe.jpg"))]
    views = DegradedViews(probes={"p0/probe.jpg": centres[0], "p1/probe.jpg": centres[1], "p2/probe.jpg": centres[0],
                                  "s/probe.jpg": centres[2]},  # p2's blurred probe looks like p0; the stranger like p2
                          quality={"p0/probe.jpg": 0.9, "p1/probe.jpg": 0.2, "p2/probe.jpg": 0.1, "s/probe.jpg": 0.15},
                          variant={}, face_found={})
    loose = evaluate(emb, enroll, known, strangers, rule=lambda t: 0.5, degraded=views)
    assert loose["identification_rate"] == pytest.approx(2 / 3) and loose["misidentified"] == pytest.approx(1 / 3)
    assert loose["false_accept_rate"] == 1.0 and loose["low_quality"] == 0.0
    cut = evaluate(emb, enroll, known, strangers, rule=lambda t: 0.5, degraded=views, min_quality=0.3)
    assert cut["identification_rate"] == pytest.approx(1 / 3) and cut["misidentified"] == 0.0
    assert cut["false_accept_rate"] == 0.0 and cut["low_quality"] == 0.75


def test_shipped_rule_uses_the_masked_tail_for_masked_probes(pipeline):
    from ml.eval.openset import default_rule

    assert pipeline.masked_impostor_tail is not None and pipeline.impostor_tail is not None
    bare, masked = default_rule(pipeline, TARGET), default_rule(pipeline, TARGET, masked=True)
    for comparisons in (300, 3000):
        assert masked(comparisons) == pytest.approx(
            openset_threshold(pipeline.masked_impostor_tail, target_fpir=TARGET, comparisons=comparisons))
        assert bare(comparisons) == pytest.approx(
            openset_threshold(pipeline.impostor_tail, target_fpir=TARGET, comparisons=comparisons))
        assert masked(comparisons) > bare(comparisons)  # the masked tail is the heavier one past ~1e-4
