"""``attributes``: a sex classifier from the manifest on labelled photos.

    python -m ml.eval attributes --root DIR --labels CSV [--sex-model ID] [--plots OUT]

Labels: ``path,sex`` rows (see ``ml.attributes.labelled_faces``). Each photo's
largest face goes through the pipeline (detector, alignment, recognizer) and
the classifier; the report has accuracy, balanced accuracy, precision /
recall / F1 per class, ROC AUC of P(male) and the confusion matrix. With
``--plots``: ``roc.png``, ``confusion.png``, ``misclassified.png`` (every
error up to 48, worst first, with its P(male)) and ``activation_maps.png``.

Activation maps: for the project's CNN the class activation map of its last
conv layer (its feature maps weighted by the output layer; exact, as global
average pooling feeds the output directly); for every classifier, including
the packaged ONNX network and the embedding head that no gradient reaches,
an occlusion map: how much the true class's logit drops when a grey square hides each
part of the face. Both are shown for a fixed sample of correct and wrong faces.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.attributes.labelled_faces import LABEL_NAMES, LabelledFaces, load_labelled_faces
from ml.attributes.sex_classifier import (CnnSexClassifier, EmbeddingSexClassifier, FusionSexClassifier,
                                         SexClassifier, load_sex_classifier, logit)
from ml.types import EmbeddedFace

MAX_MISCLASSIFIED_SHOWN = 48
ACTIVATION_SAMPLE = 8
OCCLUSION_PATCH = 24
OCCLUSION_STRIDE = 8


def sex_report(labels: np.ndarray, p_male: np.ndarray, threshold: float = 0.5) -> dict:
    """Binary metrics with "male" as label 1; per-class figures keyed by class name."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    labels = np.asarray(labels, np.int64)
    predicted = (np.asarray(p_male) >= threshold).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=[0, 1], zero_division=0)
    both = 0 < labels.sum() < len(labels)
    return {
        "n": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean(recall)),
        "auc": float(roc_auc_score(labels, p_male)) if both else None,
        "per_class": {name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                             "support": int(support[k])} for k, name in enumerate(LABEL_NAMES)},
        # rows: true female, male; columns: predicted female, male
        "confusion_matrix": confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "threshold": threshold,
    }


def faces_of(data: LabelledFaces, rows) -> list[EmbeddedFace]:
    return [EmbeddedFace(box=(0.0, 0.0, 0.0, 0.0), landmarks=data.landmarks[i], score=1.0,
                         embedding=data.embeddings[i], crop=data.crops[i], quality=1.0) for i in rows]


def classify(classifier: SexClassifier, data: LabelledFaces, progress: bool = True) -> np.ndarray:
    """P(male) for every photo of ``data`` (the full photo is re-read only for pixel classifiers)."""
    import sys

    from tqdm import tqdm

    from ml.decode import decode_image

    if classifier.embedding_model is not None and classifier.embedding_model != data.recognizer:
        raise SystemExit(f"{classifier.model_id} reads {classifier.embedding_model} embeddings, "
                         f"these faces were embedded by {data.recognizer}")
    if isinstance(classifier, EmbeddingSexClassifier):
        return classifier.male_probability(None, faces_of(data, range(len(data))))
    if isinstance(classifier, CnnSexClassifier):
        return classifier.male_probability_crops(list(data.crops))
    out = np.zeros(len(data), np.float32)
    for i in tqdm(range(len(data)), desc="classify", disable=not progress, file=sys.stderr, leave=False):
        img = decode_image(data.image_path(i).read_bytes()).pixels
        out[i] = classifier.male_probability(img, faces_of(data, [i]))[0]
    return out


def run_attributes(pipeline, root: Path, labels_csv: Path, *, model_id: str | None = None,
                   plots: Path | None = None, cache_dir: Path | None = None) -> dict:
    classifier = load_sex_classifier(model_id)
    data = load_labelled_faces(root, labels_csv, pipeline=pipeline, cache_dir=cache_dir)
    p_male = classify(classifier, data)
    report = {"sex_model": classifier.model_id, **sex_report(data.labels, p_male),
              "photos": len(data), "people": int(len(np.unique(data.identities))),
              "no_face": int((data.faces_found == 0).sum())}
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        report["plots"] = write_plots(classifier, data, p_male, report, plots)
    return report


