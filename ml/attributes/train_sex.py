"""Train sex classifiers on labelled photos, identity-disjoint, and compare them.

    python -m ml.attributes.train_sex --root DIR --labels CSV --out runs/sex [--ship weights/sex]

People, not photos, are split 60/10/30 into train / validation / test (seeded,
per sex, so each part has the whole set's share of women; nobody is in two
parts). Trained on the train people:

* an embedding head: a logistic layer and a 64-unit MLP on the recognizer's
  embedding of each face (the pipeline computes it anyway: nothing extra per face);
* a small CNN (``mask_net``'s layers, two outputs) on the aligned crop;
* fusion heads: one logistic layer on the packaged network's logit and the
  embedding (v1), or on the logit of each of its 6 test-time views and the
  embedding (v2); both cost the packaged network's run, as today, plus a dot product;

each once with a plain loss and once with class-balanced weights (the
before/after rows), against the packaged ``dlib-gender-v1`` on the same test
people. Writes into ``--out``: ``report.json``, ``comparison.md``,
``loss_curves.png`` (train and validation loss per epoch) and the split as
``train.csv`` / ``validation.csv`` / ``test.csv`` (``ml.eval attributes
--labels OUT/test.csv`` re-evaluates any model on the test people).
``--ship DIR`` writes the class-weighted fusion heads, MLP head and CNN
(``sex_fusion_views.npz``, ``sex_fusion.npz``, ``sex_head.npz``, ``sex_cnn.npz``)
and ``training_report.json`` there: the weights the manifest names (with
``--skip-cnn``, the CNN already in DIR and its rows are kept when the split is
the same). The model to ship is chosen by validation balanced accuracy; the test
people are only measured. CPU, one thread by default (bit-reproducible).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ml.attributes import mask_net
from ml.attributes.labelled_faces import identity_split, load_labelled_faces
from ml.attributes.sex_classifier import (CnnSexClassifier, EmbeddingSexClassifier, FusionSexClassifier, logit,
                                         save_npz)
from ml.eval.attributes import faces_of, sex_report

PACKAGED_MODEL_ID = "dlib-gender-v1"
SPLIT_FRACTIONS = (0.6, 0.1, 0.3)
HEAD_HIDDEN = 64
LINEAR_C = 1.0  # inverse L2 strength of the linear heads (scikit-learn's convention)


def class_weights(labels: np.ndarray, balanced: bool) -> np.ndarray:
    """Per-class loss weights: n / (2 n_c) when balanced (each class weighs the same in total)."""
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    if not balanced:
        return np.ones(2, np.float32)
    return (counts.sum() / (2 * np.maximum(counts, 1))).astype(np.float32)


def train_head(x_train, y_train, x_val, y_val, *, hidden: int, balanced: bool, epochs: int, seed: int):
    """Linear (hidden=0) or MLP head on embeddings; returns (numpy params, history)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = x_train.shape[1]
    model = (nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 2))
             if hidden else nn.Linear(dim, 2))
    weight = torch.from_numpy(class_weights(y_train, balanced))
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val)
    history = []
    if not hidden:
        history = _fit_linear(model, loss_fn, xt, yt, xv, yv, epochs)
        return _head_params(model, 0), history
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xt)))
        total = 0.0
        for start in range(0, len(order), 128):
            idx = order[start:start + 128]
            loss = loss_fn(model(xt[idx]), yt[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(model(xv), yv))
        history.append({"epoch": epoch + 1, "train_loss": total / len(xt), "val_loss": val_loss})
    return _head_params(model, hidden), history


def _fit_linear(model, loss_fn, xt, yt, xv, yv, epochs: int, c: float = LINEAR_C) -> list[dict]:
    """Full-batch L-BFGS on the weighted cross-entropy plus an L2 penalty on the weights
    (as scikit-learn's LogisticRegression with C=``c``): converged, deterministic.
    One "epoch" is one L-BFGS step of up to 20 iterations."""
    import torch

    penalty = 1.0 / (2 * c * len(xt))
    optimiser = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=20, line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        loss = loss_fn(model(xt), yt) + penalty * (model.weight ** 2).sum()
        loss.backward()
        return loss

    history = []
    for epoch in range(epochs):
        optimiser.step(objective)
        with torch.no_grad():
            history.append({"epoch": epoch + 1, "train_loss": float(loss_fn(model(xt), yt)),
                            "val_loss": float(loss_fn(model(xv), yv))})
    return history


def _head_params(model, hidden: int) -> dict[str, np.ndarray]:
    """Two-logit layers -> one male-vs-female logit (difference of the output rows)."""
    last = model[-1] if hidden else model
    w = (last.weight[1] - last.weight[0]).detach().numpy()
    b = (last.bias[1] - last.bias[0]).detach().numpy()
    if not hidden:
        return {"w": w, "b": b}
    return {"w1": model[0].weight.detach().numpy(), "b1": model[0].bias.detach().numpy(), "w2": w, "b2": b}


def train_cnn(crops_train, y_train, crops_val, y_val, *, balanced: bool, epochs: int, seed: int, log=print):
    """mask_net's CNN with two outputs on aligned crops (flip, colour, blur, occlusion augmentation)."""
    import torch

    from ml.attributes.train_mask import build_torch_model, export_params
    from ml.training.augment import augment

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    model = build_torch_model(outputs=2)
    batch = 64
    steps = epochs * int(np.ceil(len(crops_train) / batch))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights(y_train, balanced)))
    x_val = torch.from_numpy(mask_net.preprocess(list(crops_val)))
    yv = torch.from_numpy(y_val)
    history = []
    for epoch in range(epochs):
        started = time.time()
        model.train()
        order = rng.permutation(len(crops_train))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            x = torch.from_numpy(mask_net.preprocess([augment(crops_train[i], rng) for i in idx]))
            loss = loss_fn(model(x), torch.from_numpy(y_train[idx]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(model(x_val), yv))
        history.append({"epoch": epoch + 1, "train_loss": total / len(crops_train), "val_loss": val_loss})
        log(f"cnn {'balanced' if balanced else 'plain'} epoch {epoch + 1}/{epochs}: "
            f"loss {history[-1]['train_loss']:.3f} val {val_loss:.3f} ({time.time() - started:.0f}s)")
    return export_params(model), history


def packaged_views(data) -> np.ndarray:
    """(n, views) P(male) of each of the packaged network's test-time views, per photo."""
    import sys

    from tqdm import tqdm

    from ml.attributes.sex_classifier import load_sex_classifier
    from ml.decode import decode_image

    classifier = load_sex_classifier(PACKAGED_MODEL_ID)
    rows = []
    for i in tqdm(range(len(data)), desc="packaged", file=sys.stderr, leave=False):
        img = decode_image(data.image_path(i).read_bytes()).pixels
        rows.append(classifier.view_probabilities(img, faces_of(data, [i]))[0])
    return np.stack(rows)


def split_robustness(data, views: np.ndarray, seeds, *, epochs: int) -> dict:
    """Test balanced accuracy of the packaged model and both class-weighted fusion heads,
    refitted on the train people of each seed's split (same recipe, nothing chosen)."""
    emb = data.embeddings
    features = {"fusion head (packaged logit + embedding)": logit(views.mean(1))[:, None],
                f"fusion head ({views.shape[1]} packaged view logits + embedding)": logit(views)}
    scores = {f"{PACKAGED_MODEL_ID} (packaged)": []} | {name: [] for name in features}
    for seed in seeds:
        train, val, test = identity_split(data.identities, data.labels, fractions=SPLIT_FRACTIONS, seed=seed)
        scores[f"{PACKAGED_MODEL_ID} (packaged)"].append(
            sex_report(data.labels[test], views[test].mean(1))["balanced_accuracy"])
        for name, base in features.items():
            x = np.hstack([base, emb])
            head, _ = train_head(x[train], data.labels[train], x[val], data.labels[val], hidden=0, balanced=True,
                                 epochs=epochs, seed=0)
            k = base.shape[1]
            fusion = {"w_base": head["w"][:k], "w": head["w"][k:], "b": head["b"]}
            p_male = FusionSexClassifier("trained", fusion, None, data.recognizer).combine(views[test], emb[test])
            scores[name].append(sex_report(data.labels[test], p_male)["balanced_accuracy"])
    return {name: {"seeds": list(seeds), "test_balanced_accuracy": values, "mean": float(np.mean(values)),
                   "sd": float(np.std(values)), "min": float(np.min(values)),
                   "at_least_0.98": int(sum(v >= 0.98 for v in values))} for name, values in scores.items()}


def robustness_table(robustness: dict) -> str:
    lines = ["| model (fusions class-weighted) | splits | mean test bal. acc | sd | min | splits >= 0.98 |", "|" + "---|" * 6]
    for name, r in robustness.items():
        lines.append(f"| {name} | {len(r['seeds'])} | {r['mean']:.4f} | {r['sd']:.4f} | {r['min']:.4f} "
                     f"| {r['at_least_0.98']} |")
    return "\n".join(lines) + "\n"


def write_split(data, rows, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "sex"])
        for i in rows:
            writer.writerow([data.paths[i], "MF"[1 - data.labels[i]]])


