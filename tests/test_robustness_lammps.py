"""Robustness of pair_style sigmapot in LAMMPS.

Hostile MD states in one process: two atoms far closer than any training data (down to coincident
atoms), an empty system, a periodic box shorter than the cutoff (many ghost images of every atom, also
of the atom itself), lost atoms (LAMMPS's own error, or `thermo_modify lost ignore` going on with the
remaining atoms).

Hostile MPI layouts under `mpirun -np 2` and `-np 4` (one driver launch per rank count, the 1-rank
reference runs in this process): all atoms on one rank, a strongly imbalanced slab, a box shorter than
the cutoff split into sub-domains far thinner than the cutoff, `balance` / `fix balance` (shift, and rcb
with comm_style tiled) during a run, and restarts (write_restart/read_restart and write_data/read_data,
also read back on another number of ranks) that continue the uninterrupted 100-step trajectory.

Security: a model archive carrying a pickled code payload is refused and the payload never runs.
"""
from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from conftest import rattled_sige
from sigmapot import SigmaCalculator
from sigmapot.lammps import write_lammps_data

NKTV2P = 1.6021765e6  # LAMMPS metal: eV/A^3 -> bar
TOL = 1e-8            # LAMMPS vs ASE (relative to max(1, |reference|)), as in test_lammps_plugin.py
RANKS_TOL = 1e-10     # LAMMPS on N ranks vs 1 rank, up to 20 steps (as in test_lammps_mpi.py)
# 100 steps of hot MD (random-weight test model: forces up to 30 eV/A, 3000 m/s) amplify the round-off
# differences of another decomposition or atom order (after a restart) by the Lyapunov growth of the
# dynamics: measured <= 1e-12 A in positions and <= 1e-11 relative in velocities, forces, sigma.
# A bug (a missed or doubled ghost, velocities written with 6 digits, a stale neighbour list) gives
# >= 1e-6.  Positions: absolute (A); everything else relative to max(1, max |value|).
TRAJ_TOL = 1e-9


def assert_close(a, b, tol=TOL, what=""):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert np.isfinite(a).all(), f"{what}: non-finite values"
    err = np.abs(a - b).max() if a.size else 0.0
    assert err <= tol * max(1.0, np.abs(b).max() if b.size else 0.0), f"{what}: max |diff| = {err:.3e}"


def ase_results(model, atoms):
    atoms = atoms.copy()
    atoms.calc = SigmaCalculator(str(model))
    props = ["energy", "forces", "energies", "energies_std", "forces_std"] + (
        ["stress"] if atoms.pbc.all() else [])
    atoms.calc.calculate(atoms, props)
    return atoms.calc.results


DECK = """
units metal
atom_style atomic
atom_modify map array
boundary {boundary}
read_data {data}
pair_style sigmapot
pair_coeff * * {model} Si Ge
compute u all sigmapot/atom
compute pe all pe/atom
compute p all pressure NULL virial
thermo_style custom step atoms pe c_u[1] c_u[2] c_u[3] c_u[4] c_p[1] c_p[2] c_p[3] c_p[4] c_p[5] c_p[6]
"""


def by_id(lmp):
    """Local atoms' per-atom values sorted by atom ID (one process)."""
    from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY, LMP_TYPE_VECTOR
    n = lmp.extract_global("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id"))[:n]
    order = np.argsort(ids)
    ext = lmp.numpy.extract_compute
    return {"id": ids[order], "x": np.array(lmp.numpy.extract_atom("x"))[:n][order],
            "f": np.array(lmp.numpy.extract_atom("f"))[:n][order],
            "pe": np.array(ext("pe", LMP_STYLE_ATOM, LMP_TYPE_VECTOR))[:n][order],
            "u": np.array(ext("u", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))[:n][order],
            "energy": lmp.get_thermo("pe"),
            "press": np.array(ext("p", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))}


def compare_to_ase(res, ref, atoms, what, tol=TOL):
    assert_close(res["energy"], ref["energy"], tol, f"{what}: energy")
    assert_close(res["f"], ref["forces"], tol, f"{what}: forces")
    assert_close(res["pe"], ref["energies"], tol, f"{what}: per-atom energy")
    assert_close(res["u"][:, 0], ref["energies_std"], tol, f"{what}: sigma_E")
    assert_close(res["u"][:, 1], ref["forces_std"], tol, f"{what}: sigma_F")
    if "stress" in ref:
        voigt = -res["press"][[0, 1, 2, 5, 4, 3]] / NKTV2P  # LAMMPS xx yy zz xy xz yz, ASE yz xz xy
        assert_close(voigt, ref["stress"], tol, f"{what}: virial stress")


