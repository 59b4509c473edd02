"""The shipped mask classifier on dev-faces with synthetic masks (measurement only).

    .venv/bin/python benchmarks/bench_mask_classifier.py [/work/shared/data/dev-faces] [weights.npz]

(weights.npz: evaluate another training run instead of the manifest's model)

dev-faces are people the classifier never saw (it trains on eight package
faces). Each photo gives a bare face, a properly worn and a below-the-nose mask
in the "green" fabric held out of training, drawn (a) on the aligned crop with
jitter and (b) on the whole photo, then detected and aligned again.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# Run as a script from anywhere: the repository root holds ml/ and weights/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(root: Path, weights_file: Path | None = None) -> None:
    from benchmarks.dev_photos import largest_faces
    from ml.attributes import MaskClassifier
    from ml.attributes.mask_net import LABELS
    from ml.attributes.overlay import synthesize_masked, synthesize_masked_image
    from ml.attributes.train_mask import HELD_OUT_MASK, classification_report
    from ml.pipeline import FacePipeline

    pipeline = FacePipeline.from_manifest()
    if weights_file is None:
        classifier = MaskClassifier.load()
    else:
        from ml.attributes.mask_net import load_weights

        classifier = MaskClassifier(load_weights(weights_file.read_bytes()))
    rng = np.random.default_rng(11)
    sets = {"crop": ([], []), "whole photo, re-detected": ([], [])}
    lost = 0
    for _person, _path, img, face in largest_faces(root, pipeline):
        crop = pipeline.align(img, face.landmarks)
        for k, label in enumerate(LABELS):
            images, targets = sets["crop"]
            images.append(crop if label == "no_mask" else synthesize_masked(crop, HELD_OUT_MASK, rng, wear=label))
            targets.append(k)
            photo = img if label == "no_mask" else synthesize_masked_image(img, face.landmarks, HELD_OUT_MASK, rng, wear=label)
            centre = face.landmarks.mean(axis=0)
            near = [f for f in pipeline.detect(photo)
                    if f.box[0] <= centre[0] <= f.box[0] + f.box[2] and f.box[1] <= centre[1] <= f.box[1] + f.box[3]]
            lost += not near
            images, targets = sets["whole photo, re-detected"]
            images.append(pipeline.align(photo, (near[0] if near else face).landmarks))
            targets.append(k)
    print(f"faces the detector lost after masking: {lost}")
    for name, (images, targets) in sets.items():
        report = classification_report(classifier.probabilities(images), np.array(targets))
        print(f"\n== {name} ({HELD_OUT_MASK} fabric, never seen in training)")
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/shared/data/dev-faces"),
         Path(sys.argv[2]) if len(sys.argv) > 2 else None)
