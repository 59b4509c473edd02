"""Margin-loss training and fine-tuning of a face recognizer on a folder-per-identity set.

    python -m ml.train --data DIR --backbone facenet --loss arcface --partial-fc 1.0 \
        --freeze L34+fc --epochs 10 --out runs/x [--two-phase 2] [--resume]

Writes into ``--out``: ``checkpoint.pt`` (every epoch; ``--resume`` continues
from it with the saved RNG states, so the next step is the one an unbroken
run would have taken), ``log.jsonl`` (one line per epoch: loss, held-out pair
and 1-NN accuracy, throughput), ``curves.png``, ``model.pt`` (the trained
backbone) and ``summary.json`` (held-out metrics and the calibrated threshold).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ml.training.augment import augment
from ml.training.backbones import PRETRAINED, build_backbone
from ml.training.backbones.stages import STAGE_NAMES
from ml.training.data import AlignedFaces, load_aligned_faces, select_identities, split_indices
from ml.training.freeze import parse_freeze_policy, set_modes, set_trainable
from ml.training.losses import LOSS_PRESETS, margin_config
from ml.training.metrics import evaluate
from ml.training.partial_fc import PartialFC

CPU_BATCH_SIZE = 32
GPU_MAX_BATCH_SIZE = 512
EVAL_BATCH_SIZE = 64


@dataclass
class TrainConfig:
    data: str
    out: str
    backbone: str = "facenet"
    loss: str = "arcface"
    partial_fc: float = 1.0
    freeze: str = "none"
    epochs: int = 10
    two_phase: int = 0            # epochs that train only the head before the policy applies
    batch_size: int = 0           # 0: largest that fits on GPU, 32 on CPU (capped by the train set)
    lr: float | None = None       # None: 0.001 to fine-tune a pretrained backbone, 0.01 from scratch
    head_lr_mult: float = 10.0    # class centres (and a new fc) learn this much faster
    weight_decay: float = 5e-4
    scale: float | None = None
    margins: tuple[float, float, float] | None = None
    held_out: float = 0.4
    split_by: str = "photos"
    seed: int = 0
    cache_dir: str | None = None
    device: str = "auto"
    amp: bool = True
    resume: bool = False
    progress: bool = True
    pretrained: bool = True
    save_weights: bool = True     # checkpoint.pt every epoch and model.pt at the end
    min_photos: int = 1           # keep only identities with at least this many photos
    max_photos: int = 0           # use at most this many photos per identity (first by name); 0: all
    max_identities: int = 0       # use this many identities, drawn with ``seed``; 0: all
    eval_every_epoch: bool = True  # False: held-out metrics only after the last epoch (saves time)
    # Run the stages the policy never trains once per photo (and its mirror
    # image) and keep their output: each epoch then runs only the trained
    # stages. Augmentation is reduced to the flip; results equal an uncached
    # run with flip-only augmentation up to float16 storage of the features.
    frozen_cache: bool = False


@dataclass
class TrainResult:
    metrics: dict
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def crops_to_tensor(crops: np.ndarray, device: torch.device) -> torch.Tensor:
    """(n, 112, 112, 3) uint8 BGR -> (n, 3, 112, 112) float on ``device``.

    ``contiguous()`` matters: the permuted tensor is channels-last, and on torch
    2.13 CPU the IResNet backward on channels-last input corrupts the heap.
    """
    return torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().contiguous()


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Eval mode inside; afterwards every submodule gets back its own mode (a plain
    ``train(True)`` would put frozen stages in train mode and let their BatchNorm drift)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def embed_all(backbone, crops: np.ndarray, device: torch.device, amp: bool = False) -> np.ndarray:
    """L2-normalised embeddings of crops, in eval mode, no augmentation."""
    out = []
    with eval_mode(backbone):
        for start in range(0, len(crops), EVAL_BATCH_SIZE):
            with _autocast(device, amp):
                emb = backbone(crops_to_tensor(crops[start:start + EVAL_BATCH_SIZE], device))
            out.append(F.normalize(emb.float()).cpu().numpy())
    return np.concatenate(out)


def _autocast(device: torch.device, amp: bool):
    # bfloat16 needs no loss scaling; CPU runs stay in float32 (exact resume checks).
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def auto_batch_size(backbone, head, device: torch.device, limit: int, amp: bool) -> int:
    """Largest power of two <= limit whose forward+backward fits on the GPU."""
    if device.type != "cuda":
        return min(CPU_BATCH_SIZE, limit)
    size = 1 << int(math.log2(max(1, min(GPU_MAX_BATCH_SIZE, limit))))
    while size > 1:
        try:
            x = torch.rand(size, 3, 112, 112, device=device) * 255
            with _autocast(device, amp):
                loss = head(backbone(x), torch.zeros(size, dtype=torch.long, device=device))
            loss.backward()
            backbone.zero_grad(set_to_none=True)
            head.zero_grad(set_to_none=True)
            return size
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            size //= 2
    return 1


def imprint_centres(head: PartialFC, backbone, crops: np.ndarray, labels: np.ndarray, device) -> None:
    """Start each class centre at its mean pretrained embedding (weight imprinting):
    with a few photos per person, random centres would first drag the features around."""
    _imprint(head, embed_all(backbone, crops, device), labels)


def _imprint(head: PartialFC, emb: np.ndarray, labels: np.ndarray) -> None:
    with torch.no_grad():
        for cls in range(head.num_classes):
            centre = emb[labels == cls].mean(axis=0)
            head.weight[cls] = torch.from_numpy(centre / max(np.linalg.norm(centre), 1e-12))


def load_training_faces(cfg: TrainConfig) -> AlignedFaces:
    faces = load_aligned_faces(cfg.data, cache_dir=cfg.cache_dir, progress=cfg.progress)
    return select_identities(faces, min_photos=cfg.min_photos, max_photos=cfg.max_photos,
                             max_identities=cfg.max_identities, seed=cfg.seed)


def evaluation_rows(labels: np.ndarray, test_idx: np.ndarray, split_by: str) -> tuple[np.ndarray, np.ndarray]:
    """(photos to embed, positions of the held-out ones among them).

    Split by photos, held-out photos are matched against every photo; split by
    identities, the held-out people are matched among themselves (the training
    people are not who you will search for, and skipping them halves the cost).
    """
    if split_by == "identities":
        return test_idx, np.arange(len(test_idx))
    return np.arange(len(labels)), test_idx


class FrozenFeatures:
    """float16 outputs of the never-trained stages, per photo, as is and mirrored.

    Shared between trainers (``ml.study``) keyed by backbone and stage: valid
    only while those stages keep their pretrained weights, which every freeze
    policy guarantees for the stages before its first trainable one.
    """

    def __init__(self):
        self._store: dict[tuple, dict[int, np.ndarray]] = {}

    def get(self, key: tuple, backbone, stage: str, crops: np.ndarray, rows: np.ndarray, mirrored: bool,
            device) -> np.ndarray:
        table = self._store.setdefault((*key, stage, mirrored), {})
        missing = [int(r) for r in rows if int(r) not in table]
        if missing:
            with eval_mode(backbone), torch.no_grad():
                for start in range(0, len(missing), EVAL_BATCH_SIZE):
                    chunk = missing[start:start + EVAL_BATCH_SIZE]
                    batch = crops[chunk][:, :, ::-1] if mirrored else crops[chunk]
                    out = backbone.features_before(crops_to_tensor(batch, device), stage).cpu().numpy()
                    table.update({r: f.astype(np.float16) for r, f in zip(chunk, out)})
        return np.stack([table[int(r)] for r in rows])


class Trainer:
    def __init__(self, cfg: TrainConfig, faces: AlignedFaces | None = None,
                 frozen_features: FrozenFeatures | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.faces = faces or load_training_faces(cfg)
        self.train_idx, self.test_idx = split_indices(
            self.faces.labels, held_out=cfg.held_out, seed=cfg.seed, by=cfg.split_by)
        train_labels = self.faces.labels[self.train_idx]
        self.classes = np.unique(train_labels)
        self.train_targets = np.searchsorted(self.classes, train_labels)

        self.policy = parse_freeze_policy(cfg.freeze)
        self.backbone = build_backbone(cfg.backbone, pretrained=cfg.pretrained)
        if self.policy.new_fc:
            self.backbone.replace_fc()
        self.backbone.to(self.device)
        # The first stage any phase trains; everything before it stays pretrained.
        self.first_stage = next(name for name in STAGE_NAMES if name in self.policy.stages)
        self.frozen = (frozen_features or FrozenFeatures()) if cfg.frozen_cache else None
        self._last_metrics: dict | None = None
        margin = margin_config(cfg.loss, scale=cfg.scale, margins=cfg.margins)
        self.head = PartialFC(self.backbone.embedding_dim, len(self.classes), margin, cfg.partial_fc).to(self.device)
        if cfg.pretrained and cfg.backbone in PRETRAINED and not self.policy.new_fc:
            if self.frozen is not None:
                with torch.no_grad():
                    head_emb = self.embed(self.train_idx)
                _imprint(self.head, head_emb, self.train_targets)
            else:
                imprint_centres(self.head, self.backbone, self.faces.crops[self.train_idx],
                                self.train_targets, self.device)
        head_params = list(self.head.parameters()) + (
            list(self.backbone.fc.parameters()) if self.policy.new_fc else [])
        head_ids = {id(p) for p in head_params}
        lr = cfg.lr if cfg.lr is not None else (0.001 if cfg.pretrained and cfg.backbone in PRETRAINED else 0.01)
        self.optimizer = torch.optim.SGD([
            {"params": [p for p in self.backbone.parameters() if id(p) not in head_ids], "lr": lr},
            {"params": head_params, "lr": lr * cfg.head_lr_mult},
        ], lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.batch_size = cfg.batch_size or auto_batch_size(
            self.backbone, self.head, self.device, len(self.train_idx), cfg.amp)
        self.batch_size = max(2, min(self.batch_size, len(self.train_idx)))
        self.epoch = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        if cfg.resume and self.checkpoint_path.exists():
            self._load_checkpoint()

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def _phase(self, epoch: int) -> str:
        return "head" if epoch < self.cfg.two_phase else "backbone"

    def _set_phase(self, phase: str) -> None:
        if phase == "head":
            set_trainable(self.backbone, frozenset(), fc=self.policy.new_fc)
        else:
            set_trainable(self.backbone, self.policy.stages, fc=self.policy.trains_fc)
        set_modes(self.backbone)

    def _set_lr(self, epoch: int) -> None:
        factor = 0.5 * (1 + math.cos(math.pi * epoch / max(1, self.cfg.epochs)))  # cosine decay per epoch
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def _batches(self) -> list[np.ndarray]:
        order = self.rng.permutation(len(self.train_idx))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < 2:  # BatchNorm cannot train on one sample
            batches[-2] = np.concatenate([batches[-2], batches.pop()])
        return batches

    def train_epoch(self) -> dict:
        from tqdm import tqdm

        phase = self._phase(self.epoch)
        self._set_phase(phase)
        self._set_lr(self.epoch)
        self.head.train()
        losses, seen, started = [], 0, time.perf_counter()
        bar = tqdm(self._batches(), desc=f"epoch {self.epoch + 1}/{self.cfg.epochs} ({phase})",
                   disable=not self.cfg.progress, leave=False)
        for batch in bar:
            rows = self.train_idx[batch]
            labels = torch.from_numpy(self.train_targets[batch]).to(self.device)
            if self.frozen is not None:
                mirrored = self.rng.random(len(rows)) < 0.5
                features = self._frozen_features(rows, mirrored)
                with _autocast(self.device, self.cfg.amp):
                    embeddings = self.backbone.forward_from(features, self.first_stage)
            else:
                crops = np.stack([augment(self.faces.crops[r], self.rng) for r in rows])
                with _autocast(self.device, self.cfg.amp):
                    embeddings = self.backbone(crops_to_tensor(crops, self.device))
            loss = self.head(embeddings.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            seen += len(rows)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        last = self.epoch + 1 == self.cfg.epochs
        metrics = self.evaluate() if self.cfg.eval_every_epoch or last else {}
        entry = {"epoch": self.epoch + 1, "phase": phase, "loss": float(np.mean(losses)),
                 "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                 "images_per_s": round(seen / seconds, 2),
                 "held_out_pair_accuracy": metrics.get("pair_accuracy", float("nan")),
                 "held_out_knn_accuracy": metrics.get("knn_accuracy", float("nan"))}
        self.history.append(entry)
        self.epoch += 1
        with open(self.out / "log.jsonl", "a") as log:
            log.write(json.dumps(entry) + "\n")
        if self.cfg.save_weights:
            self._save_checkpoint()
        return entry

    def evaluate(self) -> dict:
        rows, probes = evaluation_rows(self.faces.labels, self.test_idx, self.cfg.split_by)
        embeddings = self.embed(rows)
        self._last_metrics = evaluate(embeddings, self.faces.labels[rows], probes, seed=self.cfg.seed)
        return self._last_metrics

    def embed(self, rows: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings of photos ``rows`` (eval mode, no augmentation)."""
        if self.frozen is None:
            return embed_all(self.backbone, self.faces.crops[rows], self.device, self.cfg.amp)
        out = []
        with eval_mode(self.backbone), torch.no_grad():
            for start in range(0, len(rows), EVAL_BATCH_SIZE):
                chunk = rows[start:start + EVAL_BATCH_SIZE]
                features = self._frozen_features(chunk, np.zeros(len(chunk), bool))
                with _autocast(self.device, self.cfg.amp):
                    emb = self.backbone.forward_from(features, self.first_stage)
                out.append(F.normalize(emb.float()).cpu().numpy())
        return np.concatenate(out)

    def _frozen_features(self, rows: np.ndarray, mirrored: np.ndarray) -> torch.Tensor:
        key = (self.cfg.backbone, self.cfg.pretrained, id(self.faces))
        parts = {}
        for flag in (False, True):
            if (mirrored == flag).any():
                parts[flag] = self.frozen.get(key, self.backbone, self.first_stage, self.faces.crops,
                                              rows[mirrored == flag], flag, self.device)
        first = next(iter(parts.values()))
        features = np.empty((len(rows), *first.shape[1:]), np.float32)
        for flag, values in parts.items():
            features[mirrored == flag] = values
        return torch.from_numpy(features).to(self.device)

    def fit(self) -> TrainResult:
        while self.epoch < self.cfg.epochs:
            self.train_epoch()
        # Each epoch ends with an evaluation of the model as it now is: reuse it.
        metrics = self._last_metrics if self.history and self._last_metrics else self.evaluate()
        self._write_outputs(metrics)
        return TrainResult(metrics, self.history, self.train_seconds)

    def _write_outputs(self, metrics: dict) -> None:
        if self.cfg.save_weights:
            torch.save({"backbone": self.cfg.backbone, "new_fc": self.policy.new_fc,
                        "state_dict": self.backbone.state_dict()}, self.out / "model.pt")
        summary = {"config": asdict(self.cfg), "metrics": metrics, "identities": self.faces.identities,
                   "train_photos": len(self.train_idx), "held_out_photos": len(self.test_idx),
                   "skipped_photos": self.faces.skipped, "train_seconds": round(self.train_seconds, 2),
                   "device": str(self.device), "batch_size": self.batch_size}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        if self.history:
            plot_curves(self.history, self.out / "curves.png")

    def _save_checkpoint(self) -> None:
        state = {
            "epoch": self.epoch, "history": self.history, "train_seconds": self.train_seconds,
            "backbone": self.backbone.state_dict(), "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(), "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "config": asdict(self.cfg),
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)  # a crash mid-save keeps the previous checkpoint

    def _load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = state["epoch"]
        self.history = state["history"]
        self.train_seconds = state["train_seconds"]


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, [h["held_out_pair_accuracy"] for h in history], marker="o", label="pair accuracy")
    ax_acc.plot(epochs, [h["held_out_knn_accuracy"] for h in history], marker="s", label="1-NN accuracy")
    ax_acc.set(xlabel="epoch", ylabel="held-out", ylim=(0, 1.02), title="held-out accuracy")
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by ``ml.train`` and ``ml.study``."""
    from ml.training.backbones import BACKBONES

    parser.add_argument("--data", required=True, help="folder with one sub-folder of photos per identity")
    parser.add_argument("--backbone", default="facenet", choices=sorted(BACKBONES))
    parser.add_argument("--loss", default="arcface", choices=sorted(LOSS_PRESETS))
    parser.add_argument("--partial-fc", type=float, default=1.0, help="fraction of class centres per step")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--two-phase", type=int, default=0, metavar="N",
                        help="train only the head for the first N epochs, then the policy's stages")
    parser.add_argument("--batch-size", type=int, default=0, help="0: auto")
    parser.add_argument("--lr", type=float, default=None,
                        help="backbone learning rate (default 0.001 for a pretrained backbone, else 0.01)")
    parser.add_argument("--scale", type=float, default=None, help="logit scale s (default: the loss preset's)")
    parser.add_argument("--margins", type=lambda s: tuple(float(v) for v in s.split(",")), default=None,
                        metavar="M1,M2,M3")
    parser.add_argument("--held-out", type=float, default=0.4)
    parser.add_argument("--split-by", choices=("photos", "identities"), default="photos")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="aligned-crop cache (default ~/.cache/faceindex/aligned)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false")
    parser.add_argument("--quiet", dest="progress", action="store_false")
    parser.add_argument("--min-photos", type=int, default=1, help="keep identities with at least this many photos")
    parser.add_argument("--max-photos", type=int, default=0, help="at most this many photos per identity (0: all)")
    parser.add_argument("--max-identities", type=int, default=0,
                        help="use this many identities, drawn at random with --seed (0: all)")
    parser.add_argument("--no-eval-every-epoch", dest="eval_every_epoch", action="store_false",
                        help="held-out metrics after the last epoch only")
    parser.add_argument("--frozen-cache", action="store_true",
                        help="compute the never-trained stages once per photo (flip-only augmentation): "
                             "much faster on CPU when the early stages are frozen")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--freeze", default="none", help="none, L4, L3, L34, L234, each optionally +fc")
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--export", metavar="PATH.onnx", default=None,
                        help="also export the trained model as an ONNX recognizer")
    args = vars(parser.parse_args(argv))
    export_path = args.pop("export")
    cfg = TrainConfig(**args)
    result = Trainer(cfg).fit()
    print(json.dumps({"metrics": result.metrics, "train_seconds": round(result.train_seconds, 2)}, indent=2))
    if export_path:
        from ml.training.export import export_run
        print(export_run(cfg.out, export_path))
    return 0