# =========================================================================== hostile MD states

@pytest.mark.parametrize("distance", [0.0, 1e-6, 0.05, 0.5])
def test_atoms_far_closer_than_training_data(lmp_factory, model_file, tmp_path, distance):
    """Two atoms at 0.5 A, 0.05 A, 1e-6 A and exactly on top of each other inside a crystal (training
    data: >= 2 A) give finite energies, forces and sigma equal to the ASE calculator, and MD goes on."""
    atoms = rattled_sige(21, size=(2, 2, 2), amplitude=0.05)
    atoms.positions[1] = atoms.positions[0] + distance * np.array([0.6, 0.0, 0.8])
    ref = ase_results(model_file, atoms)
    data = tmp_path / "close.data"
    write_lammps_data(atoms, data, ["Si", "Ge"])
    lmp = lmp_factory()
    lmp.commands_string(DECK.format(boundary="p p p", data=data, model=model_file) + "run 0")
    res = by_id(lmp)
    compare_to_ase(res, ref, atoms, f"atoms {distance} A apart")
    assert np.abs(res["f"][:2]).max() > 10.0  # the state really is hostile: large repulsion/forces
    assert res["u"][:2, 1].min() > 1.0       # and the ensemble disagrees there: large sigma_F
    # a few MD steps out of that state (velocity Verlet with 0.1 fs) stay finite and equal to ASE
    lmp.commands_string("timestep 0.0001\nfix 1 all nve\nthermo 5\nrun 5")
    res = by_id(lmp)
    moved = atoms.copy()
    moved.positions = res["x"]
    compare_to_ase(res, ase_results(model_file, moved), moved, f"atoms {distance} A apart, after 5 steps")


