"""Freeze-policy study: fine-tune one backbone under every policy on the same split.

    python -m ml.study --data DIR --backbone facenet --epochs 5 --out runs/study

Rows: the zero-shot backbone (no fine-tuning) and each policy in
``STUDY_POLICIES`` (none, L4, L3, L34, L234 and their +fc variants). Columns:
held-out pair accuracy, positive/negative pair precision, average precision,
1-NN accuracy, macro precision/recall/F1, training time. Writes
``study.md`` and ``study.csv`` into ``--out`` (one sub-folder per run).
"""
from __future__ import annotations

import argparse
import csv
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ml.training.backbones import build_backbone
from ml.training.data import load_aligned_faces, split_indices
from ml.training.freeze import STUDY_POLICIES
from ml.training.metrics import evaluate
from ml.training.train import TrainConfig, Trainer, add_common_arguments, embed_all, pick_device

COLUMNS = [
    ("variant", "variant"), ("pair_accuracy", "pair acc"), ("pos_pair_precision", "pos-pair prec"),
    ("neg_pair_precision", "neg-pair prec"), ("average_precision", "AP"), ("knn_accuracy", "1-NN acc"),
    ("macro_precision", "macro P"), ("macro_recall", "macro R"), ("macro_f1", "macro F1"),
    ("train_seconds", "train s"), ("wall_seconds", "wall s"),
]


def zero_shot_row(cfg: TrainConfig, faces) -> dict:
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained).to(device)
    _, held_out = split_indices(faces.labels, held_out=cfg.held_out, seed=cfg.seed, by=cfg.split_by)
    metrics = evaluate(embed_all(backbone, faces.crops, device, cfg.amp), faces.labels, held_out, seed=cfg.seed)
    return {"variant": "zero-shot", **metrics, "train_seconds": 0.0,
            "wall_seconds": time.perf_counter() - started}


def run_study(cfg: TrainConfig, policies=STUDY_POLICIES) -> list[dict]:
    faces = load_aligned_faces(cfg.data, cache_dir=cfg.cache_dir, progress=cfg.progress)
    rows = [zero_shot_row(cfg, faces)]
    for policy in policies:
        started = time.perf_counter()
        # Only the table is the product here: skip ~100 MB of checkpoints per variant.
        run_cfg = replace(cfg, freeze=policy, out=str(Path(cfg.out) / policy.replace("+", "_plus_")),
                          save_weights=False, resume=False)
        result = Trainer(run_cfg, faces).fit()
        rows.append({"variant": policy, **result.metrics, "train_seconds": result.train_seconds,
                     "wall_seconds": time.perf_counter() - started})
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict) -> str:
    cells = []
    for key, _ in COLUMNS:
        value = row[key]
        if isinstance(value, float):
            cells.append("n/a" if np.isnan(value) else (f"{value:.1f}" if key.endswith("seconds") else f"{value:.3f}"))
        else:
            cells.append(str(value))
    return "| " + " | ".join(cells) + " |"


def write_tables(rows: list[dict], cfg: TrainConfig, held_out_info: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "study.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k, _ in COLUMNS] + ["pairs_pos", "pairs_neg", "threshold"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Freeze-policy study: {cfg.backbone}, {cfg.loss}, {cfg.epochs} epochs"
        + (f" ({cfg.two_phase} head-only)" if cfg.two_phase else ""),
        "",
        f"Data: {held_out_info}. Split by {cfg.split_by}, seed {cfg.seed}, held-out fraction {cfg.held_out}.",
        "Pair metrics on balanced held-out pairs (10-fold CV thresholds); 1-NN over all other photos.",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *[format_row(r) for r in rows],
        "",
    ]
    (out / "study.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--policies", default=",".join(STUDY_POLICIES),
                        help="comma-separated subset of the freeze policies")
    args = vars(parser.parse_args(argv))
    policies = tuple(p for p in args.pop("policies").split(",") if p)
    cfg = TrainConfig(**args)
    rows = run_study(cfg, policies)
    faces = load_aligned_faces(cfg.data, cache_dir=cfg.cache_dir, progress=False)
    _, held_out = split_indices(faces.labels, held_out=cfg.held_out, seed=cfg.seed, by=cfg.split_by)
    info = (f"{len(faces.labels)} aligned photos of {len(faces.identities)} identities "
            f"({len(faces.skipped)} without a face), {len(held_out)} held out; "
            f"{rows[0]['pairs_pos']} positive + {rows[0]['pairs_neg']} negative pairs")
    write_tables(rows, cfg, info, Path(cfg.out))
    print((Path(cfg.out) / "study.md").read_text())
    return 0
