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
from ml.training.data import split_indices
from ml.training.freeze import STUDY_POLICIES
from ml.training.metrics import evaluate
from ml.training.train import (FrozenFeatures, TrainConfig, Trainer, add_common_arguments, embed_all,
                               evaluation_rows, load_training_faces, pick_device)

# A variant "two-phase:<policy>" trains only the head for one epoch first
# (``--two-phase`` epochs if given), then ``<policy>`` for ``--epochs``.
TWO_PHASE_PREFIX = "two-phase:"

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
    rows, probes = evaluation_rows(faces.labels, held_out, cfg.split_by)
    metrics = evaluate(embed_all(backbone, faces.crops[rows], device, cfg.amp), faces.labels[rows], probes,
                       seed=cfg.seed)
    return {"variant": "zero-shot", **metrics, "train_seconds": 0.0,
            "wall_seconds": time.perf_counter() - started}


def variant_config(cfg: TrainConfig, variant: str) -> TrainConfig:
    """The run config of one table row (``<policy>`` or ``two-phase:<policy>``)."""
    policy, two_phase, epochs = variant, 0, cfg.epochs
    if variant.startswith(TWO_PHASE_PREFIX):
        policy = variant[len(TWO_PHASE_PREFIX):]
        two_phase = cfg.two_phase or 1
        epochs = cfg.epochs + two_phase
    # Only the table is the product here: skip ~100 MB of checkpoints per variant.
    folder = variant.replace("+", "_plus_").replace(":", "_")
    return replace(cfg, freeze=policy, two_phase=two_phase, epochs=epochs, out=str(Path(cfg.out) / folder),
                   save_weights=False, resume=False)


def run_study(cfg: TrainConfig, policies=STUDY_POLICIES, faces=None) -> list[dict]:
    faces = faces if faces is not None else load_training_faces(cfg)
    rows = [zero_shot_row(cfg, faces)]
    print(format_row(rows[-1]), flush=True)
    frozen = FrozenFeatures()  # shared: variants with the same first trained stage reuse it
    for variant in policies:
        started = time.perf_counter()
        result = Trainer(variant_config(cfg, variant), faces, frozen_features=frozen).fit()
        rows.append({"variant": variant, **result.metrics, "train_seconds": result.train_seconds,
                     "wall_seconds": time.perf_counter() - started})
        print(format_row(rows[-1]), flush=True)
    return rows


def ranked(rows: list[dict]) -> list[dict]:
    """Best first: by AP, then 1-NN accuracy (macro F1 and pair accuracy break ties)."""
    def key(row):
        return tuple(-(row[k] if not np.isnan(row[k]) else -1.0)
                     for k in ("average_precision", "knn_accuracy", "macro_f1", "pair_accuracy"))
    return sorted(rows, key=key)


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
    gallery = ("the other held-out photos" if cfg.split_by == "identities" else "all other photos")
    lines = [
        f"# Freeze-policy study: {cfg.backbone}, {cfg.loss}, {cfg.epochs} epochs"
        + (" on cached frozen-stage features (flip-only augmentation)" if cfg.frozen_cache else ""),
        "",
        f"Data: {held_out_info}. Split by {cfg.split_by}, seed {cfg.seed}, held-out fraction {cfg.held_out}.",
        f"Pair metrics on balanced held-out pairs (10-fold CV thresholds); 1-NN over {gallery}.",
        "Ranked by AP, then 1-NN accuracy.",
        "",
        "| rank | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * (len(COLUMNS) + 1),
        *[f"| {i} " + format_row(r) for i, r in enumerate(ranked(rows), start=1)],
        "",
    ]
    (out / "study.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--policies", default=",".join(STUDY_POLICIES),
                        help="comma-separated freeze policies; 'two-phase:<policy>' trains the head first")
    args = vars(parser.parse_args(argv))
    policies = tuple(p for p in args.pop("policies").split(",") if p)
    cfg = TrainConfig(**args)
    faces = load_training_faces(cfg)
    rows = run_study(cfg, policies, faces)
    train_idx, held_out = split_indices(faces.labels, held_out=cfg.held_out, seed=cfg.seed, by=cfg.split_by)
    parts = ([f"identities with >= {cfg.min_photos} photos"] if cfg.min_photos > 1 else []) + (
        [f"at most {cfg.max_photos} photos each"] if cfg.max_photos else []) + (
        [f"{cfg.max_identities} of them drawn with seed {cfg.seed}"] if cfg.max_identities else [])
    selection = f" ({', '.join(parts)})" if parts else ""
    info = (f"{len(faces.labels)} aligned photos of {len(np.unique(faces.labels))} identities"
            f"{selection}, {len(train_idx)} photos of "
            f"{len(np.unique(faces.labels[train_idx]))} people to train on "
            f"({len(faces.skipped)} without a face), {len(held_out)} held out; "
            f"{rows[0]['pairs_pos']} positive + {rows[0]['pairs_neg']} negative pairs")
    write_tables(rows, cfg, info, Path(cfg.out))
    print((Path(cfg.out) / "study.md").read_text())
    return 0
