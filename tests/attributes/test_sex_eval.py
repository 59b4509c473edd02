"""``python -m ml.eval attributes`` on photos of package faces, labels made in the test."""
import json

import numpy as np
import pytest

from ml.attributes.sex_classifier import load_sex_classifier, sex_model_ids
from ml.eval.__main__ import main as eval_main


def _run(capsys, *argv):
    assert eval_main(["attributes", *argv]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_every_manifest_sex_classifier_is_evaluated(labelled_photo_dir, tmp_path, capsys):
    root, labels = labelled_photo_dir
    ids = sex_model_ids()
    assert "dlib-gender-v1" in ids and len(ids) >= 2
    for model_id in ids:
        report = _run(capsys, "--root", str(root), "--labels", str(labels), "--sex-model", model_id,
                      "--cache-dir", str(tmp_path / "cache"))
        assert report["sex_model"] == model_id and report["n"] == 24 and report["people"] == 8
        matrix = np.array(report["confusion_matrix"])
        assert matrix.sum() == 24 and matrix.sum(axis=1).tolist() == [12, 12]
        recalls = [report["per_class"][c]["recall"] for c in ("female", "male")]
        assert recalls == pytest.approx(np.diag(matrix) / 12)
        assert report["balanced_accuracy"] == pytest.approx(np.mean(recalls))
        assert report["accuracy"] == pytest.approx(np.trace(matrix) / 24)
        assert 0.0 <= report["auc"] <= 1.0


def test_packaged_model_report_and_plots(labelled_photo_dir, tmp_path, capsys):
    root, labels = labelled_photo_dir
    # One photo mislabelled on purpose: it must show up as exactly one more error.
    wrong = tmp_path / "one_wrong.csv"
    rows = labels.read_text().splitlines()
    rows[1] = rows[1].replace(",F", ",M")  # a t1_0 (Jennifer Aniston) photo, now labelled male
    wrong.write_text("\n".join(rows) + "\n")
    plots = tmp_path / "plots"
    right = _run(capsys, "--root", str(root), "--labels", str(labels), "--sex-model", "dlib-gender-v1",
                 "--cache-dir", str(tmp_path / "cache"))
    flipped = _run(capsys, "--root", str(root), "--labels", str(wrong), "--sex-model", "dlib-gender-v1",
                   "--cache-dir", str(tmp_path / "cache"), "--plots", str(plots))
    errors = lambda r: int(np.trace(np.fliplr(np.array(r["confusion_matrix"]))))  # noqa: E731
    assert errors(flipped) == errors(right) + 1
    for name in ("roc.png", "confusion.png", "misclassified.png", "activation_maps.png"):
        data = (plots / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


def test_labels_csv_errors_are_clear(labelled_photo_dir, tmp_path):
    from ml.attributes.labelled_faces import read_labels

    root, _ = labelled_photo_dir
    bad = tmp_path / "bad.csv"
    bad.write_text("path,sex\nt1_0/t1_0_0001.png,X\n")
    with pytest.raises(ValueError, match="bad.csv:2: sex must be M/F"):
        read_labels(bad)
    bad.write_text("file,label\na.jpg,M\n")
    with pytest.raises(ValueError, match="'path' and 'sex'"):
        read_labels(bad)


def test_cnn_activation_map_explains_its_logit(faces):
    """CAM summed over cells, with the bias, is the male-minus-female logit (GAP + linear)."""
    from ml.attributes import mask_net

    model = load_sex_classifier("sex-cnn-v1")
    crop = faces["tom_hanks"]
    cam = model.class_activation_map(crop)
    logits = mask_net.logits(model.params, mask_net.preprocess([crop]))[0]
    bias = model.params["fc_b"][1] - model.params["fc_b"][0]
    assert cam.shape == (8, 8)
    assert cam.mean() + bias == pytest.approx(logits[1] - logits[0], rel=1e-4, abs=1e-4)


def test_per_view_fusion_weighs_each_view_logit(faces, pipeline):
    """sex-fusion-v2 reads the packaged network's 6 views one by one: its answer is the
    logistic layer applied to their logits and the embedding, and it refuses another view count."""
    from ml.attributes.sex_classifier import logit, sigmoid
    from ml.package_images import astronaut_bgr

    fusion = load_sex_classifier("sex-fusion-v2")
    assert fusion.per_view and fusion.params["w_base"].size == 6
    img = astronaut_bgr()
    found = pipeline.process(img)[:1]
    views = fusion.base.view_probabilities(img, found)
    assert views.shape == (1, 6) and len(set(np.round(views[0], 6))) > 1  # the views differ
    assert fusion.base.male_probability(img, found) == pytest.approx(views.mean(1))
    p = fusion.params
    expected = sigmoid(logit(views) @ p["w_base"] + found[0].embedding @ p["w"] + p["b"])
    assert fusion.male_probability(img, found) == pytest.approx(expected, rel=1e-5)
    assert fusion.male_probability(img, found)[0] < 0.5  # Eileen Collins
    with pytest.raises(ValueError, match="6 view weights, 3 views"):
        fusion.combine(views[:, :3], np.stack([f.embedding for f in found]))
