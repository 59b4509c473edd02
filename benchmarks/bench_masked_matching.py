"""Masked probes vs unmasked enrollments on dev-faces: top-1 before/after masked templates.

    .venv/bin/python benchmarks/bench_masked_matching.py [/work/shared/data/dev-faces]

A probe is a dev photo with a synthetic mask drawn on (on the aligned crop, or
on the whole photo which is then detected and aligned again); an enrollment is
a bare photo, plus -- depending on the strategy -- the ``masked_templates`` of
it. A. identification: one enrollment per person (13), every other photo a
probe, top-1, averaged over 5 choices of the enrolled photo. B. verification
over all ordered photo pairs (one enrolled, the other the probe): AUC, TAR and
FAR at the recognizer's threshold, TAR at 1% and 0.1% FAR. Strategies that
depend on the probe's mask state take it from the shipped MaskClassifier.

Probe fabrics differ from the enrollment ones where possible ("green",
"white", made-up fabrics) so the gain is not from matching an identical mask.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# Run as a script from anywhere: the repository root holds ml/ and weights/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_faces(root: Path, pipeline):
    from benchmarks.dev_photos import largest_faces

    images, crops, landmarks, people = [], [], [], []
    for person, _path, img, face in largest_faces(root, pipeline):
        images.append(img)
        landmarks.append(face.landmarks)
        crops.append(pipeline.align(img, face.landmarks))
        people.append(person)
    return images, crops, landmarks, np.array(people)


def pair_metrics(scores: np.ndarray, same: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import roc_auc_score

    impostor = np.sort(scores[~same])[::-1]
    at_far = {far: impostor[max(int(far * len(impostor)) - 1, 0)] for far in (0.01, 0.001)}
    return {
        "auc": float(roc_auc_score(same, scores)),
        "tar@thr": float((scores[same] >= threshold).mean()),
        "far@thr": float((scores[~same] >= threshold).mean()),
        "tar@far1%": float((scores[same] > at_far[0.01]).mean()),
        "tar@far0.1%": float((scores[same] > at_far[0.001]).mean()),
        "genuine_mean": float(scores[same].mean()),
    }


def fuse(bare: np.ndarray, masked: np.ndarray, blend: np.ndarray, strategy: str, probe_masked: np.ndarray):
    """Score of probes against enrollments under a template strategy.

    bare: cosine to the bare enrollment template; masked: (k, ...) cosines to
    its k synthetic-masked templates; blend: cosine to normalise(bare + mean
    masked), a single extra template a vector index can hold.
    """
    best_masked = masked.max(axis=0)
    return {
        "bare only": lambda: bare,
        "max(bare, masked)": lambda: np.maximum(bare, best_masked),
        "masked if probe masked": lambda: np.where(probe_masked, best_masked, bare),
        "mean(bare, masked) if probe masked": lambda: np.where(probe_masked, (bare + best_masked) / 2, bare),
        "blend if probe masked": lambda: np.where(probe_masked, blend, bare),
        "max(bare, blend)": lambda: np.maximum(bare, blend),
    }[strategy]()


STRATEGIES = ("bare only", "max(bare, masked)", "masked if probe masked",
              "mean(bare, masked) if probe masked", "blend if probe masked", "max(bare, blend)")


def main(root: Path) -> None:
    from ml.attributes import MaskClassifier
    from ml.attributes.overlay import synthesize_masked, synthesize_masked_image
    from ml.attributes.synthetic import made_up_fabric
    from ml.attributes.templates import masked_blend_template, masked_templates
    from ml.pipeline import FacePipeline

    pipeline = FacePipeline.from_manifest()
    images, crops, landmarks, people = load_faces(root, pipeline)
    thr = pipeline.threshold
    print(f"{len(crops)} faces of {len(set(people))} people; recognizer threshold {thr}")

    bare = pipeline.embed_crops(crops)
    templates = [masked_templates(c) for c in crops]
    masked_enrolled = np.stack([pipeline.embed_crops([t[k] for t in templates]) for k in range(len(templates[0]))])
    blend = np.stack([masked_blend_template(bare[i], masked_enrolled[:, i]) for i in range(len(bare))])

    rng = np.random.default_rng(7)
    # "if probe masked" strategies use the shipped mask classifier's verdict, as search will.
    classifier = MaskClassifier.load()

    def probe(probe_crops):
        flagged = np.array([p.masked for p in classifier.predict(probe_crops)])
        return pipeline.embed_crops(probe_crops), flagged

    probes = {"unmasked": probe(crops)}
    for fabric in ("green", "white", "made-up"):
        masked = [synthesize_masked(c, rng=rng, texture=made_up_fabric(rng)) if fabric == "made-up"
                  else synthesize_masked(c, fabric, rng) for c in crops]
        probes[f"masked crop, {fabric}"] = probe(masked)
    # Whole-photo masks: detection and landmarks must cope with the mask too.
    redetected, found = [], 0
    for i, (img, lm) in enumerate(zip(images, landmarks)):
        masked_img = synthesize_masked_image(img, lm, ("green", "white")[i % 2], rng)
        near = [f for f in pipeline.detect(masked_img) if _contains(f.box, lm.mean(axis=0))]
        found += bool(near)
        redetected.append(pipeline.align(masked_img, near[0].landmarks if near else lm))
    print(f"whole-photo masks (green/white): detector re-found {found}/{len(images)} faces")
    probes["masked photo, re-detected"] = probe(redetected)
    for name, (_, flagged) in probes.items():
        print(f"mask classifier flags {flagged.sum()}/{len(flagged)} probes of '{name}' as masked")

    # A: one enrollment per person, every other photo of the 13 people is a probe;
    # repeated with each photo index as the enrollment, averaged.
    print("\nA. identification, one bare enrollment per person (top-1, mean over enrollment choices)")
    for k, strategy in enumerate(STRATEGIES):
        print(f"   S{k}: {strategy}")
    print(f"{'probes':28s}" + "".join(f"{'S' + str(k):>8s}" for k in range(len(STRATEGIES))))
    for probe_name, (emb, is_masked) in probes.items():
        row = []
        for strategy in STRATEGIES:
            hits = []
            for rotation in range(5):
                enrolled = _one_per_person(people, rotation)
                scores = fuse(emb @ bare[enrolled].T, np.einsum("nd,kmd->knm", emb, masked_enrolled[:, enrolled]),
                              emb @ blend[enrolled].T, strategy, is_masked[:, None])
                probe_rows = np.setdiff1d(np.arange(len(people)), enrolled)
                best = scores[probe_rows].argmax(axis=1)
                hits.append(np.mean(people[enrolled][best] == people[probe_rows]))
            row.append(f"{np.mean(hits):.3f}")
        print(f"{probe_name:28s}" + "".join(f"{c:>8s}" for c in row))

    # B: verification over every ordered pair of photos (enrolled i, probe j, i != j):
    # more impostor pairs than pairs.txt, so 0.1% FAR is measurable.
    a, b = np.nonzero(~np.eye(len(people), dtype=bool))
    same = people[a] == people[b]
    print(f"\nB. verification, all {len(a)} ordered photo pairs ({same.sum()} same person): "
          "enrollment bare (+templates), probe as listed")
    print("   auc / tar@thr / far@thr / tar@far1% / tar@far0.1% / mean genuine score")
    for probe_name, (emb, is_masked) in probes.items():
        print(f"  {probe_name}")
        for strategy in STRATEGIES:
            scores = fuse(np.einsum("nd,nd->n", emb[b], bare[a]), np.einsum("nd,knd->kn", emb[b], masked_enrolled[:, a]),
                          np.einsum("nd,nd->n", emb[b], blend[a]), strategy, is_masked[b])
            m = pair_metrics(scores, same, thr)
            print(f"    {strategy:36s} {m['auc']:.4f} / {m['tar@thr']:.3f} / {m['far@thr']:.4f} / "
                  f"{m['tar@far1%']:.3f} / {m['tar@far0.1%']:.3f} / {m['genuine_mean']:.3f}")


def _contains(box, point) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


def _one_per_person(people: np.ndarray, rotation: int) -> np.ndarray:
    chosen = []
    for person in dict.fromkeys(people):
        rows = np.flatnonzero(people == person)
        chosen.append(rows[rotation % len(rows)])
    return np.array(chosen)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data/dev-faces"))