def test_empty_system(lmp_factory, model_file):
    """No atoms at all: run 0 and a short NVE run give zero energy, pressure and uncertainty."""
    lmp = lmp_factory()
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        region box block 0 10 0 10 0 10
        create_box 2 box
        mass * 28.0
        pair_style sigmapot
        pair_coeff * * {model_file} Si Ge
        compute u all sigmapot/atom
        compute p all pressure NULL virial
        thermo_style custom step atoms pe c_u[1] c_u[2] c_u[3] c_u[4] c_p[1] c_p[4]
        run 0
    """)
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

    def values():
        unc = np.array(lmp.numpy.extract_compute("u", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
        press = np.array(lmp.numpy.extract_compute("p", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
        return [lmp.get_thermo("atoms"), lmp.get_thermo("pe")] + unc.tolist() + press.tolist()

    assert values() == [0.0] * 12
    lmp.commands_string("fix 1 all nve\nthermo 5\nrun 10")
    assert lmp.get_thermo("step") == 10
    assert values() == [0.0] * 12


def short_box():
    """4 atoms in a periodic box whose x length (2.2 A) is about half the 4 A cutoff: every atom sees
    itself and its neighbours through several periodic images along x."""
    cell = np.diag([2.2, 6.0, 5.6])
    frac = np.array([[0.0, 0.05, 0.1], [0.5, 0.52, 0.08], [0.1, 0.3, 0.55], [0.6, 0.8, 0.6]])
    atoms = Atoms("SiGeGeSi", scaled_positions=frac, cell=cell, pbc=True)
    d = atoms.get_all_distances(mic=True)
    assert d[np.triu_indices(4, 1)].min() > 1.5
    return atoms


@pytest.mark.parametrize("pbc", ["p p p", "p p f"])
def test_box_shorter_than_the_cutoff(lmp_factory, model_file, tmp_path, pbc):
    """x length 2.2 A < cutoff 4 A (LAMMPS: ghost images of ghost images) gives the ASE energy, forces,
    per-atom energy, sigma and stress, before and after 20 MD steps."""
    atoms = short_box()
    atoms.pbc = [p == "p" for p in pbc.split()]
    data = tmp_path / "short.data"
    write_lammps_data(atoms, data, ["Si", "Ge"], margin=6.0)
    lmp = lmp_factory()
    lmp.commands_string(DECK.format(boundary=pbc, data=data, model=model_file) + "run 0")
    res = by_id(lmp)
    nghost = lmp.extract_global("nghost")
    assert nghost > 10 * len(atoms)  # many images of each atom (and of itself: 2.2 A < cutoff)
    lammps_frame = atoms.copy()
    lammps_frame.positions = res["x"]  # orthorhombic: same frame, shifted by the box origin
    compare_to_ase(res, ase_results(model_file, lammps_frame), lammps_frame, f"short box {pbc}")
    lmp.commands_string("velocity all create 600 5 loop geom\nfix 1 all nve\nthermo 10\nrun 20")
    res = by_id(lmp)
    lammps_frame.positions = res["x"]
    compare_to_ase(res, ase_results(model_file, lammps_frame), lammps_frame,
                   f"short box {pbc}, after 20 steps")


def lost_atom_deck(model, data, lost):
    return DECK.format(boundary="f f f", data=data, model=model) + f"""
        thermo_modify lost {lost}
        thermo 5
        velocity all create 300 8 loop geom
        group runaway id 1
        velocity runaway set 200.0 0.0 0.0
        fix 1 all nve
        run 40
    """


def lost_atom_data(tmp_path):
    atoms = rattled_sige(22, size=(1, 1, 1), amplitude=0.05)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    data = tmp_path / "lost.data"
    write_lammps_data(atoms, data, ["Si", "Ge"], margin=2.0)
    return atoms, data


def test_lost_atoms(lmp_factory, model_file, tmp_path):
    """An atom that leaves a fixed-boundary box gives LAMMPS's own 'Lost atoms' error (not a crash in
    the pair style); with `thermo_modify lost ignore` the run goes on with the remaining atoms, whose
    energy, forces and sigma are those of the ASE calculator for that smaller system."""
    atoms, data = lost_atom_data(tmp_path)
    lmp = lmp_factory()
    with pytest.raises(Exception, match=f"Lost atoms: original {len(atoms)} current {len(atoms) - 1}"):
        lmp.commands_string(lost_atom_deck(model_file, data, "error"))

    lmp = lmp_factory()
    lmp.commands_string(lost_atom_deck(model_file, data, "ignore"))
    assert lmp.get_natoms() == len(atoms) - 1 and lmp.get_thermo("step") == 40
    res = by_id(lmp)
    assert res["id"].tolist() == list(range(2, len(atoms) + 1))
    remaining = atoms[1:].copy()
    remaining.positions = res["x"]
    compare_to_ase(res, ase_results(model_file, remaining), remaining, "after losing atom 1")


def test_lost_atoms_under_mpi_stop_every_rank(plugin, model_file, tmp_path):
    """`mpirun -np 2 lmp`: the lost-atoms error ends the job on every rank (no hang, no crash)."""
    tools = mpi_tools()
    _, data = lost_atom_data(tmp_path)
    deck = tmp_path / "in.lost"
    deck.write_text(f'plugin load "{plugin}"\nprocessors 2 1 1\n'
                    + lost_atom_deck(model_file, data, "error"))
    from test_lammps_mpi import clean_env
    proc = subprocess.run([tools["mpirun"], "-np", "2", tools["lmp"], "-in", str(deck), "-log", "none"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "ERROR: Lost atoms: original 8 current 7" in out, out[-2000:]
    assert "Segmentation" not in out and "signal" not in out.lower(), out[-2000:]


@pytest.mark.parametrize("member", ["data.pkl", "constants.pkl"])
def test_model_file_with_a_code_payload_is_refused(lmp_factory, model_file, tmp_path, member):
    """A model archive whose pickle holds a code payload (os.system via __reduce__): pair_coeff and
    the ASE calculator refuse it, naming the refused type, and the payload never runs."""
    import os
    import pickle
    import zipfile

    from sigmapot.export import ModelFileError
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(model_file) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, pickle.dumps(Payload(), protocol=2)
                          if item.filename.endswith("/" + member) else data)
    with pytest.raises(ModelFileError, match="not a TorchScript archive"):
        SigmaCalculator(str(evil))
    lmp = lmp_factory()
    with pytest.raises(Exception, match=r"not a readable TorchScript archive .*: Unknown type name "
                                        r"'(posix|os)\.system'"):
        lmp.commands_string(f"""
            units metal
            atom_style atomic
            region box block 0 5 0 5 0 5
            create_box 2 box
            create_atoms 1 single 1 1 1
            mass * 28.0
            pair_style sigmapot
            pair_coeff * * {evil} Si Ge
        """)
    assert not marker.exists()


def mpi_tools():
    pytest.importorskip("lammps")
    pytest.importorskip("mpi4py")
    from test_lammps_mpi import lmp_executable
    mpirun = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")
    lmp = lmp_executable()
    if mpirun is None or lmp is None:
        pytest.skip("mpirun or lmp not available")
    return {"mpirun": mpirun, "lmp": lmp}


# =========================================================================== MPI layouts
# One driver runs every layout scenario on N ranks and saves snapshots (gathered by atom ID).

DRIVER = r'''
import json, sys, time, traceback
from mpi4py import MPI
import numpy as np
import lammps

spec = json.loads(open(sys.argv[1]).read())
comm = MPI.COMM_WORLD
nproc = comm.size
model, plugin, work = spec["model"], spec["plugin"], spec["work"]
THERMO = ("thermo_style custom step atoms pe c_u[1] c_u[2] c_u[3] c_u[4] "
          "c_p[1] c_p[2] c_p[3] c_p[4] c_p[5] c_p[6]\nthermo 10\n")


def new():
    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    lmp.command(f'plugin load "{plugin}"')
    return lmp


def potential(lmp):
    lmp.commands_string(f"""
