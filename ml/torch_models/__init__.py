"""The default detector (YuNet) and recognizer (SFace) as torch modules, for GPUs and batches.

The same packaged int8 ONNX files as the cv2.dnn path, sha256-checked against
the manifest, are read without the ``onnx`` package (``onnx_proto``), their
weights dequantized to float32 once (``graph``), and run by torch on the
device ``FACEINDEX_DEVICE`` names (``device``). ``TorchFacePipeline``
(``pipeline``) runs many images per call: decode on CPU threads, one detector
batch per input shape, alignment with ``grid_sample`` on the device, one
embedding call for every face of the batch. Imports torch: only load this
package where torch is installed.
"""
import os

# torch's OpenMP workers spin while they wait for work. On a CPU shared with
# other processes (several workers, or other services) that spinning starves
# them: measured here, YuNet on 640x480 took 1745 ms per image with spinning
# and 129 ms without (2 cores, load ~15). Only takes effect if torch is not
# imported yet; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
