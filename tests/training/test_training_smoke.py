"""CPU smoke run on package-shipped faces: loss falls, resume continues identically."""
import json

import pytest
import torch

from ml.training.train import TrainConfig, Trainer


def _config(tmp_path, name, **overrides):
    base = dict(data="unused", out=str(tmp_path / name), backbone="iresnet_tiny", loss="arcface",
                epochs=3, batch_size=8, lr=0.01, scale=16.0, seed=3, progress=False, device="cpu")
    base.update(overrides)
    return TrainConfig(**base)


def test_loss_falls_and_outputs_are_written(tiny_faces, tmp_path):
    cfg = _config(tmp_path, "run", epochs=4)
    result = Trainer(cfg, tiny_faces).fit()
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4]
    assert {"loss", "held_out_pair_accuracy", "held_out_knn_accuracy", "images_per_s"} <= set(log[0])
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # The summary reports the final weights: the same held-out accuracy as the last epoch's log line.
    assert summary["metrics"]["pair_accuracy"] == pytest.approx(log[-1]["held_out_pair_accuracy"])


def test_resume_takes_the_same_next_step(tiny_faces, tmp_path):
    straight = Trainer(_config(tmp_path, "straight"), tiny_faces)
    straight.train_epoch()
    straight.train_epoch()

    interrupted = Trainer(_config(tmp_path, "resumed"), tiny_faces)
    interrupted.train_epoch()  # writes checkpoint.pt after epoch 1
    del interrupted
    resumed = Trainer(_config(tmp_path, "resumed", resume=True), tiny_faces)
    assert resumed.epoch == 1
    resumed.train_epoch()

    assert resumed.history[1]["loss"] == straight.history[1]["loss"]
    for a, b in zip(straight.backbone.state_dict().values(), resumed.backbone.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(straight.head.weight, resumed.head.weight)


def test_two_phase_keeps_backbone_fixed_during_head_epochs(tiny_faces, tmp_path):
    trainer = Trainer(_config(tmp_path, "phased", freeze="L4+fc", two_phase=1, epochs=2), tiny_faces)
    before = {k: v.clone() for k, v in trainer.backbone.state_dict().items()}
    trainer.train_epoch()
    after = {k: v.clone() for k, v in trainer.backbone.state_dict().items()}
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        assert changed == key.startswith("fc."), key  # only the new head moves in phase 1
    trainer.train_epoch()
    after2 = trainer.backbone.state_dict()
    assert not torch.equal(after["L4.0.body.1.weight"], after2["L4.0.body.1.weight"])
    assert torch.equal(after["L3.0.body.1.weight"], after2["L3.0.body.1.weight"])
    assert [h["phase"] for h in trainer.history] == ["head", "backbone"]