pair_style sigmapot chunk 23
pair_coeff * * {model} Si Ge
compute u all sigmapot/atom
compute pe all pe/atom
compute p all pressure NULL virial
""" + THERMO)


def setup(data, boundary, procs, pre=""):
    lmp = new()
    lmp.commands_string(f"""
units metal
atom_style atomic
atom_modify map array
boundary {boundary}
{"processors " + procs if procs else ""}
{pre}
read_data {data}
""")
    potential(lmp)
    return lmp


def snap(lmp):
    n = lmp.get_natoms()
    ga = lambda name, c: np.array(lmp.gather_atoms(name, 1, c)).reshape(n, c)
    g = lambda name, c: np.array(lmp.gather(name, 1, c)).reshape(n, c)
    # global vectors through extract_compute (get_thermo knows only built-in keywords, not c_ID[k])
    glob = [lmp.get_thermo("pe")] + [lmp.extract_compute("u", 0, 1)[k] for k in range(4)] + [
        lmp.extract_compute("p", 0, 1)[k] for k in range(6)]
    nlocal = comm.allgather(lmp.extract_global("nlocal"))
    lo, hi, xy, yz, xz, periodic, _ = lmp.extract_box()
    box = np.array([np.subtract(hi, lo), np.array(periodic, dtype=float)])
    return dict(box=box, x=ga("x", 3), v=ga("v", 3), f=ga("f", 3), pe=g("c_pe", 1), u=g("c_u", 3),
                glob=np.array(glob), nlocal=np.array(nlocal), step=np.array(lmp.get_thermo("step")))


HOT = "velocity all create 800 4928 loop geom\nfix 1 all nve\n"


def layout(lmp, steps=20):
    lmp.command("run 0")
    out = {"s0_" + k: v for k, v in snap(lmp).items()}
    lmp.commands_string(HOT + f"run {steps}")
    out.update({"s1_" + k: v for k, v in snap(lmp).items()})
    lmp.close()
    return out


def scenario_onerank(s):
    return layout(setup(s["data"], "f f f", s["procs"]))


def scenario_imbalanced(s):
    return layout(setup(s["data"], "p p f", s["procs"]))


def scenario_short(s):
    return layout(setup(s["data"], "p p p", s["procs"]))


def scenario_empty(s):
    lmp = new()
    lmp.commands_string(f"""
