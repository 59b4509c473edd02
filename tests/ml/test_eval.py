"""ml.eval: pairs parsing, folds, metrics, and the CLI end to end on package images."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ml.eval.__main__ import main
from ml.eval.lfw_pairs import fold_ids, read_pairs
from ml.eval.metrics import best_threshold, kfold_accuracy, tar_at_far


def test_pairs_header_counts_are_ignored():
    text = "1\t999\nalice\t1\t2\nalice\t1\tbob\t3\n\nbob 2 4\n"
    pairs, header = read_pairs(text)
    assert header == ["1", "999"]
    assert [p.same for p in pairs] == [True, False, True]
    assert pairs[1].name2 == "bob" and pairs[1].index2 == 3


def test_official_lfw_blocks_become_folds():
    lines = ["10\t2"]
    for fold in range(10):
        lines += [f"p{fold}\t1\t2", f"q{fold}\t1\t2", f"p{fold}\t1\tq{fold}\t1", f"q{fold}\t2\tp{fold}\t2"]
    pairs, header = read_pairs("\n".join(lines))
    folds, method = fold_ids(pairs, header)
    assert method.startswith("official")
    assert folds.tolist() == [k for k in range(10) for _ in range(4)]


def test_other_files_get_stratified_folds():
    lines = ["1\t30"] + [f"a\t{i}\t{i + 1}" for i in range(10)] + [f"a\t{i}\tb\t{i}" for i in range(20)]
    pairs, header = read_pairs("\n".join(lines))
    folds, method = fold_ids(pairs, header)
    assert method.startswith("stratified") and sorted(set(folds)) == list(range(10))
    labels = np.array([p.same for p in pairs])
    for k in range(10):  # every fold holds one same and two different pairs
        assert labels[folds == k].sum() == 1 and (folds == k).sum() == 3


def test_metrics_on_known_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.55, 0.3, 0.2, 0.1, 0.05])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    assert 0.3 < best_threshold(scores, labels) < 0.55
    report = kfold_accuracy(scores, labels, np.arange(8) % 2)
    assert report["accuracy"] == 1.0
    tar = tar_at_far(scores, labels)
    assert tar["0.01"]["tar"] == 1.0 and tar["0.01"]["measurable"] is False
    overlapping = np.array([0.9, 0.2, 0.7, 0.1, 0.8, 0.3, 0.6, 0.05])
    assert kfold_accuracy(overlapping, labels, np.arange(8) % 2)["accuracy"] < 1.0


def test_verify_cli_prints_json_last(lfw_tree, capsys, tmp_path):
    main(["verify", "--pairs", str(lfw_tree / "pairs.txt"), "--root", str(lfw_tree),
          "--plot", str(tmp_path / "roc.png"), "--json", str(tmp_path / "r.json")])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("accuracy", "accuracy_std", "threshold", "auc", "tar_at_far", "no_face"):
        assert key in report
    assert report["accuracy"] == 1.0 and report["auc"] == 1.0 and report["no_face"] == 0
    assert report["pairs"] == 12 and report["confusion"]["fp"] == 0
    assert (tmp_path / "roc.png").stat().st_size > 1000
    assert json.loads((tmp_path / "r.json").read_text())["accuracy"] == 1.0


def test_identify_and_embed_cli(lfw_tree, capsys, tmp_path):
    main(["identify", "--root", str(lfw_tree)])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["top1_accuracy"] == 1.0 and report["identities"] == 6 and report["macro_f1"] == 1.0
    out = tmp_path / "emb.json"
    main(["embed", "--root", str(lfw_tree), "--out", str(out), "--plot", str(tmp_path / "p.png")])
    items = json.loads(out.read_text())["items"]
    assert len(items) == 12 and len(items[0]["embedding"]) == 128
    assert (tmp_path / "p.png").exists()


def test_detect_cli_on_wider_format(tmp_path, capsys, group_photo, pipeline):
    cv2.imwrite(str(tmp_path / "group.jpg"), group_photo)
    cv2.imwrite(str(tmp_path / "empty.jpg"), np.full((200, 300, 3), 128, np.uint8))
    faces = pipeline.detect(group_photo)
    # Ground truth: the six detected faces (rounded) plus one invented face nobody can find.
    rows = [" ".join(str(round(v)) for v in f.box) + " 0 0 0 0 0 0" for f in faces]
    rows.append("10 10 40 40 0 0 0 0 0 0")
    gt = ["group.jpg", str(len(rows)), *rows, "empty.jpg", "0", "0 0 0 0 0 0 0 0 0 0"]
    (tmp_path / "gt.txt").write_text("\n".join(gt) + "\n")
    main(["detect", "--gt", str(tmp_path / "gt.txt"), "--root", str(tmp_path)])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ground_truth_faces"] == 7
    assert report["recall"] == pytest.approx(6 / 7) and report["precision"] == 1.0
    assert report["ap_iou50"] == pytest.approx(6 / 7, abs=0.01)


def test_openset_cli_with_masked_probes(tmp_path, capsys, pipeline, group_photo):
    """Three people enrolled (3 photos each), three strangers; every probe photo wears a synthetic mask."""
    for n, face in enumerate(pipeline.detect(group_photo)):
        x, y, w, h = (int(v) for v in face.box)
        crop = group_photo[max(0, y - h // 2): y + 3 * h // 2, max(0, x - w // 2): x + 3 * w // 2]
        folder = tmp_path / f"person_{n}"
        folder.mkdir()
        views = [crop, cv2.resize(crop[:, ::-1], None, fx=1.3, fy=1.3), cv2.convertScaleAbs(crop, alpha=1.1, beta=10)]
        for k, view in enumerate(views[: 3 if n < 3 else 1]):
            cv2.imwrite(str(folder / f"person_{n}_{k + 1:04d}.png"), view)
    main(["openset", "--root", str(tmp_path), "--masked-probes", "--gallery-sizes", "", "--no-cache"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["enrolled"] == 3 and report["probes_enrolled"] == 6 and report["probes_never_enrolled"] == 3
    assert report["masked_probes"]["probes"] == 9 and report["masked_probes"]["fabric"] == "green"
    assert report["masked_probes"]["face_found_again"] >= 7
    assert report["flagged_masked"] >= 0.75  # the mask classifier sees the drawn masks
    assert report["masked_threshold"] > report["threshold"]  # twice the templates for masked probes
    # Small, low-resolution faces: a masked stranger may be named in a 3-person gallery, but the
    # masked probes of enrolled people are found and never named as someone else.
    assert report["identification_rate"] >= 0.8 and report["misidentified"] == 0.0
