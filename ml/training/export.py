"""Export a backbone as an ONNX recognizer the pipeline can load.

    python -m ml.training.export --run runs/x --out weights/trained/my-model.onnx [--id my-model]
    python -m ml.training.export --backbone facenet --out facenet.onnx   # an untrained/pretrained backbone

The ONNX graph takes ``crop``: (n, 112, 112, 3) float32 BGR pixels 0..255 (the
pipeline's aligned crops, just cast to float) and returns ``embedding``:
(n, dim) L2-normalised; every backbone-specific normalisation is inside the
graph. ``onnx_recognizer.OnnxRecognizer`` runs it with onnxruntime. For a
training run, the manifest table printed here carries the file's sha256 and
the cosine threshold calibrated on the run's held-out pairs (summary.json).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.training.backbones import build_backbone

OPSET = 17


class EmbeddingExport(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, crop):
        return F.normalize(self.backbone(crop.permute(0, 3, 1, 2).contiguous()), dim=1)


def onnx_bytes(backbone) -> bytes:
    wrapper = EmbeddingExport(backbone.eval()).eval()
    buffer = io.BytesIO()
    torch.onnx.export(wrapper, (torch.rand(2, 112, 112, 3) * 255,), buffer, dynamo=False, opset_version=OPSET,
                      input_names=["crop"], output_names=["embedding"],
                      dynamic_axes={"crop": {0: "n"}, "embedding": {0: "n"}})
    return buffer.getvalue()


def check_onnx(data: bytes, backbone, crops: np.ndarray) -> float:
    """Max |difference| between onnxruntime and torch embeddings on ``crops``."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    ours = session.run(None, {"crop": crops.astype(np.float32)})[0]
    with torch.no_grad():
        theirs = EmbeddingExport(backbone.eval())(torch.from_numpy(crops.astype(np.float32))).numpy()
    return float(np.abs(ours - theirs).max())


def load_run_backbone(run_dir: str | Path):
    saved = torch.load(Path(run_dir) / "model.pt", map_location="cpu", weights_only=False)
    backbone = build_backbone(saved["backbone"], pretrained=False)
    if saved["new_fc"]:
        backbone.replace_fc()
    backbone.load_state_dict(saved["state_dict"])
    return backbone.eval()


def manifest_table(model_id: str, out: Path, sha256: str, embedding_dim: int, summary: dict | None) -> str:
    resource = out.as_posix()
    package = "weights"
    if "weights/" in resource:
        resource = resource.split("weights/", 1)[1]
    lines = [
        f"[models.{model_id}]",
        'kind = "recognizer"',
        'implementation = "onnx"',
        f'package = "{package}"',
        f'resource = "{resource}"',
        f'sha256 = "{sha256}"',
        "input_size = [112, 112]",
        'normalization = "ArcFace 5-point alignment to 112x112; BGR float 0..255 NHWC, normalised in-graph"',
        f"embedding_dim = {embedding_dim}",
    ]
    if summary:
        m, c = summary["metrics"], summary["config"]
        lines += [
            f"default_threshold = {m['threshold']:.3f}",
            f'calibrated_on = "{summary["held_out_photos"]} held-out photos, {m["pairs_pos"]}+{m["pairs_neg"]} '
            f'pairs (best-accuracy cut)"',
            f'reported_accuracy = "held-out pair accuracy {m["pair_accuracy"]:.3f}, 1-NN {m["knn_accuracy"]:.3f}"',
            f'notes = "ml.train --backbone {c["backbone"]} --loss {c["loss"]} --freeze {c["freeze"]} '
            f'--epochs {c["epochs"]}"',
        ]
    return "\n".join(lines) + "\n"


def export_run(run_dir: str | Path | None, out: str | Path, *, model_id: str | None = None,
               backbone_id: str | None = None, check_crops: np.ndarray | None = None) -> str:
    """Write the ONNX file; returns the manifest table for it."""
    out = Path(out)
    summary = None
    if run_dir is not None:
        backbone = load_run_backbone(run_dir)
        summary_path = Path(run_dir) / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    else:
        backbone = build_backbone(backbone_id).eval()
    data = onnx_bytes(backbone)
    if check_crops is None:
        check_crops = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3)).astype(np.float32)
    error = check_onnx(data, backbone, check_crops)
    if error > 1e-4:
        raise RuntimeError(f"ONNX and torch embeddings differ by {error:.2e}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return manifest_table(model_id or out.stem, out, hashlib.sha256(data).hexdigest(),
                          backbone.embedding_dim, summary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.training.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run folder (model.pt, summary.json)")
    source.add_argument("--backbone", help="export a registry backbone as built (pretrained weights if any)")
    parser.add_argument("--out", required=True, help="path of the .onnx file")
    parser.add_argument("--id", default=None, help="manifest id (default: the file's stem)")
    args = parser.parse_args(argv)
    print(export_run(args.run, args.out, model_id=args.id, backbone_id=args.backbone))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