def plot_loss_curves(histories: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histories), figsize=(4 * len(histories), 3.4), squeeze=False)
    for ax, (name, history) in zip(axes[0], histories.items()):
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], label="train")
        ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
        ax.set(title=name, xlabel="epoch", ylabel="loss (as weighted in training)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def comparison_table(rows: list[dict]) -> str:
    lines = ["| model | balancing | val bal. acc | test acc | test bal. acc | F recall | M recall | F prec | M prec "
             "| F F1 | M F1 | AUC | F->M | M->F | train s |",
             "|" + "---|" * 15]
    for r in rows:
        t = r["test"]
        (ff, fm), (mf, mm) = t["confusion_matrix"]
        pc = t["per_class"]
        lines.append(
            f"| {r['model']} | {r['balancing']} | {r['validation']['balanced_accuracy']:.3f} | {t['accuracy']:.3f} "
            f"| {t['balanced_accuracy']:.3f} | {pc['female']['recall']:.3f} | {pc['male']['recall']:.3f} "
            f"| {pc['female']['precision']:.3f} | {pc['male']['precision']:.3f} | {pc['female']['f1']:.3f} "
            f"| {pc['male']['f1']:.3f} | {t['auc']:.4f} | {fm} | {mf} | {r['train_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.attributes.train_sex", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="folder the CSV's paths are relative to")
    parser.add_argument("--labels", type=Path, required=True, help="CSV with header path,sex (M/F)")
    parser.add_argument("--out", type=Path, default=Path("runs/sex"))
    parser.add_argument("--ship", type=Path, help="also write the trained weights here (e.g. weights/sex)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--head-epochs", type=int, default=60,
                        help="MLP head epochs; L-BFGS steps for the linear and fusion heads")
    parser.add_argument("--cnn-epochs", type=int, default=10)
    parser.add_argument("--skip-cnn", action="store_true", help="embedding heads and the packaged model only")
    parser.add_argument("--skip-packaged", action="store_true",
                        help="leave out dlib-gender-v1 and the fusion head that reads it")
    parser.add_argument("--cache-dir", type=Path, help="per-photo face cache (default ~/.cache/faceindex/faces)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; bit-exact only for the same count")
    parser.add_argument("--split-seeds", type=int, default=0, metavar="N",
                        help="also refit the packaged model's class-weighted fusion heads on the people splits of "
                             "seeds 0..N-1 and report their test balanced accuracy: how much the split alone moves "
                             "the figures (nothing is chosen on it)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_labelled_faces(args.root, args.labels, cache_dir=args.cache_dir)
    train, val, test = identity_split(data.identities, data.labels, fractions=SPLIT_FRACTIONS, seed=args.seed)
    assert not set(data.identities[train]) & set(data.identities[test]), "a person is in train and test"
    for name, rows in (("train", train), ("validation", val), ("test", test)):
        write_split(data, rows, args.out / f"{name}.csv")
    counts = {name: {"photos": int(len(rows)), "people": int(len(np.unique(data.identities[rows]))),
                     "female": int((data.labels[rows] == 0).sum()), "male": int((data.labels[rows] == 1).sum())}
              for name, rows in (("train", train), ("validation", val), ("test", test))}
    print(json.dumps(counts))

    rows, histories, params, robustness = [], {}, {}, None

    def measure(model_name, balancing, p_male, seconds):
        """``p_male``: P(male) for every photo; scored on the validation and test people."""
        row = {"model": model_name, "balancing": balancing, "train_seconds": seconds,
               "validation": sex_report(data.labels[val], p_male[val]),
               "test": sex_report(data.labels[test], p_male[test])}
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("model", "balancing")} | {
            "val_bal_acc": round(row["validation"]["balanced_accuracy"], 4),
            "test_bal_acc": round(row["test"]["balanced_accuracy"], 4), "test_auc": round(row["test"]["auc"], 4)}),
            flush=True)
        return row

    emb = data.embeddings
    for hidden, name in ((0, "embedding head (linear)"), (HEAD_HIDDEN, "embedding head (MLP 64)")):
        for balanced in (False, True):
            started = time.time()
            head, history = train_head(emb[train], data.labels[train], emb[val], data.labels[val], hidden=hidden,
                                       balanced=balanced, epochs=args.head_epochs, seed=args.seed)
            seconds = time.time() - started
            label = f"{name}, {'balanced' if balanced else 'plain'}"
            histories[label] = history
            params[(name, balanced)] = head
            measure(name, "class-weighted" if balanced else "none",
                    EmbeddingSexClassifier("trained", head, data.recognizer).male_probability(None, faces_of(data, range(len(data)))),
                    seconds)
    if not args.skip_packaged:
        started = time.time()
        views = packaged_views(data)
        packaged = views.mean(1)
        print(f"packaged model on {len(data)} photos: {time.time() - started:.0f}s", flush=True)
        measure(f"{PACKAGED_MODEL_ID} (packaged)", "n/a", packaged, 0.0)
        # v1: the logit of the averaged answer; v2: each test-time view's logit on its own.
        for key, name, base in (("fusion", "fusion head (packaged logit + embedding)", logit(packaged)[:, None]),
                                ("fusion-views", f"fusion head ({views.shape[1]} packaged view logits + embedding)",
                                 logit(views))):
            features = np.hstack([base, emb])
            for balanced in (False, True):
                started = time.time()
                fusion, history = train_head(features[train], data.labels[train], features[val], data.labels[val],
                                             hidden=0, balanced=balanced, epochs=args.head_epochs, seed=args.seed)
                seconds = time.time() - started
                k = base.shape[1]
                fusion = {"w_base": fusion["w"][:k], "w": fusion["w"][k:], "b": fusion["b"]}
                histories[f"{key}, {'balanced' if balanced else 'plain'}"] = history
                params[(key, balanced)] = fusion
                combined = FusionSexClassifier("trained", fusion, None, data.recognizer).combine(views, emb)
                measure(name, "class-weighted" if balanced else "none", combined, seconds)
        if args.split_seeds:
            robustness = split_robustness(data, views, range(args.split_seeds), epochs=args.head_epochs)
    if not args.skip_cnn:
        for balanced in (False, True):
            started = time.time()
            cnn, history = train_cnn(data.crops[train], data.labels[train], data.crops[val], data.labels[val],
                                     balanced=balanced, epochs=args.cnn_epochs, seed=args.seed)
            seconds = time.time() - started
            histories[f"CNN on crops, {'balanced' if balanced else 'plain'}"] = history
            params[("cnn", balanced)] = cnn
            measure("CNN on crops (64x64)", "class-weighted" if balanced else "none",
                    CnnSexClassifier("trained", cnn).male_probability_crops(list(data.crops)), seconds)

    plot_loss_curves(histories, args.out / "loss_curves.png")
    best = max(rows, key=lambda r: r["validation"]["balanced_accuracy"])
    report = {"labels_csv": str(args.labels), "recognizer": data.recognizer, "seed": args.seed,
              "split_fractions": SPLIT_FRACTIONS, "split": counts, "head_epochs": args.head_epochs,
              "cnn_epochs": 0 if args.skip_cnn else args.cnn_epochs, "threads": args.threads,
              "no_face_photos": int((data.faces_found == 0).sum()),
              "best_by_validation_balanced_accuracy": f"{best['model']} ({best['balancing']})",
              "rows": rows, "loss_curves": histories}
    if robustness:
        report["split_robustness"] = robustness
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    table = comparison_table(rows)
    (args.out / "comparison.md").write_text(table)
    print(table)
    if robustness:
        print(robustness_table(robustness))
    if args.ship:
        ship(args.ship, params, report)
    return 0


