"""FacePipeline: detect -> align -> embed, with models chosen by the manifest."""
from __future__ import annotations

import numpy as np

from ml.align import align_face, template_landmarks_for_box
from ml.openset import ImpostorTail
from ml.quality import face_quality
from ml.subject import iou
from ml.types import DetectedFace, EmbeddedFace

# embed_box looks for the face in the user's box enlarged by this factor.
BOX_SEARCH_MARGIN = 1.6


class FacePipeline:
    def __init__(self, detector, recognizer, *, detector_id: str, recognizer_id: str,
                 embedding_dim: int, threshold: float, thresholds: dict[str, float],
                 flip_tta: bool = False, impostor_tail: ImpostorTail | None = None,
                 landmarker=None, landmarker_id: str | None = None,
                 masked_impostor_tail: ImpostorTail | None = None):
        self.detector = detector
        self.recognizer = recognizer
        self.detector_id = detector_id
        self.recognizer_id = recognizer_id
        self.embedding_dim = embedding_dim
        self.threshold = threshold
        self.thresholds = dict(thresholds)
        self.flip_tta = flip_tta
        # Per-pair impostor score tail (manifest impostor_tail): open-set thresholds.
        self.impostor_tail = impostor_tail
        # The same for probes the mask classifier calls masked (manifest masked_impostor_tail):
        # against bare and masked-probe templates their impostor scores run higher.
        self.masked_impostor_tail = masked_impostor_tail
        # Optional second detector whose landmarks replace the first's (boxes stay).
        self.landmarker = landmarker
        self.landmarker_id = landmarker_id

    @classmethod
    def from_manifest(cls, *, detector: str | None = None, recognizer: str | None = None,
                      flip_tta: bool | None = None, landmarks: str | None = None) -> "FacePipeline":
        """Build from weights/manifest.toml; None means the manifest's default."""
        import weights
        from ml.detectors import load_detector
        from ml.recognizers import load_recognizer

        detector_id = detector or weights.default_model_id("detector")
        recognizer_id = recognizer or weights.default_model_id("recognizer")
        if flip_tta is None:
            flip_tta = bool(weights.load_manifest()["defaults"].get("flip_tta", False))
        entry = weights.model_entry(recognizer_id)
        # Thresholds belong to a recognizer *with* its alignment and TTA setting;
        # a manifest may give per-setting overrides under options.
        thresholds = dict(entry.thresholds)
        threshold = entry.default_threshold
        if threshold is None:
            raise ValueError(f"manifest gives no default_threshold for {recognizer_id!r}")
        tails = impostor_tails(entry)
        rec = load_recognizer(recognizer_id)
        return cls(
            load_detector(detector_id), rec,
            detector_id=detector_id, recognizer_id=recognizer_id,
            embedding_dim=rec.embedding_dim, threshold=float(threshold),
            thresholds={k: float(v) for k, v in thresholds.items()}, flip_tta=flip_tta,
            **tails,
            **landmarker_options(landmarks, detector_id),
        )

    def tail_for(self, masked: bool) -> ImpostorTail | None:
        """The impostor tail that sets the threshold for bare or masked probes."""
        return (self.masked_impostor_tail or self.impostor_tail) if masked else self.impostor_tail

    def detect(self, img: np.ndarray) -> list[DetectedFace]:
        """Faces in a BGR image, best score first; boxes and landmarks in its pixels."""
        img = _as_bgr(img)
        return self.refined(img, self.detector.detect(img))

    def refined(self, img: np.ndarray, faces: list[DetectedFace]) -> list[DetectedFace]:
        """The faces with the landmarker's landmarks (boxes and scores stay); a face it misses keeps its own."""
        if self.landmarker is None or not faces:
            return faces
        found = self.landmarker.landmarks_in_boxes(img, [f.box for f in faces])
        return [face if points is None else DetectedFace(box=face.box, landmarks=points, score=face.score)
                for face, points in zip(faces, found)]

    def align(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return align_face(_as_bgr(img), landmarks)

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """(n, dim) float32 L2-normalised embeddings of aligned 112x112 BGR crops, in one batch."""
        crops = [np.ascontiguousarray(c) for c in crops]
        if not self.flip_tta or not crops:
            return self.recognizer.embed(crops)
        both = self.recognizer.embed(crops + [c[:, ::-1].copy() for c in crops])
        summed = both[: len(crops)] + both[len(crops):]
        return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)

    def process(self, img: np.ndarray) -> list[EmbeddedFace]:
        return self.process_batch([img])[0]

    def process_batch(self, imgs: list[np.ndarray]) -> list[list[EmbeddedFace]]:
        """Detect in every image, then embed all faces of all images in one batch."""
        imgs = [_as_bgr(img) for img in imgs]
        detections = [self.detect(img) for img in imgs]
        crops = [self.align(img, f.landmarks) for img, faces in zip(imgs, detections) for f in faces]
        embeddings = self.embed_crops(crops)
        results, row = [], 0
        for faces in detections:
            embedded = []
            for face in faces:
                embedded.append(self.embedded_face(face, crops[row], embeddings[row]))
                row += 1
            results.append(embedded)
        return results

    def embed_box(self, img: np.ndarray, box: tuple[float, float, float, float]) -> EmbeddedFace:
        """Embed the face inside a user-drawn (x, y, w, h) box the detector may have missed.

        Landmarks come from the detector run on the enlarged box if it finds a
        face centred inside the box, else from the template scaled to the box
        (then ``score`` is 0.0).
        """
        img = _as_bgr(img)
        face = self._find_face_in_box(img, box)
        if face is None:
            face = DetectedFace(box=tuple(float(v) for v in box),
                                landmarks=template_landmarks_for_box(box), score=0.0)
        crop = self.align(img, face.landmarks)
        return self.embedded_face(face, crop, self.embed_crops([crop])[0])

    def _find_face_in_box(self, img: np.ndarray, box) -> DetectedFace | None:
        x, y, w, h = (float(v) for v in box)
        if w < 1 or h < 1:
            raise ValueError(f"box {box} has no area")
        height, width = img.shape[:2]
        cx, cy = x + w / 2, y + h / 2
        half = max(w, h) * BOX_SEARCH_MARGIN / 2
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(width, cx + half + 1)), int(min(height, cy + half + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        best, best_iou = None, 0.0
        for face in self.detect(img[y0:y1, x0:x1]):
            fx, fy, fw, fh = face.box
            moved = (fx + x0, fy + y0, fw, fh)
            centre_x, centre_y = moved[0] + fw / 2, moved[1] + fh / 2
            if not (x <= centre_x <= x + w and y <= centre_y <= y + h):
                continue
            overlap = iou(moved, (x, y, w, h))
            if overlap > best_iou:
                best_iou = overlap
                best = DetectedFace(box=moved, landmarks=face.landmarks + np.float32([x0, y0]),
                                    score=face.score)
        return best

    def embedded_face(self, face: DetectedFace, crop: np.ndarray, embedding: np.ndarray) -> EmbeddedFace:
        """An EmbeddedFace from a detection, its aligned crop and its embedding (quality scored here)."""
        return EmbeddedFace(
            box=face.box, landmarks=face.landmarks, score=face.score,
            embedding=np.asarray(embedding, dtype=np.float32), crop=crop,
            quality=face_quality(face.box, face.landmarks, face.score, crop),
        )


def landmarker_options(landmarks: str | None, detector_id: str) -> dict:
    """The second detector whose landmarks replace the detector's, as FacePipeline keywords.

    ``landmarks`` None means the manifest's ``[defaults] landmarks``; "" or the
    detector itself means none.
    """
    import weights
    from ml.detectors import load_detector

    if landmarks is None:
        landmarks = weights.load_manifest()["defaults"].get("landmarks", "")
    return {"landmarker": load_detector(landmarks) if landmarks and landmarks != detector_id else None,
            "landmarker_id": landmarks or None}


def impostor_tails(entry) -> dict[str, ImpostorTail | None]:
    """A recognizer manifest entry's impostor_tail and masked_impostor_tail, as FacePipeline keywords."""
    return {key: ImpostorTail.from_table(entry.options[key]) if entry.options.get(key) else None
            for key in ("impostor_tail", "masked_impostor_tail")}


def _as_bgr(img: np.ndarray) -> np.ndarray:
    """Accept HxW gray or HxWx4 BGRA too; the pipeline works on HxWx3 uint8 BGR."""
    import cv2

    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {img.shape}")
    return img