def write_plots(classifier, data: LabelledFaces, p_male: np.ndarray, report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    written = [plot_roc(data.labels, p_male, report, out / "roc.png", classifier.model_id),
               plot_confusion(report, out / "confusion.png", classifier.model_id),
               plot_misclassified(data, p_male, out / "misclassified.png", classifier.model_id),
               plot_activation_maps(classifier, data, p_male, out / "activation_maps.png")]
    return [str(p) for p in written]


def plot_roc(labels, p_male, report, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, p_male)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label=f"AUC {report['auc']:.4f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
    ax.set(xlabel="false male rate (women called men)", ylabel="true male rate",
           title=f"{title}: balanced acc {report['balanced_accuracy']:.3f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(report, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    matrix = np.array(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix / matrix.sum(axis=1, keepdims=True).clip(1), cmap="Blues", vmin=0, vmax=1)
    for (r, c), value in np.ndenumerate(matrix):
        share = value / max(matrix[r].sum(), 1)
        ax.text(c, r, f"{value}\n{share:.1%}", ha="center", va="center",
                color="white" if share > 0.5 else "black")
    ax.set_xticks([0, 1], [f"pred {n}" for n in LABEL_NAMES])
    ax.set_yticks([0, 1], [f"true {n}" for n in LABEL_NAMES])
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_misclassified(data: LabelledFaces, p_male, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    errors = np.flatnonzero((p_male >= 0.5).astype(int) != data.labels)
    wrong = errors[np.argsort(-np.abs(p_male[errors] - 0.5))][:MAX_MISCLASSIFIED_SHOWN]
    cols = 8
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(data.crops[i][:, :, ::-1])
        ax.set_title(f"true {LABEL_NAMES[data.labels[i]][0].upper()}\nP(male) {p_male[i]:.2f}", fontsize=7)
    shown = f" (the {len(wrong)} most confident shown)" if len(wrong) < len(errors) else ""
    fig.suptitle(f"{title}: {len(errors)} misclassified of {len(data)}{shown}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def occlusion_map(classifier, crop: np.ndarray, embed, label: int) -> np.ndarray:
    """(112, 112) drop in the logit of ``label`` when a grey OCCLUSION_PATCH square hides
    each position (averaged over the squares covering each pixel).

    ``embed`` maps crops to embeddings (the pipeline's recognizer) for
    classifiers that read embeddings; pixel classifiers get the occluded crop
    placed back with template landmarks (``AgeSexEstimator.predict_crops``' framing).
    """
    positions = list(range(0, crop.shape[0] - OCCLUSION_PATCH + 1, OCCLUSION_STRIDE))
    variants = [crop]
    for y in positions:
        for x in positions:
            hidden = crop.copy()
            hidden[y:y + OCCLUSION_PATCH, x:x + OCCLUSION_PATCH] = 128
            variants.append(hidden)
    # In logits: a confident answer's probability barely moves, its logit does.
    z = logit(crop_probabilities(classifier, variants, embed))
    p_label = z if label == 1 else -z
    heat = np.zeros(crop.shape[:2], np.float32)
    count = np.zeros(crop.shape[:2], np.float32)
    for k, (y, x) in enumerate((y, x) for y in positions for x in positions):
        heat[y:y + OCCLUSION_PATCH, x:x + OCCLUSION_PATCH] += p_label[0] - p_label[k + 1]
        count[y:y + OCCLUSION_PATCH, x:x + OCCLUSION_PATCH] += 1
    return heat / np.maximum(count, 1)


def crop_probabilities(classifier, crops: list[np.ndarray], embed) -> np.ndarray:
    """P(male) from aligned crops alone, for any classifier kind."""
    from ml.align import ARCFACE_TEMPLATE

    if isinstance(classifier, FusionSexClassifier):
        return classifier.combine(_crop_views(classifier.base, crops), embed(crops))
    if classifier.embedding_model is not None:
        embeddings = embed(crops)
        faces = [EmbeddedFace((0, 0, 112, 112), ARCFACE_TEMPLATE, 1.0, e, c, 1.0) for e, c in zip(embeddings, crops)]
        return classifier.male_probability(None, faces)
    if isinstance(classifier, CnnSexClassifier):
        return classifier.male_probability_crops(crops)
    return _crop_views(classifier, crops).mean(1)


def _crop_views(classifier, crops: list[np.ndarray]) -> np.ndarray:
    """(n, views) P(male) of the packaged network's test-time views, from aligned crops alone."""
    import cv2

    from ml.align import ARCFACE_TEMPLATE

    pad = 24  # as AgeSexEstimator.predict_crops: dlib's chip reaches past the crop
    out = []
    for crop in crops:
        padded = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        face = EmbeddedFace((0, 0, 112, 112), ARCFACE_TEMPLATE + pad, 1.0, None, crop, 1.0)
        out.append(classifier.view_probabilities(padded, [face])[0])
    return np.array(out, np.float32)


def activation_sample(labels: np.ndarray, p_male: np.ndarray, k: int = ACTIVATION_SAMPLE) -> np.ndarray:
    """Fixed, seeded sample: correct women, correct men and errors, about a third each."""
    rng = np.random.default_rng(0)
    correct = (p_male >= 0.5).astype(int) == labels
    groups = [np.flatnonzero(correct & (labels == 0)), np.flatnonzero(correct & (labels == 1)),
              np.flatnonzero(~correct)]
    chosen: list[int] = []
    for g, group in enumerate(groups):
        take = min(len(group), (k - len(chosen)) // (len(groups) - g))
        chosen += rng.choice(group, size=take, replace=False).tolist() if take else []
    return np.array(chosen, int)


def plot_activation_maps(classifier, data: LabelledFaces, p_male, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from ml.recognizers import load_recognizer

    sample = activation_sample(data.labels, p_male)
    recognizer = load_recognizer(data.recognizer) if classifier.embedding_model else None
    embed = (lambda crops: recognizer.embed(crops)) if recognizer else None
    cam = isinstance(classifier, CnnSexClassifier)
    rows = 3 if cam else 2
    fig, axes = plt.subplots(rows, max(len(sample), 1), figsize=(1.6 * max(len(sample), 1), 1.8 * rows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c, i in enumerate(sample):
        rgb = data.crops[i][:, :, ::-1]
        axes[0, c].imshow(rgb)
        axes[0, c].set_title(f"true {LABEL_NAMES[data.labels[i]][0].upper()}, P(m) {p_male[i]:.2f}", fontsize=6)
        heat = occlusion_map(classifier, data.crops[i], embed, int(data.labels[i]))
        axes[1, c].imshow(rgb)
        limit = max(float(np.abs(heat).max()), 1e-3)
        axes[1, c].imshow(heat, cmap="RdBu_r", alpha=0.6, vmin=-limit, vmax=limit)
        axes[1, c].set_title(f"occlusion (max {limit:.2f})", fontsize=6)
        if cam:
            import cv2

            m = classifier.class_activation_map(data.crops[i])
            m = m if data.labels[i] == 1 else -m  # evidence for the true class
            big = cv2.resize(m.astype(np.float32), (112, 112), interpolation=cv2.INTER_LINEAR)
            limit = max(float(np.abs(big).max()), 1e-6)
            axes[2, c].imshow(rgb)
            axes[2, c].imshow(big, cmap="RdBu_r", alpha=0.6, vmin=-limit, vmax=limit)
            axes[2, c].set_title("CAM, last conv", fontsize=6)
    fig.suptitle(f"{classifier.model_id}: red = evidence for the true class (occlusion: logit drop when hidden)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
