"""The theory against the Langevin simulator: mean first-passage times and the optimal rate.

For each Péclet number of the table of docs/method.md §6.2, simulates walkers
(`reset_tune.recommend.langevin`) at five reset rates from ρ*/4 to 4ρ* and prints measured against
closed-form T·D/L², then on a fine grid (0.4ρ* to 2.5ρ*) the empirical optimum (a parabola through
the measured minimum and its neighbours, in log ρ) against the numerical ρ*,
and writes a plot of both curves.

    .venv/bin/python benchmarks/recommend/theory_check.py               # ~5 min
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import numpy as np  # noqa: E402

from reset_tune.recommend import langevin, theory  # noqa: E402

PECLETS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 0.9)
FACTORS = np.array([0.25, 0.5, 1.0, 2.0, 4.0])  # the closed form over a 16x range of rates
FINE = np.geomspace(0.4, 2.5, 9)  # where the optimum is located


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--walkers", type=int, default=4000)
    parser.add_argument("--out", default=str(HERE.parent / "results" / "theory_check"))
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, scans = [], []
    print(f"{'Pe':>5} {'rho*':>6} {'emp. opt':>8} | measured vs closed form at rho*/4 ... 4 rho*")
    for k, pe in enumerate(PECLETS):
        optimum = theory.optimal_scaled_rate(pe)
        scan = langevin.scan_rates(pe, optimum * FACTORS, walkers=args.walkers, seed=100 * k)
        fine = langevin.scan_rates(pe, optimum * FINE, walkers=args.walkers, seed=100 * k + 1)
        scans.append(scan)
        z = (scan.measured - scan.closed_form) / scan.standard_errors
        rows.append({
            "pe": pe, "optimal_scaled_rate": optimum, "empirical_optimum": fine.empirical_optimum,
            "rates": scan.rates.tolist(), "measured": scan.measured.tolist(),
            "standard_errors": scan.standard_errors.tolist(),
            "closed_form": scan.closed_form.tolist(), "z_scores": z.tolist(),
        })  # fmt: skip
        pairs = zip(scan.measured, scan.closed_form, strict=True)
        cells = "  ".join(f"{m:.3f}/{c:.3f}" for m, c in pairs)
        print(f"{pe:5.2f} {optimum:6.3f} {fine.empirical_optimum:8.3f} | {cells}  "
              f"max |z| {np.abs(z).max():.1f}", flush=True)  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for scan in scans:
        dense = np.geomspace(scan.rates[0], scan.rates[-1], 100)
        line = ax.plot(dense, [theory.scaled_mfpt(r, scan.pe) for r in dense], lw=1)[0]
        ax.errorbar(scan.rates, scan.measured, yerr=2 * scan.standard_errors, fmt="o", ms=3,
                    color=line.get_color(), label=f"Pe = {scan.pe:g}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("reset rate  r L² / D")
    ax.set_ylabel("mean first-passage time  T D / L²")
    ax.set_title("closed form (lines) vs Langevin simulation (points, ±2 SE)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
