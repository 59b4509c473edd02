"""The torch path (ml.torch_models) against the cv2.dnn path, on the CPU, on package-shipped photos.

Parity targets (issue 11): boxes and landmarks within 1 px, per-face embedding
cosine >= 0.999, the same match decisions at the manifest threshold.
"""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from tests_ml_helpers import bgr_to_jpeg, rotate

import weights
from ml.errors import ImageDecodeError
from ml.torch_models.device import resolve_device, run_split_on_failure
from ml.torch_models.onnx_proto import read_onnx

DETECTOR, RECOGNIZER = "yunet-2023mar-int8", "sface-2021dec-int8"


@pytest.fixture(scope="module")
def torch_pipeline():
    from ml.torch_models.pipeline import TorchFacePipeline

    return TorchFacePipeline.from_manifest(device="cpu", threads=2)


@pytest.fixture(scope="module")
def photos(group_photo, hanks, astronaut):
    """Package faces in several sizes and shapes: 640x480, 1920x1080, tiny, rotated, mirrored."""
    def on_canvas(img, width, height, x, y, scale):
        canvas = np.full((height, width, 3), 90, np.uint8)
        face = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas[y:y + face.shape[0], x:x + face.shape[1]] = face[: height - y, : width - x]
        return canvas

    return {
        "t1": group_photo,
        "t1_640x480": cv2.resize(group_photo, (640, 480), interpolation=cv2.INTER_AREA),
        "t1_1920x1080": on_canvas(group_photo, 1920, 1080, 100, 60, 1.5),
        "hanks": hanks,
        "astronaut": astronaut,
        "astronaut_rotated": rotate(astronaut, 12),
        "astronaut_mirrored_1920x1080": on_canvas(astronaut[:, ::-1].copy(), 1920, 1080, 1200, 300, 1.2),
        "astronaut_small": cv2.resize(astronaut, (180, 180), interpolation=cv2.INTER_AREA),
    }


@pytest.fixture(scope="module")
def both_paths(pipeline, torch_pipeline, photos):
    """(cv2 path results, torch path results) for the photos, one batch each."""
    imgs = list(photos.values())
    return pipeline.process_batch(imgs), torch_pipeline.process_batch(imgs)


def test_onnx_reader_matches_the_onnx_package():
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    for model_id in (DETECTOR, RECOGNIZER):
        data = weights.model_bytes(model_id)
        ours, theirs = read_onnx(data), onnx.load_from_string(data).graph
        assert [n.op_type for n in ours.nodes] == [n.op_type for n in theirs.node]
        for node, ref in zip(ours.nodes, theirs.node):
            assert (node.inputs, node.outputs) == (list(ref.input), list(ref.output))
            for attr in ref.attribute:
                value = helper.get_attribute_value(attr)
                if isinstance(value, onnx.TensorProto):
                    np.testing.assert_array_equal(node.attributes[attr.name], numpy_helper.to_array(value))
                else:
                    assert node.attributes[attr.name] == pytest.approx(value)
        assert set(ours.initializers) == {t.name for t in theirs.initializer}
        for tensor in theirs.initializer:
            ref = numpy_helper.to_array(tensor)
            assert ours.initializers[tensor.name].dtype == ref.dtype
            np.testing.assert_array_equal(ours.initializers[tensor.name], ref)
        assert ours.outputs == [o.name for o in theirs.output]


def test_torch_networks_match_cv2_dnn_outputs(group_photo):
    """Raw network outputs (dequantized int8 weights, folded BN) against cv2.dnn on the same blob."""
    from ml.torch_models.sface import TorchSFace
    from ml.torch_models.yunet import TorchYuNet, pad_to_divisor

    detector = TorchYuNet(weights.model_entry(DETECTOR), weights.model_bytes(DETECTOR), "cpu")
    blob = pad_to_divisor(cv2.resize(group_photo, (640, 480))).transpose(2, 0, 1)[None].astype(np.float32)
    net = cv2.dnn.readNetFromONNX(np.frombuffer(weights.model_bytes(DETECTOR), np.uint8))
    net.setInput(blob, "input")
    names = list(net.getUnconnectedOutLayersNames())
    reference = dict(zip(names, net.forward(names)))
    with torch.inference_mode():
        ours = detector.net(torch.from_numpy(blob))
    for name, value in zip(read_onnx(weights.model_bytes(DETECTOR)).outputs, ours):
        np.testing.assert_allclose(value.numpy().reshape(reference[name].shape), reference[name], atol=1e-4)

    recognizer = TorchSFace(weights.model_entry(RECOGNIZER), weights.model_bytes(RECOGNIZER), "cpu")
    crops = np.random.default_rng(0).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    net = cv2.dnn.readNetFromONNX(np.frombuffer(weights.model_bytes(RECOGNIZER), np.uint8))
    net.setInput(crops, "data")
    reference = np.asarray(net.forward()).reshape(3, -1)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    ours = recognizer.embed_tensor(torch.from_numpy(crops)).numpy()
    assert np.min(np.sum(ours * reference, axis=1)) > 0.99999


