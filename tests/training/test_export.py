"""ONNX export of a tiny trained run, registered in an overlay manifest and used by id.

One 1-epoch training run and one export serve every test here.
"""
import json
import shutil

import cv2
import numpy as np
import pytest

import weights
from ml.errors import ModelFileError
from ml.package_images import read_package_image as _package_image
from ml.recognizers import load_recognizer
from ml.recognizers.onnx import OnnxRecognizer
from ml.training.export import export_run
from ml.training.train import TrainConfig, Trainer, embed_all

MODEL_ID = "tiny-test"


@pytest.fixture(scope="module")
def exported(tiny_faces, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    trainer = Trainer(TrainConfig(data="unused", out=str(root / "run"), backbone="iresnet_tiny", epochs=1,
                                  batch_size=8, progress=False, device="cpu", freeze="L34+fc"), tiny_faces)
    trainer.fit()
    out = root / "models" / "tiny.onnx"
    overlay = root / "user" / "overlay.toml"
    table = export_run(root / "run", out, model_id=MODEL_ID, faces=tiny_faces, register_in=overlay)
    return {"trainer": trainer, "out": out, "overlay": overlay, "table": table}


@pytest.fixture
def overlay_env(exported, monkeypatch):
    monkeypatch.setenv(weights.OVERLAY_ENV, str(exported["overlay"]))
    return exported["overlay"]


def test_onnx_file_reproduces_the_torch_embeddings(exported, tiny_faces):
    class Entry:
        id, embedding_dim = MODEL_ID, 64

    crops = list(tiny_faces.crops[:5])
    onnx_emb = OnnxRecognizer(Entry(), exported["out"].read_bytes()).embed(crops)
    torch_emb = embed_all(exported["trainer"].backbone, np.stack(crops), exported["trainer"].device)
    assert np.abs(onnx_emb - torch_emb).max() < 1e-4
    assert np.allclose(np.linalg.norm(onnx_emb, axis=1), 1.0, atol=1e-5)


def test_registered_entry_is_sha_checked_and_calibrated(exported, overlay_env):
    entry = weights.model_entry(MODEL_ID)
    assert entry.implementation == "onnx" and entry.package is None
    assert entry.path == str(exported["out"].resolve())  # written relative to the overlay file
    assert 'path = "../models/tiny.onnx"' in exported["table"]
    assert len(weights.model_bytes(MODEL_ID)) == exported["out"].stat().st_size
    t = entry.thresholds
    assert set(t) == {"far_1e-3", "far_1e-2", "best_accuracy"}
    assert -1 <= t["far_1e-2"] <= t["far_1e-3"] <= 1
    assert entry.default_threshold == t["far_1e-3"] and entry.embedding_dim == 64
    assert "held-out photos" in entry.options["calibrated_on"]
    assert entry.options["input_size"] == [112, 112]
    # Committed models still come from their packages, and the defaults stand.
    assert weights.default_model_id("recognizer") == "sface-2021dec-int8"
    assert weights.model_entry("sface-2021dec-int8").path is None


def test_pipeline_by_id_embeds_real_faces(overlay_env, monkeypatch):
    from ml.pipeline import FacePipeline

    pipeline = FacePipeline.from_manifest(recognizer=MODEL_ID)
    faces = pipeline.process(_package_image("t1.jpg"))
    assert len(faces) >= 5 and pipeline.embedding_dim == 64
    emb = np.stack([f.embedding for f in faces])
    assert emb.shape[1] == 64 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert pipeline.threshold == weights.model_entry(MODEL_ID).default_threshold
    monkeypatch.delenv(weights.OVERLAY_ENV)
    with pytest.raises(ModelFileError, match="not in"):
        weights.model_entry(MODEL_ID)


def test_reregistering_replaces_the_entry(exported, tiny_faces, tmp_path, monkeypatch):
    overlay = tmp_path / "overlay.toml"
    shutil.copy(exported["overlay"], overlay)
    overlay.write_text(overlay.read_text() + '\n[models.other]\nkind = "recognizer"\npath = "x.onnx"\n'
                       'sha256 = "00"\n')
    export_run(exported["trainer"].out, tmp_path / "again.onnx", model_id=MODEL_ID, faces=tiny_faces,
               register_in=overlay)
    text = overlay.read_text()
    assert text.count(f"[models.{MODEL_ID}]") == 1 and "[models.other]" in text
    monkeypatch.setenv(weights.OVERLAY_ENV, str(overlay))
    assert weights.model_entry(MODEL_ID).path == str((tmp_path / "again.onnx").resolve())


def test_tampered_weight_file_is_refused(exported, tmp_path, monkeypatch):
    overlay = tmp_path / "overlay.toml"
    overlay.write_text(exported["overlay"].read_text().replace("../models/tiny.onnx", "tiny.onnx"))
    data = bytearray(exported["out"].read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "tiny.onnx").write_bytes(bytes(data))
    monkeypatch.setenv(weights.OVERLAY_ENV, str(overlay))
    with pytest.raises(ModelFileError, match="sha256 mismatch"):
        load_recognizer(MODEL_ID)


def test_eval_verify_runs_with_the_overlay_model(overlay_env, tiny_faces_dir, tmp_path, capsys):
    from ml.eval.__main__ import main

    # An LFW-layout copy of three package-face identities and their pairs.
    people = sorted(p.name for p in tiny_faces_dir.iterdir())[:3]
    for name in people:
        (tmp_path / name).mkdir()
        for k, photo in enumerate(sorted((tiny_faces_dir / name).iterdir())[:3], start=1):
            cv2.imwrite(str(tmp_path / name / f"{name}_{k:04d}.jpg"), cv2.imread(str(photo)))
    same = [f"{name}\t1\t{k}" for name in people for k in (2, 3)]
    different = [f"{a}\t1\t{b}\t2" for a, b in zip(people, people[1:] + people[:1])]
    (tmp_path / "pairs.txt").write_text("\n".join(["1\t6", *same, *different]) + "\n")

    main(["verify", "--pairs", str(tmp_path / "pairs.txt"), "--root", str(tmp_path), "--model", MODEL_ID])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["recognizer"] == MODEL_ID and report["pairs"] == 9 and report["images"] == 9
    # Pairs of identities it trained on: the exported model separates them better than chance.
    assert report["auc"] > 0.5, report
