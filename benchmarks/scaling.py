"""MPI scaling of pair_style sigmapot (mean-force MD steps), with SNAP as the machine's reference.

Strong scaling: the same 16,000-atom diamond Si cell on 1 and 2 ranks, efficiency t1 / (2 t2).
Weak scaling: 8,000 atoms per rank (1 rank: 8,000 atoms; 2 ranks: 16,000), efficiency t1 / t2.
Each configuration runs in its own `mpirun -np R` process (1 thread per rank), alternating over
--repeats rounds; the best round is kept.  SNAP (Zuo et al. 2020 Si) is scaled the same way once:
how far a potential with no Python or torch in the loop scales on this machine.

    python benchmarks/scaling.py [--model FILE.pt] [--steps 3] [--repeats 3]
Writes benchmarks/results/scaling.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS, model_arguments, pair_commands, run_worker, selected_model, write_results

STRONG = (10, 10, 20)                  # 16,000 atoms
WEAK = {1: (10, 10, 10), 2: (10, 10, 20)}  # 8,000 atoms per rank


def launch(ranks: int, cells: tuple, pair: str, steps: int) -> float:
    """Seconds per step of one `mpirun -np ranks` worker process."""
    return run_worker(__file__, ranks, {"cells": cells, "pair": pair, "steps": steps})["seconds_per_step"]


def worker(spec: str) -> None:
    from mpi4py import MPI

    from common import time_md

    job = json.loads(spec)
    timing = time_md(job["cells"], job["pair"], job["steps"])
    if MPI.COMM_WORLD.rank == 0:
        print(json.dumps(timing), flush=True)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    names = list(results)
    strong = [results[n]["strong_efficiency"] for n in names]
    weak = [results[n].get("weak_efficiency", float("nan")) for n in names]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], strong, width=0.4, label="strong, 16k atoms")
    ax.bar([i + 0.2 for i in x], weak, width=0.4, label="weak, 8k atoms/rank")
    ax.axhline(0.9, color="k", ls="--", lw=1, label="target 0.9")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("efficiency, 1 → 2 ranks")
    ax.set_ylim(0, 1.1)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    model_arguments(p)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker)
    model = selected_model(args)
    sigmapot = pair_commands("sigmapot", model)
    results = {}
    for name, pair, repeats, weak in (("sigmapot", sigmapot, args.repeats, True),
                                      ("snap", pair_commands("snap"), 1, False)):
        best: dict = {}
        for _ in range(repeats):
            runs = {"strong_1": (1, STRONG), "strong_2": (2, STRONG)}
            if weak:
                runs["weak_1"] = (1, WEAK[1])
            for key, (ranks, cells) in runs.items():
                best[key] = min(best.get(key, float("inf")), launch(ranks, cells, pair, args.steps))
        results[name] = {"seconds_per_step": best,
                         "strong_efficiency": best["strong_1"] / (2 * best["strong_2"])}
        if weak:  # 2 ranks x 8,000 atoms is the strong-scaling 2-rank run
            results[name]["weak_efficiency"] = best["weak_1"] / best["strong_2"]
    table = ["| potential | 1 rank, 16k (s/step) | 2 ranks, 16k (s/step) | strong eff. | 1 rank, 8k (s/step) | weak eff. |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = r["seconds_per_step"]
        weak_cols = (f"{s['weak_1']:.3f} | {r['weak_efficiency']:.3f}" if "weak_1" in s else "– | –")
        table.append(f"| {name} | {s['strong_1']:.3f} | {s['strong_2']:.3f} | {r['strong_efficiency']:.3f} | {weak_cols} |")
    write_results("scaling", {"model": str(model), "steps": args.steps, "repeats": args.repeats,
                              "results": results},
                  table, "MPI scaling, diamond Si, 1 thread per rank")
    plot(results, RESULTS / "scaling.png")


if __name__ == "__main__":
    main()
