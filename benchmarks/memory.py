"""Peak memory per MPI rank of LAMMPS + pair_style sigmapot against system size, up to 1M atoms.

Diamond Si from 4,096 to 1,000,000 atoms; each size runs in its own `mpirun -np --ranks` process:
create the cell, run --steps NVE steps, then every rank reports its peak RSS (getrusage).  The
fixed cost (Python, torch, LAMMPS, the model) is measured in each process before atoms exist, so
the table separates it from the per-atom cost.  Target: <= 4 kB per atom at 1M atoms.

    python benchmarks/memory.py [--model FILE.pt] [--ranks 2] [--steps 2]
Writes benchmarks/results/memory.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS, model_arguments, pair_commands, run_worker, selected_model, write_results

SIZES = [(8, 8, 8), (16, 16, 16), (32, 32, 32), (50, 50, 50)]   # 4,096 ... 1,000,000 atoms


def worker(spec: str) -> None:
    import time

    from mpi4py import MPI

    from common import diamond_si, new_lammps, peak_rss_mb

    job = json.loads(spec)
    comm = MPI.COMM_WORLD
    lmp = new_lammps()
    # the model is loaded by pair_coeff: measure the fixed cost with it, on a one-cell system
    lmp.commands_string(f"units metal\nregion b block 0 1 0 1 0 1\ncreate_box 1 b\nmass 1 28.0855\n{job['pair']}")
    fixed = peak_rss_mb()
    lmp.command("clear")  # loaded plugins stay registered
    diamond_si(lmp, job["cells"], job["pair"])
    t0 = time.perf_counter()
    lmp.command(f"run {job['steps']}")
    seconds = time.perf_counter() - t0
    natoms = lmp.get_natoms()
    lmp.close()
    peaks = comm.gather(peak_rss_mb(), root=0)
    fixed = comm.gather(fixed, root=0)
    if comm.rank == 0:
        print(json.dumps({"atoms": natoms, "peak_rss_mb": peaks, "fixed_rss_mb": fixed,
                          "seconds": seconds}), flush=True)


def plot(rows: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atoms = [r["atoms"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(atoms, [r["kb_per_atom"] for r in rows], "o-", label="peak RSS (all ranks) / atoms")
    ax.loglog(atoms, [r["kb_per_atom_above_fixed"] for r in rows], "s-", label="above the fixed cost")
    ax.axhline(4.0, color="k", ls="--", lw=1, label="target 4 kB/atom")
    ax.set_xlabel("atoms")
    ax.set_ylabel("kB per atom")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    model_arguments(p)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--max-atoms", type=int, default=1_000_000)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker)
    model = selected_model(args)
    pair = pair_commands("sigmapot", model)
    rows = []
    for cells in SIZES:
        if 8 * cells[0] * cells[1] * cells[2] > args.max_atoms:
            continue
        r = run_worker(__file__, args.ranks, {"cells": cells, "pair": pair, "steps": args.steps})
        total, fixed = sum(r["peak_rss_mb"]), sum(r["fixed_rss_mb"])
        r["kb_per_atom"] = total * 1024 / r["atoms"]
        r["kb_per_atom_above_fixed"] = (total - fixed) * 1024 / r["atoms"]
        rows.append(r)
        print(f"{r['atoms']} atoms: {r['kb_per_atom']:.2f} kB/atom", flush=True)
    table = ["| atoms | peak RSS per rank (MiB) | fixed per rank (MiB) | kB/atom | kB/atom above fixed | s for the run |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['atoms']} | {' / '.join(f'{v:.0f}' for v in r['peak_rss_mb'])} | "
                     f"{' / '.join(f'{v:.0f}' for v in r['fixed_rss_mb'])} | {r['kb_per_atom']:.2f} | "
                     f"{r['kb_per_atom_above_fixed']:.2f} | {r['seconds']:.0f} |")
    write_results("memory", {"model": str(model), "ranks": args.ranks, "steps": args.steps, "results": rows},
                  table, f"Peak memory, diamond Si, {args.ranks} MPI ranks, {args.steps} MD steps")
    plot(rows, RESULTS / "memory.png")


if __name__ == "__main__":
    main()
