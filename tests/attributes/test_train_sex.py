"""One-epoch smoke run of ``python -m ml.attributes.train_sex`` on package faces."""
import csv
import json

import numpy as np

from ml.attributes.sex_classifier import CnnSexClassifier, EmbeddingSexClassifier, load_npz
from ml.attributes.train_sex import main as train_main


def test_one_epoch_writes_split_report_curves_and_weights(labelled_photo_dir, tmp_path):
    root, labels = labelled_photo_dir
    out, ship = tmp_path / "run", tmp_path / "ship"
    assert train_main(["--root", str(root), "--labels", str(labels), "--out", str(out), "--ship", str(ship),
                       "--cnn-epochs", "1", "--head-epochs", "1", "--cache-dir", str(tmp_path / "cache"),
                       "--split-seeds", "2"]) == 0

    people = {}
    for part in ("train", "validation", "test"):
        with open(out / f"{part}.csv") as fh:
            people[part] = {row["path"].split("/")[0] for row in csv.DictReader(fh)}
        assert people[part]
    # Identity-disjoint: nobody in two parts; everybody somewhere.
    assert not (people["train"] & people["test"]) and not (people["train"] & people["validation"])
    assert len(set().union(*people.values())) == 8

    report = json.loads((out / "report.json").read_text())
    models = {(r["model"], r["balancing"]) for r in report["rows"]}
    assert ("dlib-gender-v1 (packaged)", "n/a") in models
    assert {b for m, b in models if m.startswith("CNN")} == {"none", "class-weighted"}
    assert {b for m, b in models if m.startswith("fusion")} == {"none", "class-weighted"}
    for row in report["rows"]:
        assert row["test"]["n"] == sum(r["sex"] in "MF" for r in csv.DictReader(open(out / "test.csv")))
    for history in report["loss_curves"].values():
        assert len(history) == 1 and np.isfinite(history[0]["train_loss"]) and np.isfinite(history[0]["val_loss"])
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    # Other people splits: the packaged model and both fusion heads, one test score per seed.
    robustness = report["split_robustness"]
    assert len(robustness) == 3 and all(len(r["test_balanced_accuracy"]) == 2 for r in robustness.values())
    assert all(0.0 <= v <= 1.0 for r in robustness.values() for v in r["test_balanced_accuracy"])
    assert "| dlib-gender-v1 (packaged) |" in (out / "comparison.md").read_text()

    shipped = json.loads((ship / "training_report.json").read_text())
    assert set(shipped["files"]) == {"sex_fusion_views.npz", "sex_fusion.npz", "sex_head.npz", "sex_cnn.npz"}
    fusions = {name: load_npz((ship / name).read_bytes()) for name in ("sex_fusion.npz", "sex_fusion_views.npz")}
    assert fusions["sex_fusion.npz"]["w_base"].size == 1 and fusions["sex_fusion_views.npz"]["w_base"].size == 6
    assert {len([1 for m, _ in models if m.startswith(prefix)]) for prefix in
            ("fusion head (packaged logit", "fusion head (6 packaged view logits")} == {2}
    cnn = CnnSexClassifier("smoke", load_npz((ship / "sex_cnn.npz").read_bytes()))
    p = cnn.male_probability_crops([np.zeros((112, 112, 3), np.uint8)])
    assert p.shape == (1,) and 0.0 <= p[0] <= 1.0
    head = EmbeddingSexClassifier("smoke", load_npz((ship / "sex_head.npz").read_bytes()), "sface-2021dec-int8")
    assert head.logits(np.ones((2, 128), np.float32) / np.sqrt(128)).shape == (2,)
