"""Plain-text rendering of a job's per-identity report, for the terminal."""


def format_report(report: dict) -> str:
    summary, identities = report["summary"], report["report"]
    lines = [
        f"Job {summary['job_id']}: {summary['status']} — {summary['images']} images, "
        f"{summary['processed']} indexed, {summary['failed']} failed, {summary['faces']} faces "
        f"({summary['known_faces']} known, {summary['unknown_faces']} unknown"
        f"{', of which ' + str(summary['low_quality_faces']) + ' too small or blurred to name' if summary.get('low_quality_faces') else ''})",
        "",
        "Per-identity report",
        "===================",
    ]
    if not identities["identities"]:
        lines.append("(no known person found)")
    for row in identities["identities"]:
        lines.append(f"{row['name']}: {row['appearances']} appearances in {row['images']} images, "
                     f"mean similarity {row['mean_similarity']}")
        for face in row["faces"]:
            box = ", ".join(f"{v:.0f}" for v in face["box"])
            masked = "  (masked)" if face.get("mask") in ("mask", "mask_incorrect") else ""
            lines.append(f"    {face['image']:<40} similarity {face['similarity']:.3f}  box [{box}]{masked}")
    if summary["failures"]:
        lines += ["", "Failed images", "============="]
        for failure in summary["failures"]:
            lines.append(f"    {failure['original_name']}: {failure['error_code']} — {failure['error_message']}")
    return "\n".join(lines) + "\n"
