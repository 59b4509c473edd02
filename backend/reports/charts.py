"""PNG charts for reports (matplotlib, headless Agg backend)."""
from __future__ import annotations

import io


def appearances_per_month_png(name: str, per_month: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # Figure, not pyplot: no global state across requests

    figure = Figure(figsize=(8, 3.2), dpi=100)
    axes = figure.subplots()
    months = [row["month"] for row in per_month]
    counts = [row["appearances"] for row in per_month]
    if months:
        axes.bar(range(len(months)), counts, color="#3b6ea8")
        step = max(1, len(months) // 12)
        axes.set_xticks(range(0, len(months), step), months[::step], rotation=45, ha="right", fontsize=8)
    else:
        axes.text(0.5, 0.5, "no dated appearances", ha="center", va="center", transform=axes.transAxes)
        axes.set_xticks([])
    axes.set_ylabel("appearances")
    axes.set_title(f"{name}: appearances per month (EXIF date)")
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
