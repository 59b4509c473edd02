"""Train the mask classifier on synthetic masks over package faces.

    python -m ml.attributes.train_mask --out weights/mask/ [--seed 0]
    python -m ml.attributes.train_mask --out /tmp/mask-eval --holdout-eval

Reproducible from installed packages alone (no shared data): faces come from
``training_faces.package_faces()``, masks from ``overlay`` and ``synthetic``.
The "green" mask photo is never used in training so tests and evaluation can
use a fabric the network has not seen. The shipped model trains on all eight
people and writes ``mask_cnn.npz`` and ``training_report.json``;
``--holdout-eval`` instead trains on six and reports accuracy / AUC /
confusion matrix on the other two (seen fabrics and the held-out green one).
Deterministic for a given seed and thread count (CPU torch).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ml.attributes import mask_net
from ml.attributes.synthetic import make_batch

TRAIN_MASKS = ("black", "blue", "white")
HELD_OUT_MASK = "green"
HOLDOUT_IDENTITIES = ("astronaut", "t1_2")


def build_torch_model(outputs: int = len(mask_net.LABELS)):
    """mask_net's layers in torch; ``train_sex`` builds the same with two outputs."""
    import torch.nn as nn

    layers = []
    for cin, cout, pool in zip(mask_net.CHANNELS[:-1], mask_net.CHANNELS[1:], mask_net.POOL_AFTER):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(mask_net.CHANNELS[-1], outputs)]
    return nn.Sequential(*layers)


def export_params(model) -> dict[str, np.ndarray]:
    """Fold each batch norm into the conv before it; names as mask_net reads them."""
    import torch.nn as nn

    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    norms = [m for m in model if isinstance(m, nn.BatchNorm2d)]
    linear = [m for m in model if isinstance(m, nn.Linear)][0]
    params = {}
    for i, (conv, bn) in enumerate(zip(convs, norms)):
        gain = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().numpy()
        params[f"conv{i}_w"] = conv.weight.detach().numpy() * gain[:, None, None, None]
        params[f"conv{i}_b"] = (bn.bias.detach().numpy() - bn.running_mean.detach().numpy() * gain)
    params["fc_w"] = linear.weight.detach().numpy()
    params["fc_b"] = linear.bias.detach().numpy()
    return params


def train(crops: list[np.ndarray], *, seed: int, epochs: int, per_epoch: int, mask_names=TRAIN_MASKS, log=print):
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    model = build_torch_model()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    batch_size = 64
    steps = epochs * (per_epoch // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        started = time.time()
        images, targets = make_batch(crops, per_epoch, rng, mask_names)
        x_all = torch.from_numpy(mask_net.preprocess(images))
        y_all = torch.from_numpy(targets)
        order = torch.from_numpy(rng.permutation(len(images)))
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, per_epoch - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            out = model(x_all[idx])
            loss = loss_fn(out, y_all[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == y_all[idx]).sum())
            total += len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.3f} train acc {correct / total:.3f} ({time.time() - started:.0f}s)")
    model.eval()
    return export_params(model)


def evaluate(params: dict[str, np.ndarray], images: list[np.ndarray], targets: np.ndarray) -> dict:
    return classification_report(mask_net.softmax(mask_net.logits(params, mask_net.preprocess(images))), targets)


def classification_report(probs: np.ndarray, targets: np.ndarray) -> dict:
    """Accuracy, confusion matrix (rows true, cols predicted, LABELS order), AUC of
    "any mask" vs "no mask" (score 1 - p(no_mask)) and of "incorrect" vs "mask"."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    predicted = probs.argmax(1)
    masked = targets != mask_net.LABELS.index("no_mask")
    report = {
        "n": int(len(targets)),
        "accuracy": float((predicted == targets).mean()),
        "binary_accuracy": float(((predicted != 0) == masked).mean()),
        "auc_mask_vs_no_mask": float(roc_auc_score(masked, 1 - probs[:, 0])),
        "confusion_matrix": confusion_matrix(targets, predicted, labels=range(len(mask_net.LABELS))).tolist(),
        "labels": list(mask_net.LABELS),
    }
    worn = targets != 0
    if worn.any() and len(set(targets[worn])) == 2:
        incorrect = mask_net.LABELS.index("mask_incorrect")
        report["auc_incorrect_vs_mask"] = float(roc_auc_score(targets[worn] == incorrect, probs[worn, incorrect]))
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("weights/mask"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-epoch", type=int, default=6144)
    parser.add_argument("--holdout-eval", action="store_true",
                        help="train on 6 of the 8 people and evaluate on the other 2 instead of training the shipped model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; results are bit-exact only for the same count")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from ml.attributes.training_faces import package_faces

    faces = package_faces()
    report: dict = {"seed": args.seed, "epochs": args.epochs, "per_epoch": args.per_epoch,
                    "train_masks": list(TRAIN_MASKS), "held_out_mask": HELD_OUT_MASK}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.holdout_eval:
        train_crops = [c for k, c in faces.items() if k not in HOLDOUT_IDENTITIES]
        test_crops = [faces[k] for k in HOLDOUT_IDENTITIES]
        params = train(train_crops, seed=args.seed, epochs=args.epochs, per_epoch=args.per_epoch)
        rng = np.random.default_rng(args.seed + 1000)
        report["identities"] = [k for k in faces if k not in HOLDOUT_IDENTITIES]
        report["holdout_identities"] = list(HOLDOUT_IDENTITIES)
        for name, masks in (("seen_fabrics", TRAIN_MASKS), ("held_out_green", (HELD_OUT_MASK,))):
            images, targets = _eval_set(test_crops, rng, masks)
            report[f"holdout_{name}"] = evaluate(params, images, targets)
            print(name, json.dumps(report[f"holdout_{name}"]))
        name = "holdout"
    else:
        report["identities"] = list(faces)
        params = train(list(faces.values()), seed=args.seed, epochs=args.epochs, per_epoch=args.per_epoch)
        name = "training"
    data = mask_net.save_weights(params)
    weights_path = args.out / ("mask_cnn.npz" if name == "training" else "mask_cnn_holdout.npz")
    weights_path.write_bytes(data)
    report["sha256"] = hashlib.sha256(data).hexdigest()
    (args.out / f"{name}_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {weights_path} ({len(data)} bytes, sha256 {report['sha256']})")


def _eval_set(crops, rng, mask_names, n=600):
    """Named fabrics only (no made-up ones): the held-out test of a fabric."""
    from ml.attributes.synthetic import augment_face, degrade
    from ml.attributes.overlay import synthesize_masked

    images, targets = [], []
    for i in range(n):
        label = mask_net.LABELS[i % 3]
        face = augment_face(crops[i % len(crops)], rng)
        if label != "no_mask":
            face = synthesize_masked(face, mask_names[int(rng.integers(len(mask_names)))], rng, wear=label)
        images.append(degrade(face, rng))
        targets.append(i % 3)
    return images, np.array(targets)


if __name__ == "__main__":
    main()
