"""The worker's batch on the torch path (as on a GPU worker, here run on the CPU) against the cv2 path.

A GPU worker (FACEINDEX_DEVICE=auto with a GPU, or cuda[:i]) loads
TorchFacePipeline and hands it the whole batch; the CPU worker runs cv2.dnn
image by image. Both must produce the same faces for the same images.
"""
from __future__ import annotations

import pytest
from django.test import override_settings

from backend.core import pipeline as core_pipeline
from backend.jobs import processing
from backend.jobs.models import Image, Job
from ml.decode import decode_image
from ml.package_images import insightface_images_dir


def _works():
    paths = [insightface_images_dir() / "t1.jpg", insightface_images_dir() / "Tom_Hanks_54745.png"]
    # Unsaved rows: the worker reads only the job's options (no age/sex here).
    return [processing.Work(image=Image(job=Job(options={})), decoded=decode_image(p.read_bytes())) for p in paths]


@pytest.mark.django_db
def test_worker_batch_on_the_torch_path_matches_the_cv2_path():
    from ml.torch_models.pipeline import TorchFacePipeline

    torch_pipeline = TorchFacePipeline.from_manifest(device="cpu", threads=2)
    on_device, on_cpu = _works(), _works()
    assert processing._embed_on_device(torch_pipeline, on_device)
    assert processing._detect_and_embed(on_cpu) == on_cpu  # the worker's own (cv2) pipeline
    assert [len(w.faces) for w in on_device] == [len(w.faces) for w in on_cpu] == [6, 1]
    for a, b in zip(on_cpu, on_device):
        assert b.seconds["embed"] > 0
        for face_a, face_b in zip(a.faces, b.faces):
            assert abs(face_a.box[0] - face_b.box[0]) <= 1 and abs(face_a.box[1] - face_b.box[1]) <= 1
            assert float(face_a.embedding @ face_b.embedding) >= 0.999


def test_device_setting_picks_the_path():
    with override_settings(FACEINDEX_DEVICE="cpu"):
        assert core_pipeline._torch_device() is None
    import torch

    if torch.cuda.is_available():
        with override_settings(FACEINDEX_DEVICE="cuda"):
            assert core_pipeline._torch_device().type == "cuda"
    else:
        with override_settings(FACEINDEX_DEVICE="auto"):
            assert core_pipeline._torch_device() is None  # no GPU: the cv2 CPU path
        with override_settings(FACEINDEX_DEVICE="cuda:0"), pytest.raises(ValueError, match="no CUDA GPU"):
            core_pipeline._torch_device()
