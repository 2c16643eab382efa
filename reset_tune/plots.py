"""PNG plots for reports: training curves (validation accuracy, loss, memorisation, with reset
events) and a search's comparison of its two arms (resetting and r = 0)."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reset_tune import names
from reset_tune.atomic import write_bytes_atomic

if TYPE_CHECKING:  # for annotations only: `tracking` renders curves and must not load the engine
    from matplotlib.axes import Axes

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
    from matplotlib.ticker import PercentFormatter
    from matplotlib.transforms import blended_transform_factory

    fig = Figure(figsize=(8, 9.5))
    axes = fig.subplots(3, 1, sharex=True)
    panels = (
        (names.VAL_ACC, "validation accuracy\n(noisy labels)"),
        (names.VAL_LOSS, "validation loss (CE)"),
        (names.MEMORISATION, "memorisation of wrong labels"),
    )
    for i, (label, result) in enumerate(results.items()):
        color = _COLORS[i % len(_COLORS)]
        steps = [h[names.STEP] for h in result.history]
        resets = "" if result.armed_step is None else f", {result.num_resets} resets"
        legend = f"{label}: clean test acc {100 * result.test_acc:.1f} %{resets}"
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
    axes[0].yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    axes[-1].set_xlabel("step")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[2].axhline(0.0, color="0.6", lw=0.6)
    styles = [
        Line2D([], [], color="0.3", lw=1.4, label="true memorisation fraction (injected noise)"),
        Line2D(
            [], [], color="0.3", ls="--", lw=1.2, label="train − val acc (noisy labels, label-free)"
        ),
        Line2D([], [], color="0.3", ls=":", lw=1.2, label="memorisation onset (label-free)"),
    ]
    axes[2].legend(handles=styles, loc="upper left", fontsize=7)
    # What the marks on the accuracy panel mean, once, whatever the runs.
    marks = [
        Line2D([], [], color="0.3", marker="o", ls="", ms=6, label="θbest (the kept checkpoint)"),
        Line2D([], [], color="0.3", marker="|", ls="", ms=9, label="a reset (one tick each)"),
        Line2D([], [], color="0.3", ls="--", lw=0.8, label="resetting armed"),
    ]
    axes[1].legend(handles=marks, loc="upper left", fontsize=7)
    fig.suptitle(title or "training curves", fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def write_curves(path: str | Path, results: Mapping[str, TrainResult], *, title: str = "") -> Path:
    return write_bytes_atomic(path, render_curves(results, title=title))


@dataclass(frozen=True)
class ArmPoint:
    """One trial in `render_comparison`: its short label, arm, r, objective and test accuracy."""

    label: str  # e.g. "4" for trial-0004
    resets: bool
    reset_prob: float
    objective: float
    test_acc: float | None
    mark: str = ""  # "" | "best" | "best r=0" | "best, best r=0"


def render_comparison(
    points: Sequence[ArmPoint], *, objective_metric: str, title: str, gain: float | None = None
) -> bytes:
    """Both arms side by side: every complete trial as a labelled dot (clean test accuracy and
    the objective, in %, by arm; test accuracy against r), each arm's spread (its range as a
    bar, its mean as a line), the winners starred, and the gain in the title."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, PercentFormatter

    as_percent = objective_metric == names.METRIC_VAL_ACC
    fig = Figure(figsize=(14, 5), layout="constrained")
    ax_test, ax_obj, ax_r = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.4]})
    arms = ((0, "r = 0", False, "tab:red"), (1, "resetting", True, "tab:blue"))

    def scaled(value: float) -> float:
        return 100 * value

    def by_arm(ax: Axes, key: str, percent: bool, ylabel: str) -> None:
        for x, _name, resets, color in arms:
            arm = [p for p in points if p.resets == resets and getattr(p, key) is not None]
            values = [scaled(getattr(p, key)) if percent else getattr(p, key) for p in arm]
            if not values:
                continue
            # The arm's spread: its range as a bar, its mean as a short line.
            ax.vlines(x, min(values), max(values), color=color, lw=6, alpha=0.18)
            mean = sum(values) / len(values)
            ax.hlines(mean, x - 0.22, x + 0.22, color=color, lw=1.5)
            # Neighbours in value go to different columns (by rank), so close values and
            # their labels stay apart; a winner's longer label goes on its left.
            ranked = sorted(zip(values, arm, strict=True), key=lambda pair: pair[0])
            for rank, (value, point) in enumerate(ranked):
                dx = (rank % 4 - 1.5) * 0.1
                star = bool(point.mark)
                ax.plot(x + dx, value, "*" if star else "o", color="gold" if star else color,
                        mec="black" if star else color, ms=15 if star else 6, zorder=3)  # fmt: skip
                ax.annotate(_point_text(point), (x + dx, value), xytext=(-8 if star else 5, 2),
                            ha="right" if star else "left", textcoords="offset points",
                            fontsize=7)  # fmt: skip
        ticks = []
        for _x, name, resets, _color in arms:
            n = sum(p.resets == resets for p in points)
            ticks.append(f"{name}\n({n} trial{'' if n == 1 else 's'})")
        ax.set_xticks([a[0] for a in arms], ticks)
        ax.set_xlim(-0.75, 1.6)
        ax.margins(y=0.12)  # room for the stars and their labels at the top and bottom
        ax.set_ylabel(ylabel)
        if percent:
            ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
        ax.grid(axis="y", alpha=0.3)

    by_arm(ax_test, "test_acc", True, "clean test accuracy of θbest")
    ax_test.set_title("reported: clean test accuracy", fontsize=10)
    by_arm(ax_obj, "objective", as_percent, f"{objective_metric} at θbest")
    ax_obj.set_title(f"searched: {objective_metric} (objective)", fontsize=10)

    resetting = [p for p in points if p.resets and p.test_acc is not None]
    baseline = [scaled(p.test_acc) for p in points if not p.resets and p.test_acc is not None]
    if baseline:
        ax_r.axhspan(min(baseline), max(baseline), color="tab:red", alpha=0.12)
        ax_r.axhline(sum(baseline) / len(baseline), color="tab:red", ls="--", lw=1)
    for point in resetting:
        value = scaled(point.test_acc or 0.0)
        star = bool(point.mark)
        ax_r.plot(point.reset_prob, value, "*" if star else "o", color="gold" if star else
                  "tab:blue", mec="black" if star else "tab:blue", ms=15 if star else 6,
                  zorder=3)  # fmt: skip
        ax_r.annotate(_point_text(point), (point.reset_prob, value), xytext=(-8 if star else 5, 2),
                      ha="right" if star else "left", textcoords="offset points",
                      fontsize=7)  # fmt: skip
    if resetting:
        rs = [p.reset_prob for p in resetting]
        low, high = min(rs), max(rs)
        ax_r.set_xscale("log")
        ax_r.set_xlim(low / 1.6, high * 1.6)
        # Major ticks only (1, 2, 5 per decade), plainly written: no crowded minor labels.
        ax_r.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_r.xaxis.set_major_formatter(_plain_tick)
        ax_r.xaxis.set_minor_locator(NullLocator())
        ax_r.xaxis.set_minor_formatter(NullFormatter())
    ax_r.margins(y=0.12)
    ax_r.yaxis.set_major_formatter(PercentFormatter(decimals=None))
    ax_r.set_xlabel("reset probability r per step (log scale)")
    ax_r.set_ylabel("clean test accuracy of θbest")
    ax_r.set_title("resetting trials by r; r = 0 trials' range shaded", fontsize=10)
    ax_r.grid(alpha=0.3)
    legend = [
        Line2D([], [], color="tab:blue", marker="o", ls="", label="resetting trial (number)"),
        Line2D([], [], color="tab:red", marker="o", ls="", label="r = 0 trial (number)"),
        Line2D(
            [],
            [],
            color="gold",
            mec="black",
            marker="*",
            ls="",
            ms=12,
            label="best trial / best r = 0 trial",
        ),  # fmt: skip
        Line2D([], [], color="0.5", lw=6, alpha=0.3, label="arm's range"),
        Line2D([], [], color="0.3", lw=1.5, label="arm's mean"),
        Line2D([], [], color="tab:red", ls="--", lw=1, label="r = 0 mean"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncol=6, fontsize=8, frameon=False)
    headline = title
    if gain is not None:
        headline += f" — gain of resetting: {100 * gain:+.1f} points clean test accuracy"
    fig.suptitle(headline, fontsize=11)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _point_text(point: ArmPoint) -> str:
    return f"{point.label} ({point.mark})" if point.mark else point.label


def _plain_tick(value: float, _position: int) -> str:
    """A reset probability as written in a spec: 0.001, 0.02 (no 10^-3)."""
    return f"{value:g}"