units metal
atom_style atomic
region box block 0 10 0 10 0 10
create_box 2 box
mass * 28.0
""")
    potential(lmp)
    lmp.commands_string("run 0\nfix 1 all nve\nrun 10")
    out = {"glob": np.array([lmp.get_thermo("pe")] + [lmp.extract_compute("u", 0, 1)[k] for k in range(4)]),
           "step": np.array(lmp.get_thermo("step"))}
    lmp.close()
    return out


def scenario_balance(s):
    """the imbalanced slab over 100 steps: plain, `balance` + `fix balance` (shift), rcb (comm tiled)"""
    out = {}
    variants = {"plain": ("", ""),
                "shift": ("", "balance 1.0 shift z 20 1.0\nfix bal all balance 10 1.0 shift z 20 1.0\n"),
                "rcb": ("comm_style tiled", "balance 1.0 rcb\nfix bal all balance 10 1.0 rcb\n")}
    for name, (pre, cmds) in variants.items():
        if (nproc == 1) != (name == "plain"):  # the 1-rank plain run is the reference
            continue
        lmp = setup(s["data"], "p p f", s["procs"] if name != "rcb" else "", pre)
        lmp.command("run 0")
        before = comm.allgather(lmp.extract_global("nlocal"))
        # reflecting z walls: at 800 K the random-weight test model can fling a surface atom out of
        # the non-periodic z of the slab (lost atoms); the walls act the same on every rank layout
        lmp.commands_string(HOT + "fix walls all wall/reflect zlo EDGE zhi EDGE\n" + cmds + "run 100")
        for k, v in snap(lmp).items():
            out[f"{name}_{k}"] = v
        out[f"{name}_nlocal_before"] = np.array(before)
        lmp.close()
    return out


def scenario_restart(s):
    out = {}
    steps = 100
    half = steps // 2
    if nproc == 1:  # the reference: 100 uninterrupted steps
        lmp = setup(s["data"], "p p p", "")
        lmp.commands_string(HOT + f"run {steps}")
        out.update({"full_" + k: v for k, v in snap(lmp).items()})
        lmp.close()

    lmp = setup(s["data"], "p p p", "")
    lmp.commands_string(HOT + f"""run {half}
