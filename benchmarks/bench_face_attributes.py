"""Sex accuracy and age plausibility of AgeSexEstimator on dev-faces (measurement only).

    .venv/bin/python benchmarks/bench_face_attributes.py [/work/shared/data/dev-faces]

The dev photos carry no attribute labels; sex is labelled here by hand from the
13 (public, well-known) identities, for measurement only. Ages are reported per
identity (mean and spread) because photo dates are unknown.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# Run as a script from anywhere: the repository root holds ml/ and weights/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Hand labels for measurement only (never used in the product or tests).
SEX_OF = {
    "angelina_jolie": "female", "elon_musk": "male", "george_clooney": "male", "jack_dorsey": "male",
    "jeff_bezos": "male", "jennifer_aniston": "female", "katy_perry": "female",
    "leonardo_dicaprio": "male", "marissa_mayer": "female", "mark_zuckerberg": "male",
    "matt_damon": "male", "scarlett_johansson": "female", "sundar_pichai": "male",
}


def main(root: Path) -> None:
    from benchmarks.dev_photos import largest_faces
    from ml.attributes import AgeSexEstimator
    from ml.pipeline import FacePipeline

    pipeline = FacePipeline.from_manifest()
    estimator = AgeSexEstimator.load()
    rows = []
    for person, path, img, face in largest_faces(root, pipeline):
        full = estimator.predict(img, [face])[0]
        crop = estimator.predict_crops([pipeline.align(img, face.landmarks)])[0]
        rows.append((person, path.name, full, crop))
    for label, pick in (("full image (predict)", 2), ("aligned crop (predict_crops)", 3)):
        truth = np.array([SEX_OF[r[0]] for r in rows])
        predicted = np.array([r[pick].sex for r in rows])
        print(f"\n== {label}: sex accuracy {np.mean(truth == predicted):.3f} on {len(rows)} faces")
        for sex in ("female", "male"):
            sel = truth == sex
            print(f"   {sex}: {np.mean(predicted[sel] == sex):.3f} ({sel.sum()} faces)")
        print("   per identity: name  n  sex-correct  age mean  age min..max")
        for name in SEX_OF:
            mine = [r for r in rows if r[0] == name]
            ages = [r[pick].age for r in mine]
            correct = sum(r[pick].sex == SEX_OF[name] for r in mine)
            print(f"   {name:20s} {len(mine):2d}  {correct}/{len(mine)}  {np.mean(ages):5.1f}  {min(ages):5.1f}..{max(ages):5.1f}")
        diffs = [abs(r[2].age - r[3].age) for r in rows]
    print(f"\nmean |age(full) - age(crop)| = {np.mean(diffs):.1f} years")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data/dev-faces"))
