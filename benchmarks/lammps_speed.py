"""LAMMPS MD cost of sigmapot against SNAP and quadratic SNAP (Zuo et al. 2020, Si) in the same run.

Each potential runs the same NVE segment of diamond Si (1 thread per rank), alternating potentials over
--repeats rounds so that the machine's load hits all of them alike; the best round is kept.  sigmapot is
timed in float64 and float32, with mean forces only (`uncertainty_every 0`) and with the uncertainty on
every step (`uncertainty_every 1`).  Reports us per atom-step per core and ratios to SNAP; the whole
measurement runs --runs times and the ratios are given as min / median / max over the runs.

    [mpirun -np K] python [-m mpi4py] benchmarks/lammps_speed.py [--model FILE.pt] [--cells 5,5,10 10,10,20] [--runs 3]
Writes benchmarks/results/lammps_speed.{json,md,png} (K > 1 ranks: lammps_speed_Kranks.*).  Under mpirun,
`-m mpi4py` makes an error on one rank stop all of them (else the others wait, each spinning a core).
"""
from __future__ import annotations

import argparse
import functools
import statistics

from mpi4py import MPI

from common import RESULTS, SNAP_STYLES, benchmark_models, best_of_alternating, pair_commands, time_md, write_results


# float32 mean-force step / SNAP step, and uncertainty step / mean-force step (float32)
TARGET_MEAN_OVER_SNAP = 0.09
TARGET_UNCERTAINTY_OVER_MEAN = 1.3


def spread(values: list) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def parse_cells(text: str) -> tuple:
    return tuple(int(v) for v in text.split(","))


def plot(results: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(next(iter(results.values()))["ratio_to_snap"])
    width = 0.8 / len(results)
    for k, (n, r) in enumerate(results.items()):
        ax.bar([i + k * width for i in range(len(names))], [r["ratio_to_snap"][m] for m in names],
               width=width, label=f"{n} atoms")
    ax.axhline(TARGET_MEAN_OVER_SNAP, color="k", ls="--", lw=1,
               label=f"target {TARGET_MEAN_OVER_SNAP}× SNAP (float32 mean)")
    ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(names))],
                  [m.replace("sigmapot_", "").replace("_", "\n") for m in names], fontsize=8)
    ax.set_ylabel("cost / SNAP cost (same run, median)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="exported model (default: the full recipe's architecture, see common.py)")
    p.add_argument("--cells", type=parse_cells, nargs="+", default=[(5, 5, 10), (10, 10, 20)],
                   help="diamond cells nx,ny,nz (8 atoms each); default 2,000 and 16,000 atoms")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds per run (best kept)")
    p.add_argument("--runs", type=int, default=3, help="whole measurements, reported as min/median/max")
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    models = benchmark_models(RESULTS / "models", args.model) if comm.rank == 0 else None
    models = comm.bcast(models)

    candidates = {s: pair_commands(s) for s in SNAP_STYLES}
    for dtype, path in models.items():
        candidates[f"sigmapot_{dtype}_mean"] = pair_commands("sigmapot", path, uncertainty_every=0)
        candidates[f"sigmapot_{dtype}_uncertainty"] = pair_commands("sigmapot", path, uncertainty_every=1)

    results = {}
    for cells in args.cells:
        natoms = {}

        def run(pair: str) -> float:
            timing = time_md(cells, pair, args.steps)
            natoms["n"] = timing["atoms"]
            return timing["seconds_per_step"]

        runs = []
        for _ in range(args.runs):
            best = best_of_alternating({k: functools.partial(run, v) for k, v in candidates.items()},
                                       args.repeats)
            cost = {k: 1e6 * v * comm.size / natoms["n"] for k, v in best.items()}  # us per atom-step per core
            runs.append({"us_per_atom_step_core": cost,
                         "ratio_to_snap": {k: v / cost["snap"] for k, v in cost.items()},
                         "uncertainty_over_mean": {d: cost[f"sigmapot_{d}_uncertainty"] / cost[f"sigmapot_{d}_mean"]
                                                   for d in models}})
        results[str(natoms["n"])] = {
            "cells": list(cells),
            "runs": runs,
            **{key: {k: statistics.median(r[key][k] for r in runs) for k in runs[0][key]}
               for key in ("us_per_atom_step_core", "ratio_to_snap", "uncertainty_over_mean")},
            "spread": {key: {k: spread([r[key][k] for r in runs]) for k in runs[0][key]}
                       for key in ("ratio_to_snap", "uncertainty_over_mean")},
        }
    if comm.rank != 0:
        return

    def fmt(r: dict) -> str:
        return f"{r['min']:.3f} / {r['median']:.3f} / {r['max']:.3f}"

    table = [f"{args.runs} runs, each the best of {args.repeats} alternating rounds; ratios min / median / max.",
             "", "| atoms | potential | µs/atom-step/core (median) | ratio to SNAP |", "|---|---|---|---|"]
    for n, r in results.items():
        for name, c in r["us_per_atom_step_core"].items():
            table.append(f"| {n} | {name} | {c:.1f} | {fmt(r['spread']['ratio_to_snap'][name])} |")
    table += ["", "| atoms | quantity | target | min / median / max |", "|---|---|---|---|"]
    for n, r in results.items():
        if "sigmapot_float32_mean" in r["ratio_to_snap"]:
            table.append(f"| {n} | float32 mean-force step / SNAP | ≤ {TARGET_MEAN_OVER_SNAP} | "
                         f"{fmt(r['spread']['ratio_to_snap']['sigmapot_float32_mean'])} |")
        for d in models:
            target = f"≤ {TARGET_UNCERTAINTY_OVER_MEAN}" if d == "float32" else "–"
            table.append(f"| {n} | {d} uncertainty step / mean-force step | {target} | "
                         f"{fmt(r['spread']['uncertainty_over_mean'][d])} |")
    name = "lammps_speed" if comm.size == 1 else f"lammps_speed_{comm.size}ranks"
    write_results(name, {"ranks": comm.size, "steps": args.steps, "repeats": args.repeats,
                                   "runs": args.runs,
                                   "models": {k: str(v) for k, v in models.items()}, "results": results},
                  table, f"LAMMPS MD cost, diamond Si, {comm.size} rank(s), 1 thread/rank")
    plot(results, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
