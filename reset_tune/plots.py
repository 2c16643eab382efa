"""PNG plots of training curves: validation accuracy, loss and memorisation with reset events."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from reset_tune import names
from reset_tune.atomic import write_bytes_atomic

if TYPE_CHECKING:  # for annotations only: `tracking` renders curves and must not load the engine
    from reset_tune.engine.result import TrainResult

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def render_curves(results: Mapping[str, TrainResult], *, title: str = "") -> bytes:
    """One column of panels (val acc, val loss, memorisation) with every run overlaid.

    Resets are marked as ticks along the top of the accuracy panel; the moment resetting armed
    is a dashed vertical line; θbest is a dot. The memorisation panel shows the true share of
    wrong labels fitted (solid; injected noise only) and the label-free signal, train − val
    accuracy on the noisy labels (dashed), with the detected onset of memorisation as a dotted
    vertical line on every panel.
    """
    # A bare Figure, not pyplot: no global backend switch, no figure left in pyplot's list.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=(8, 9))
    axes = fig.subplots(3, 1, sharex=True)
    panels = (
        (names.VAL_ACC, "validation accuracy (noisy labels)"),
        (names.VAL_LOSS, "validation loss (CE)"),
        (names.MEMORISATION, "memorisation of wrong labels"),
    )
    for i, (label, result) in enumerate(results.items()):
        color = _COLORS[i % len(_COLORS)]
        steps = [h[names.STEP] for h in result.history]
        legend = f"{label}: test acc {result.test_acc:.3f}, {result.num_resets} resets"
        for ax, (key, _) in zip(axes, panels, strict=True):
            ax.plot(
                steps,
                [h[key] for h in result.history],
                color=color,
                lw=1.4,
                label=legend if ax is axes[0] else None,
            )
            if result.armed_step is not None:
                ax.axvline(result.armed_step, color=color, ls="--", lw=0.8)
            if result.memorisation_step is not None:
                ax.axvline(result.memorisation_step, color=color, ls=":", lw=1.2)
        gap = [h.get(names.MEMORISATION_GAP, math.nan) for h in result.history]
        if any(math.isfinite(g) for g in gap):
            axes[2].plot(steps, gap, color=color, ls="--", lw=1.2)
        best = [h for h in result.history if h[names.STEP] == result.best_step]
        if best:
            axes[0].plot(result.best_step, best[0][names.VAL_ACC], "o", color=color, ms=6)
        if result.reset_steps:
            # x in steps, y in axes fraction: one row of ticks per run along the panel's top.
            row = blended_transform_factory(axes[0].transData, axes[0].transAxes)
            axes[0].plot(
                result.reset_steps,
                [0.97 - 0.05 * i] * len(result.reset_steps),
                "|",
                color=color,
                ms=7,
                alpha=0.7,
                transform=row,
            )
    for ax, (_, ylabel) in zip(axes, panels, strict=True):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[2].axhline(0.0, color="0.6", lw=0.6)
    styles = [
        Line2D([], [], color="0.3", lw=1.4, label="true memorisation fraction (injected noise)"),
        Line2D(
            [], [], color="0.3", ls="--", lw=1.2, label="train − val acc (noisy labels, label-free)"
        ),
        Line2D([], [], color="0.3", ls=":", lw=1.2, label="memorisation onset (label-free)"),
        Line2D([], [], color="0.3", ls="--", lw=0.8, label="resetting armed"),
    ]
    axes[2].legend(handles=styles, loc="upper left", fontsize=7)
    if title:
        axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_curves(path: str | Path, results: Mapping[str, TrainResult], *, title: str = "") -> Path:
    return write_bytes_atomic(path, render_curves(results, title=title))
