"""The progress chart of ``sb3-iter-ckpt plot``: a metric across iterations, placeholders marked, the best circled.

Drawing only, with matplotlib (the ``[plot]`` extra, imported on first use, ``Agg`` backend): it takes
the checkpoints as given and writes one image file. Reading the repository and checking the user's
arguments are the CLI's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["image_formats", "plot_progress"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_formats() -> set[str]:
    """The file extensions (without the dot) matplotlib can write; ``ImportError`` without matplotlib."""
    plt = _pyplot()
    formats = set(plt.figure().canvas.get_supported_filetypes())
    plt.close("all")
    return formats


def _plain(text: Any) -> str:
    """Text shown as written: matplotlib would parse "$...$" (from a record or a flag) as math, or fail to."""
    return str(text).replace("$", r"\$")


def _mark_placeholders(ax: Any, placeholders: Sequence[Any]) -> None:
    for j, c in enumerate(placeholders):
        ax.axvline(
            c.iteration, color="tab:red", alpha=0.35, linestyle="--", label="placeholder (no model)" if j == 0 else None
        )
        ax.annotate(
            _plain(c.reason),
            (c.iteration, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="tab:red",
        )


def plot_progress(out: Path, checkpoints: Sequence[Any], metric: str, best: Any, title: str) -> tuple[int, int]:
    """Draw ``metric`` of ``checkpoints`` (``Checkpoint`` objects) into the image file ``out``.

    :param best: The best checkpoint (circled), or None.
    :param title: Shown above the chart (as text, never as math).
    :return: How many points and how many placeholders the chart shows. An ``OSError`` of the
        writing is the caller's to report.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    try:
        pts = [(c.iteration, c.score(metric)) for c in checkpoints if c.has_model or c.reason == "pruned"]
        pts = [(i, s) for i, s in pts if s is not None]
        if pts:
            # NaN where an iteration has no value, so the line breaks there instead of bridging a placeholder
            xs = [c.iteration for c in checkpoints]
            values = dict(pts)
            ax.plot(xs, [values.get(i, float("nan")) for i in xs], marker="o", label=_plain(metric))
        holes = [c for c in checkpoints if not c.has_model and c.reason != "pruned"]
        _mark_placeholders(ax, holes)
        if best is not None:
            ax.scatter(
                [best.iteration],
                [best.score(metric)],
                s=160,
                facecolors="none",
                edgecolors="tab:green",
                linewidths=2,
                label=f"best (iteration {best.iteration})",
                zorder=3,
            )
        ax.set_xlabel("walk-forward iteration")
        ax.set_ylabel(_plain(metric))
        ax.set_title(_plain(title))
        ax.grid(alpha=0.3)
        if pts or holes:
            ax.legend(loc="best")
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    finally:
        plt.close(fig)
    return len(pts), len(holes)
