"""Compare the torch FaceNet port with the original Keras model on real aligned faces.

    python -m ml.training.tools.verify_facenet_port --keras-python /tmp/tfvenv/bin/python IMAGE...

Faces come from ``ml``'s pipeline (detector + aligner); both models see the
identical prewhitened 160x160 tensor. Prints per-face cosine between the two
embeddings; exits non-zero if any is below 1 - 1e-3.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keras-python", required=True, help="interpreter with tensorflow/keras installed")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)

    from ml.pipeline import FacePipeline
    from ml.training.backbones.inception_resnet_v1 import facenet, facenet_weights_path

    pipeline = FacePipeline.from_manifest()
    crops = [face.crop for path in args.images for face in pipeline.process(cv2.imread(path))]
    model = facenet().eval()
    with torch.no_grad():
        batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
        whitened = model.preprocess(batch)
        ours = model(batch).numpy()
    with tempfile.TemporaryDirectory() as tmp, \
            __import__("importlib.resources").resources.as_file(facenet_weights_path()) as h5:
        inputs, outputs = Path(tmp, "in.npy"), Path(tmp, "out.npy")
        np.save(inputs, whitened.permute(0, 2, 3, 1).numpy())
        script = Path(__file__).with_name("facenet_keras_reference.py")
        subprocess.run([args.keras_python, str(script), str(h5), str(inputs), str(outputs)], check=True)
        theirs = np.load(outputs)
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    print(f"{len(crops)} faces; cosine(torch, keras): min {cos.min():.6f} mean {cos.mean():.6f}; "
          f"max |diff| {np.abs(ours - theirs).max():.2e}")
    return 0 if cos.min() >= 1 - 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
