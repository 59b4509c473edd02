"""python -m ml.eval verify|fusion|identify|detect|embed|attributes|openset|calibrate — progress on stderr, JSON as the last stdout line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ml.eval.images import FACE_CHOICES
from ml.openset import DEFAULT_TARGET_FPIR


def _pipeline(args):
    from ml.pipeline import FacePipeline

    return FacePipeline.from_manifest(detector=args.detector, recognizer=args.model,
                                      flip_tta=args.flip_tta, landmarks=args.landmarks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--model", help="recognizer id from weights/manifest.toml (default: manifest default)")
        p.add_argument("--detector", help="detector id from weights/manifest.toml")
        p.add_argument("--landmarks", help="a second detector whose landmarks replace the detector's ('' = none)")
        p.add_argument("--flip-tta", dest="flip_tta", action=argparse.BooleanOptionalAction, default=None,
                       help="average the embeddings of each crop and its mirror image")
        p.add_argument("--json", type=Path, help="also write the full report here")
        p.add_argument("--no-cache", dest="cache", action="store_false",
                       help="embed every image again instead of reusing .cache/ml-eval")

    p = sub.add_parser("verify", help="LFW pairs.txt verification")
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--plot", type=Path, help="ROC curve PNG")
    p.add_argument("--face", choices=FACE_CHOICES, default="largest",
                   help="which detected face stands for a photo (centre: LFW-style photos centred on the named person)")
    common(p)
    p = sub.add_parser("fusion", help="pairs verification with extra recognizers, alone and score-fused")
    p.add_argument("--pairs", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--with", dest="extra", default="dlib,facenet",
                   help="extra recognizers fused with the pipeline's (comma-separated: dlib, facenet)")
    p.add_argument("--face", choices=FACE_CHOICES, default="centre")
    p.add_argument("--openset", action="store_true",
                   help="also run the open-set protocol on --root with fused embeddings (embeds every photo)")
    p.add_argument("--gallery-sizes", default="300,1500")
    p.add_argument("--target-fpir", type=float, default=DEFAULT_TARGET_FPIR)
    common(p)
    p = sub.add_parser("identify", help="leave-one-out 1-NN over folder-per-identity")
    p.add_argument("--root", type=Path, required=True)
    common(p)
    p = sub.add_parser("detect", help="WIDER FACE-format detection recall/precision/AP@0.5")
    p.add_argument("--gt", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True)
    common(p)
    p = sub.add_parser("attributes", help="a sex classifier on photos labelled in a path,sex CSV")
    p.add_argument("--root", type=Path, required=True, help="folder the CSV's paths are relative to")
    p.add_argument("--labels", type=Path, required=True, help="CSV with header path,sex (M/F)")
    p.add_argument("--sex-model", help="sex classifier id from weights/manifest.toml (default: manifest default)")
    p.add_argument("--plots", type=Path, help="folder for roc.png, confusion.png, misclassified.png, activation_maps.png")
    p.add_argument("--cache-dir", type=Path, help="per-photo face cache (default ~/.cache/faceindex/faces)")
    common(p)
    p = sub.add_parser("openset", help="archive-style open-set identification (enroll, then name or reject)")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--target-fpir", type=float, default=DEFAULT_TARGET_FPIR,
                   help="the FPIR the shipped rule aims at (deployments: FACEINDEX_TARGET_FPIR)")
    p.add_argument("--gallery-sizes", default="1500",
                   help="also measure with the gallery grown by distractor people to these sizes (comma-separated)")
    p.add_argument("--margin", type=float, default=0.03,
                   help="ambiguity margin between the two best identities (the deployment default, FACEINDEX_AMBIGUITY_MARGIN)")
    p.add_argument("--masked-probes", dest="masked_probes", action="store_true",
                   help="draw a synthetic mask (held-out fabric) on every probe photo; enroll bare + masked-probe templates")
    p.add_argument("--templates-per-person", default="",
                   help="also score k = these (comma-separated, e.g. 1,2,3) enrolled photos per person, on common probes")
    p.add_argument("--degraded-probes", dest="degraded_probes", action="store_true",
                   help="also score probes shrunk or blurred (one way per photo) at a range of face-quality cuts")
    common(p)
    p = sub.add_parser("calibrate", help="per-pair impostor score tail (manifest impostor_tail)")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--masked-probes", dest="masked_probes", action="store_true",
                   help="also the tail for masked probes (manifest masked_impostor_tail), as openset --masked-probes draws them")
    common(p)
    p = sub.add_parser("embed", help="export embeddings as JSON")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot", type=Path, help="2-D t-SNE/PCA PNG coloured by identity")
    common(p)
    args = parser.parse_args(argv)

    pipeline = _pipeline(args)
    if args.command == "verify":
        from ml.eval.verify import run_verify

        report = run_verify(pipeline, args.pairs, args.root, plot=args.plot, face=args.face, cache=args.cache)
    elif args.command == "fusion":
        from ml.eval.fusion import run_fusion

        report = run_fusion(pipeline, args.pairs, args.root, extra=[n for n in args.extra.split(",") if n.strip()],
                            face=args.face, cache=args.cache, openset=args.openset,
                            gallery_sizes=tuple(int(v) for v in args.gallery_sizes.split(",") if v.strip()),
                            target_fpir=args.target_fpir)
    elif args.command == "openset":
        from ml.eval.openset import default_rule, run_openset

        sizes = tuple(int(v) for v in args.gallery_sizes.split(",") if v.strip())
        report = run_openset(pipeline, args.root, rule=default_rule(pipeline, args.target_fpir),
                             masked_rule=default_rule(pipeline, args.target_fpir, masked=True), gallery_sizes=sizes,
                             margin=args.margin, baseline_threshold=pipeline.threshold, cache=args.cache,
                             masked_probes=args.masked_probes,
                             degraded_probes=args.degraded_probes,
                             templates_per_person=tuple(int(v) for v in args.templates_per_person.split(",") if v.strip()))
        report["target_fpir"] = args.target_fpir
    elif args.command == "calibrate":
        from ml.eval.calibrate import run_calibrate

        report = run_calibrate(pipeline, args.root, cache=args.cache, masked_probes=args.masked_probes)
    elif args.command == "identify":
        from ml.eval.identify import run_identify

        report = run_identify(pipeline, args.root)
    elif args.command == "attributes":
        from ml.eval.attributes import run_attributes

        report = run_attributes(pipeline, args.root, args.labels, model_id=args.sex_model, plots=args.plots,
                                cache_dir=args.cache_dir)
    elif args.command == "detect":
        from ml.eval.detect import run_detect

        report = run_detect(pipeline, args.gt, args.root)
    else:
        from ml.eval.embed import run_embed

        report = run_embed(pipeline, args.root, args.out, plot=args.plot)
    report = {"command": args.command, "detector": pipeline.detector_id, "landmarks": pipeline.landmarker_id,
              "recognizer": pipeline.recognizer_id, "flip_tta": pipeline.flip_tta, **report}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    _print_summary(report)
    print(json.dumps(report))
    return 0


def _print_summary(report: dict) -> None:
    """A human-readable digest on stderr; stdout's last line stays the JSON."""
    skip = {"no_face_images", "fold_accuracies", "fold_thresholds", "by_gallery_size", "by_templates_per_person",
            "degraded_probes"}
    for key, value in report.items():
        if key not in skip:
            print(f"{key}: {value}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