def _pairs_of(results_a, results_b):
    for faces_a, faces_b in zip(results_a, results_b):
        assert len(faces_a) == len(faces_b)
        yield from zip(faces_a, faces_b)


def test_detections_and_embeddings_match_the_cv2_path(photos, both_paths):
    reference, ours = both_paths
    assert sum(len(f) for f in reference) >= 20  # the photos really hold faces
    for name, faces_a, faces_b in zip(photos, reference, ours):
        assert len(faces_a) == len(faces_b), name
    for a, b in _pairs_of(reference, ours):
        assert np.abs(np.subtract(a.box, b.box)).max() <= 1.0
        assert np.abs(a.landmarks - b.landmarks).max() <= 1.0
        assert abs(a.score - b.score) < 1e-3
        assert float(a.embedding @ b.embedding) >= 0.999
        assert np.linalg.norm(b.embedding) == pytest.approx(1.0, abs=1e-5)
        assert b.crop.shape == (112, 112, 3) and b.crop.dtype == np.uint8
        assert np.abs(a.crop.astype(int) - b.crop.astype(int)).mean() < 0.5
        assert b.quality == pytest.approx(a.quality, abs=0.01)


def test_same_match_decisions_as_the_cv2_path(pipeline, both_paths):
    """Every pair of faces across the photos: same or different person, as the cv2 path decides."""
    emb_a = np.stack([f.embedding for faces in both_paths[0] for f in faces])
    emb_b = np.stack([f.embedding for faces in both_paths[1] for f in faces])
    threshold = pipeline.threshold
    decisions_a, decisions_b = emb_a @ emb_a.T >= threshold, emb_b @ emb_b.T >= threshold
    pairs = list(itertools.combinations(range(len(emb_a)), 2))
    same = sum(decisions_a[i, j] for i, j in pairs)
    assert 0 < same < len(pairs)  # both kinds of pair are there
    assert all(decisions_a[i, j] == decisions_b[i, j] for i, j in pairs)
    # ... and every face's nearest other face is the same one.
    sims_a, sims_b = emb_a @ emb_a.T - 2 * np.eye(len(emb_a)), emb_b @ emb_b.T - 2 * np.eye(len(emb_b))
    assert np.array_equal(sims_a.argmax(1), sims_b.argmax(1))


def test_batch_equals_one_by_one(torch_pipeline, photos, both_paths):
    imgs = list(photos.values())
    batched = both_paths[1]
    for img, faces in zip(imgs, batched):
        alone = torch_pipeline.process(img)
        assert len(alone) == len(faces)
        for a, b in zip(alone, faces):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            assert float(a.embedding @ b.embedding) > 0.99999


def test_encoded_batch_decodes_on_threads_and_keeps_bad_files_apart(torch_pipeline, pipeline, photos):
    datas = [bgr_to_jpeg(photos["t1_640x480"], 95), b"not an image", bgr_to_jpeg(photos["astronaut"], 95)]
    results = torch_pipeline.process_encoded(datas)
    assert isinstance(results[1], ImageDecodeError) and results[1].code == "unsupported_format"
    from ml.decode import decode_image

    for data, faces in zip(datas[::2], results[::2]):
        reference = pipeline.process(decode_image(data).pixels)
        assert len(faces) == len(reference) > 0
        for a, b in zip(reference, faces):
            assert float(a.embedding @ b.embedding) >= 0.999


def test_device_setting():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "tpu:0"):
        with pytest.raises(ValueError, match="FACEINDEX_DEVICE"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    elif torch.cuda.device_count() < 64:
        with pytest.raises(ValueError, match="visible"):
            resolve_device("cuda:63")


def test_out_of_memory_splits_the_batch_then_falls_back_without_losing_items():
    """A device that only fits 2 items, and one item it can never run: every item still comes back."""
    calls = []

    def run(items):
        calls.append(list(items))
        if len(items) > 2 or 7 in items:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [("device", i) for i in items]

    results = run_split_on_failure(list(range(9)), run, lambda items: [("cpu", i) for i in items])
    assert [i for _, i in results] == list(range(9))
    assert [where for where, i in results if i == 7] == ["cpu"]
    assert all(where == "device" for where, i in results if i != 7)
    assert max(len(c) for c in calls[1:]) <= 5  # retried smaller

    def broken(items):
        raise ValueError("a bug, not the device")

    with pytest.raises(ValueError, match="a bug"):
        run_split_on_failure([1, 2], broken, lambda items: items)


def test_malformed_onnx_is_a_clear_model_file_error():
    from ml.errors import ModelFileError

    data = weights.model_bytes(DETECTOR)
    for broken in (data[: len(data) // 2], b"\x0f\xff", b""):
        with pytest.raises(ModelFileError, match="ONNX"):
            read_onnx(broken)


def test_lost_gpu_errors_count_as_device_failures():
    from ml.torch_models.device import is_device_failure

    assert is_device_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_device_failure(torch.cuda.OutOfMemoryError("out of memory"))
    assert not is_device_failure(RuntimeError("shape mismatch"))
