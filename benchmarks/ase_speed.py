"""ASE calculator cost per call from 64 to ~10k atoms, split into neighbour list, model (chunked calls
and the uncertainty) and the rest (ASE bookkeeping, conversions), next to the LAMMPS cost per atom of
the same model in the same run.

Both engines run the same exported file, with the uncertainty (ASE default, LAMMPS
`uncertainty_every 1`) and with mean forces only (`SigmaCalculator(..., uncertainty=False)`,
`uncertainty_every 0`).  One torch thread.  Target: ASE <= 2x LAMMPS per atom at 2,000 atoms.

    python benchmarks/ase_speed.py [--model FILE.pt] [--dtype float32]
Writes benchmarks/results/ase_speed.{json,md,png}.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase.build import bulk

from common import (RESULTS, best_of_alternating, model_arguments, pair_commands, selected_model, time_md,
                    write_results)

SIZES = [(2, 2, 2), (4, 4, 4), (5, 5, 10), (11, 11, 11)]   # 64, 512, 2,000, 10,648 atoms
LAMMPS_CELLS = (5, 5, 10)


def time_ase(model_path, cells, uncertainty: bool, repeats: int) -> dict:
    """Best-of-`repeats` seconds for: a full calculator call, its neighbour list, its model call."""
    from sigmapot import SigmaCalculator
    from sigmapot.calculator import evaluate_structure
    from sigmapot.neighbors import neighbor_list

    calc = SigmaCalculator(str(model_path), uncertainty=uncertainty)
    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(cells)
    atoms.rattle(0.02, seed=0)
    atoms.calc = calc
    species = np.zeros(len(atoms), dtype=np.int64)
    rng = np.random.default_rng(0)

    def call() -> float:
        atoms.positions += rng.normal(scale=1e-4, size=atoms.positions.shape)  # a new state each call
        t0 = time.perf_counter()
        atoms.get_forces()
        return time.perf_counter() - t0

    def nlist() -> float:
        t0 = time.perf_counter()
        neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, calc.cutoff)
        return time.perf_counter() - t0

    def evaluation() -> float:  # neighbour list + chunked model calls + uncertainty
        t0 = time.perf_counter()
        evaluate_structure(calc.model, species, atoms.positions, atoms.cell.array, atoms.pbc, calc.dtype,
                           uncertainty=uncertainty, chunk=calc.chunk)
        return time.perf_counter() - t0

    for _ in range(3):  # TorchScript's profiling executor specialises on the first calls
        call()
    best = best_of_alternating({"total": call, "neighbor_list": nlist, "evaluation": evaluation}, repeats)
    best["model"] = max(best.pop("evaluation") - best["neighbor_list"], 0.0)
    best["other"] = max(best["total"] - best["neighbor_list"] - best["model"], 0.0)
    return {"atoms": len(atoms), "seconds": best,
            "us_per_atom": {k: 1e6 * v / len(atoms) for k, v in best.items()}}


def plot(rows: dict, lammps: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, mode in zip(axes, ("uncertainty", "mean")):
        atoms = [r["atoms"] for r in rows[mode]]
        bottom = np.zeros(len(atoms))
        for part in ("neighbor_list", "model", "other"):
            vals = np.array([r["us_per_atom"][part] for r in rows[mode]])
            ax.bar([str(a) for a in atoms], vals, bottom=bottom, label=part)
            bottom += vals
        ax.axhline(lammps[mode], color="k", ls="--", lw=1, label=f"LAMMPS, {LAMMPS_CELLS} cells")
        ax.set_title(f"ASE calculator, {mode} calls")
        ax.set_xlabel("atoms")
    axes[0].set_ylabel("µs per atom per call")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(p)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = selected_model(args)
    rows = {mode: [time_ase(model, cells, mode == "uncertainty", args.repeats) for cells in SIZES]
            for mode in ("uncertainty", "mean")}
    lammps = {}
    for mode, every in (("uncertainty", 1), ("mean", 0)):
        t = min(time_md(LAMMPS_CELLS, pair_commands("sigmapot", model, every), 3)["seconds_per_step"]
                for _ in range(args.repeats))
        lammps[mode] = 1e6 * t / (8 * np.prod(LAMMPS_CELLS))
    ratio = {}
    table = ["| mode | atoms | neighbour list | model | other | total µs/atom | LAMMPS µs/atom-step | ASE / LAMMPS |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, rs in rows.items():
        for r in rs:
            u = r["us_per_atom"]
            at_ref = r["atoms"] == 8 * np.prod(LAMMPS_CELLS)
            if at_ref:
                ratio[mode] = u["total"] / lammps[mode]
            table.append(f"| {mode} | {r['atoms']} | {u['neighbor_list']:.1f} | {u['model']:.1f} | {u['other']:.1f} | "
                         f"{u['total']:.1f} | {lammps[mode]:.1f} | " + (f"{ratio[mode]:.2f}" if at_ref else "") + " |")
    write_results("ase_speed", {"model": str(model), "rows": rows, "lammps_us_per_atom_step": lammps,
                                "ase_over_lammps_at_2000": ratio},
                  table, "ASE calculator cost per call vs LAMMPS, diamond Si, 1 thread")
    plot(rows, lammps, RESULTS / "ase_speed.png")


if __name__ == "__main__":
    main()