def ship(folder: Path, params: dict, report: dict) -> None:
    """The class-weighted fusion head, MLP head and CNN, with sha256 and what they were trained on."""
    folder.mkdir(parents=True, exist_ok=True)
    shipped = {}
    for key, filename in ((("fusion-views", True), "sex_fusion_views.npz"), (("fusion", True), "sex_fusion.npz"),
                          ((f"embedding head (MLP {HEAD_HIDDEN})", True), "sex_head.npz"),
                          (("cnn", True), "sex_cnn.npz")):
        if key not in params:
            continue
        data = save_npz(params[key])
        (folder / filename).write_bytes(data)
        shipped[filename] = hashlib.sha256(data).hexdigest()
        print(f"wrote {folder / filename} ({len(data)} bytes, sha256 {shipped[filename]})")
    slim = {k: v for k, v in report.items() if k != "loss_curves"}
    previous_path = folder / "training_report.json"
    if report["cnn_epochs"] == 0 and previous_path.exists():
        # --skip-cnn re-ships the heads: keep the CNN the folder already holds, with its rows.
        previous = json.loads(previous_path.read_text())
        if previous.get("split") == report["split"] and "sex_cnn.npz" in previous.get("files", {}):
            shipped["sex_cnn.npz"] = previous["files"]["sex_cnn.npz"]
            slim["cnn_epochs"] = previous["cnn_epochs"]
            slim["rows"] = slim["rows"] + [r for r in previous["rows"] if r["model"].startswith("CNN")]
            best = max(slim["rows"], key=lambda r: r["validation"]["balanced_accuracy"])
            slim["best_by_validation_balanced_accuracy"] = f"{best['model']} ({best['balancing']})"
    previous_path.write_text(json.dumps({"files": shipped, **slim}, indent=2) + "\n")


if __name__ == "__main__":
    import sys

    sys.exit(main())