write_restart {work}/half.np{nproc}.restart
write_data {work}/half.np{nproc}.data""")
    lmp.close()

    def cont(kind, path):
        lmp = new()
        if kind == "restart":
            lmp.commands_string(f"read_restart {path}")
        else:
            lmp.commands_string(f"units metal\natom_style atomic\natom_modify map array\n"
                                f"boundary p p p\nread_data {path}\nreset_timestep {half}")
        potential(lmp)
        lmp.commands_string(f"fix 1 all nve\nrun {steps - half}")
        res = snap(lmp)
        lmp.close()
        return res

    out.update({"restart_" + k: v for k, v in cont("restart", f"{work}/half.np{nproc}.restart").items()})
    out.update({"data_" + k: v for k, v in cont("data", f"{work}/half.np{nproc}.data").items()})
    for other in s.get("others", []):
        out.update({f"restart{other}_" + k: v
                    for k, v in cont("restart", f"{work}/half.np{other}.restart").items()})
    return out


results = {}
for name, s in spec["scenarios"].items():
    t0 = time.time()
    try:
        res = globals()["scenario_" + name](s)
        for k, v in res.items():
            results[f"{name}__{k}"] = v
    except Exception:
        results[f"{name}__error"] = np.array(traceback.format_exc())
    results[f"{name}__seconds"] = np.array(time.time() - t0)
if comm.rank == 0:
    np.savez(spec["out"], **results)
'''

PROCS = {  # processors grids per scenario and rank count (None: LAMMPS's default)
    "onerank": {1: None, 2: "2 1 1", 4: "2 2 1"},
    "imbalanced": {1: None, 2: "1 1 2", 4: "2 1 2"},
    "short": {1: None, 2: "2 1 1", 4: "4 1 1"},
    "balance": {1: None, 2: "1 1 2", 4: "1 1 4"},
}


def cluster_data(path):
    """64-atom SiGe cluster in the low corner of a big open box: every rank split puts all atoms on
    one side of each cut."""
    atoms = rattled_sige(31, size=(2, 2, 2), amplitude=0.1)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    write_lammps_data(atoms, path, ["Si", "Ge"], margin=(1.0, 30.0))
    return atoms


def slab_data(path):
    """64-atom SiGe slab (8 layers, periodic x y) whose box puts the z mid-plane between the top two
    layers: a 1 1 2 grid gives 56 : 8 atoms."""
    atoms = rattled_sige(32, size=(2, 2, 2), amplitude=0.08)
    atoms.pbc = (True, True, False)
    z = np.sort(atoms.positions[:, 2])
    split = 0.5 * (z[-9] + z[-8])
    lo = z[0] - 1.0
    hi = lo + 2 * (split - lo)
    write_lammps_data(atoms, path, ["Si", "Ge"], margin=(1.0, hi - z[-1]))
    return atoms


@pytest.fixture(scope="module")
def mpi_results(plugin, model_file, tmp_path_factory):
    """Run the driver on 1 rank (in this process), then under mpirun -np 2 and -np 4."""
    tools = mpi_tools()
    work = tmp_path_factory.mktemp("mpi_layouts")
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    data = {"onerank": work / "cluster.data", "imbalanced": work / "slab.data",
            "short": work / "short.data", "balance": work / "slab.data", "restart": work / "bulk.data"}
    cluster_data(data["onerank"])
    slab_data(data["imbalanced"])
    write_lammps_data(short_box(), data["short"], ["Si", "Ge"])
    bulk = rattled_sige(33, size=(2, 2, 2), amplitude=0.1)
    write_lammps_data(bulk, data["restart"], ["Si", "Ge"])

    from test_lammps_mpi import clean_env
    results = {}
    for nproc in (1, 2, 4):
        scenarios = {name: {"data": str(data[name]), "procs": PROCS[name][nproc]} for name in PROCS}
        scenarios["empty"] = {}
        # 2 ranks also continue the 1-rank restart file, 4 ranks the 2-rank one
        scenarios["restart"] = {"data": str(data["restart"]), "others": [nproc // 2] if nproc > 1 else []}
        spec = work / f"spec{nproc}.json"
        out = work / f"out{nproc}.npz"
        spec.write_text(json.dumps({"model": str(model_file), "plugin": str(plugin), "work": str(work),
                                    "out": str(out), "scenarios": scenarios}))
        if nproc == 1:
            argv = sys.argv
            sys.argv = [str(driver), str(spec)]
            try:
                runpy.run_path(str(driver), run_name="__main__")
            finally:
                sys.argv = argv
        else:
            proc = subprocess.run([tools["mpirun"], "-np", str(nproc), sys.executable, str(driver), str(spec)],
                                  cwd=work, env=clean_env(), capture_output=True, text=True, timeout=400)
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        with np.load(out) as f:
            results[nproc] = {k: f[k] for k in f.files}
    results["bulk_start"] = bulk.positions
    return results


def scenario(results, nproc, name):
    res = {k.split("__", 1)[1]: v for k, v in results[nproc].items() if k.startswith(name + "__")}
    assert "error" not in res, f"{name} on {nproc} rank(s) failed:\n{res['error']}"
    return res


def compare_snapshots(a, pa, b, pb, what, tol):
    """Snapshot `pa` of run a equals snapshot `pb` of run b: positions (up to periodic wrapping, which
    happens on re-neighbouring steps only), velocities, forces, per-atom energy and uncertainty, the
    global thermo values; all but positions relative to max(1, max |value|)."""
    for key in ("x", "v", "f", "pe", "u", "glob"):
        x, y = a[f"{pa}_{key}"], b[f"{pb}_{key}"]
        assert x.shape == y.shape, (what, key, x.shape, y.shape)
        diff = x - y
        if key == "x":
            length, periodic = b[f"{pb}_box"][0], b[f"{pb}_box"][1].astype(bool)
            diff = np.where(periodic, diff - length * np.round(diff / length), diff)
        if key == "glob":  # pe, max/mean sigma_F, max sigma_E, sigma of E_total, 6 pressures (bar)
            assert np.all(y[1:5] > 0), f"{what}: reference uncertainty not evaluated: {y[1:5]}"
            scale = np.maximum(1.0, np.abs(np.concatenate([y[:5], np.full(6, np.abs(y[5:]).max())])))
        else:
            scale = np.full(y.shape, max(1.0, np.abs(y).max()) if key != "x" else 1.0)
        bad = np.abs(diff) > tol * scale
        assert not bad.any(), (f"{what}: {key} differs by {np.abs(diff).max():.3e} "
                               f"(relative {np.max(np.abs(diff) / scale):.3e})")


def compare_runs(a, b, prefixes, what, tol=RANKS_TOL):
    for p in prefixes:
        compare_snapshots(a, p, b, p, what, tol)


@pytest.mark.parametrize("nproc", [2, 4])
def test_all_atoms_on_one_rank(mpi_results, nproc):
    ref, res = scenario(mpi_results, 1, "onerank"), scenario(mpi_results, nproc, "onerank")
    for snap in ("s0", "s1"):
        counts = res[f"{snap}_nlocal"]
        assert len(counts) == nproc and sorted(counts)[-1] == 64 and counts.sum() == 64, counts
    compare_runs(res, ref, ("s0", "s1"), f"cluster on one of {nproc} ranks")
    assert ref["s1_u"][:, 1].min() > 0


@pytest.mark.parametrize("nproc", [2, 4])
def test_strongly_imbalanced_slab(mpi_results, nproc):
    ref, res = scenario(mpi_results, 1, "imbalanced"), scenario(mpi_results, nproc, "imbalanced")
    counts = res["s0_nlocal"]
    assert counts.sum() == 64 and counts.max() >= 7 * counts.min() > 0, counts
    compare_runs(res, ref, ("s0", "s1"), f"imbalanced slab on {nproc} ranks")


@pytest.mark.parametrize("nproc", [2, 4])
def test_box_shorter_than_cutoff_split_over_ranks(mpi_results, model_file, nproc):
    """Sub-domains of 1.1 A (2 ranks) and 0.55 A (4 ranks) along an axis of 2.2 A, cutoff 4 A."""
    ref, res = scenario(mpi_results, 1, "short"), scenario(mpi_results, nproc, "short")
    compare_runs(res, ref, ("s0", "s1"), f"short box on {nproc} ranks")
    atoms = short_box()
    for snap in ("s0", "s1"):
        atoms.positions = res[f"{snap}_x"]
        ase = ase_results(model_file, atoms)
        assert_close(res[f"{snap}_f"], ase["forces"], what=f"{snap} forces vs ASE")
        assert_close(res[f"{snap}_glob"][0], ase["energy"], what=f"{snap} energy vs ASE")
        assert_close(res[f"{snap}_u"][:, 1], ase["forces_std"], what=f"{snap} sigma_F vs ASE")


@pytest.mark.parametrize("nproc", [2, 4])
def test_empty_system_on_several_ranks(mpi_results, nproc):
    res = scenario(mpi_results, nproc, "empty")
    assert int(res["step"]) == 10
    assert np.all(res["glob"] == 0.0), res["glob"]


@pytest.mark.parametrize("nproc", [2, 4])
@pytest.mark.parametrize("variant", ["shift", "rcb"])
def test_balance_during_a_run_keeps_the_trajectory(mpi_results, nproc, variant):
    """`balance` before and `fix balance` every 10 steps during 100 steps of the imbalanced slab move
    atoms between ranks (shift cuts; rcb with comm_style tiled) without changing the trajectory."""
    ref, res = scenario(mpi_results, 1, "balance"), scenario(mpi_results, nproc, "balance")
    before, after = res[f"{variant}_nlocal_before"], res[f"{variant}_nlocal"]
    assert after.sum() == 64
    assert after.max() - after.min() < 0.5 * (before.max() - before.min()), (before, after)
    assert int(res[f"{variant}_step"]) == 100
    compare_snapshots(res, variant, ref, "plain", f"{variant} balance on {nproc} ranks", TRAJ_TOL)


@pytest.mark.parametrize("nproc, kind", [(n, k) for n in (1, 2, 4) for k in ("restart", "data")]
                         + [(2, "restart_other_ranks"), (4, "restart_other_ranks")])
def test_restart_continues_the_trajectory(mpi_results, nproc, kind):
    """Steps 0-50, write_restart / write_data, a new LAMMPS instance reads it (on the same or another
    number of ranks), steps 50-100: the same positions, velocities, forces, energies and sigma as 100
    uninterrupted steps on 1 rank."""
    ref = scenario(mpi_results, 1, "restart")
    res = scenario(mpi_results, nproc, "restart")
    if kind == "restart_other_ranks":
        prefixes = [k[: -len("_x")] for k in res if k.startswith("restart") and k[7:8].isdigit()
                    and k.endswith("_x")]
        assert prefixes == [f"restart{nproc // 2}"], prefixes
    else:
        prefixes = [kind]
    moved = ref["full_x"] - mpi_results["bulk_start"]
    moved -= ref["full_box"][0] * np.round(moved / ref["full_box"][0])
    assert np.linalg.norm(moved, axis=1).max() > 0.3  # the atoms really moved in those 100 steps
    for p in prefixes:
        assert int(res[f"{p}_step"]) == 100
        compare_snapshots(res, p, ref, "full", f"{p} on {nproc} ranks", TRAJ_TOL)
