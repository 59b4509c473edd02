"""ONNX export: the exported recognizer reproduces the torch embeddings."""
import hashlib

import numpy as np
import pytest

pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (onnx==1.23.2)")

from ml.training.export import export_run  # noqa: E402
from ml.recognizers.onnx import OnnxRecognizer  # noqa: E402
from ml.training.train import TrainConfig, Trainer, embed_all  # noqa: E402


def test_trained_run_exports_to_an_onnx_recognizer(tiny_faces, tmp_path):
    run = tmp_path / "run"
    trainer = Trainer(TrainConfig(data="unused", out=str(run), backbone="iresnet_tiny", epochs=1,
                                  batch_size=8, progress=False, device="cpu", freeze="L34+fc"), tiny_faces)
    trainer.fit()
    out = tmp_path / "weights" / "trained" / "tiny.onnx"
    table = export_run(run, out, model_id="tiny-test")
    data = out.read_bytes()
    assert f'sha256 = "{hashlib.sha256(data).hexdigest()}"' in table
    assert 'resource = "trained/tiny.onnx"' in table and "default_threshold = " in table

    class Entry:
        embedding_dim = 64

    crops = list(tiny_faces.crops[:5])
    onnx_emb = OnnxRecognizer(Entry(), data).embed(crops)
    torch_emb = embed_all(trainer.backbone, np.stack(crops), trainer.device)
    assert np.abs(onnx_emb - torch_emb).max() < 1e-4
    assert np.allclose(np.linalg.norm(onnx_emb, axis=1), 1.0, atol=1e-5)
