"""pair_style sigmapot in one process (LAMMPS Python module): equality with the ASE calculator on
periodic (orthogonal, triclinic, small), partly and fully non-periodic structures, per-atom energy,
virial and uncertainty; hybrid/overlay with zbl; fix pair; run 0, minimisation, NVE, restart."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.geometry import cellpar_to_cell

from sigmapot import SigmaCalculator
from sigmapot.lammps import write_lammps_data
from sigmapot.neighbors import neighbor_list

NKTV2P = 1.6021765e6  # LAMMPS metal: eV/A^3 -> bar
TOL = 1e-8


# ------------------------------------------------------------------------------------ structures

def _rattle(atoms, seed, amp=0.12, mix=True):
    rng = np.random.default_rng(seed)
    if mix:
        atoms.set_chemical_symbols(rng.choice(["Si", "Ge"], len(atoms)).tolist())
    atoms.positions += rng.normal(scale=amp, size=atoms.positions.shape)
    return atoms


def cubic_sige():
    return _rattle(bulk("Si", "diamond", a=5.5, cubic=True) * (2, 2, 2), 1)


def triclinic_small():
    # 2 atoms in a skewed cell with lengths below the 4 A cutoff: many periodic images of each atom
    cell = cellpar_to_cell([3.9, 4.1, 3.8, 75.0, 82.0, 68.0])
    atoms = Atoms("SiGe", scaled_positions=[[0, 0, 0], [0.27, 0.24, 0.26]], cell=cell, pbc=True)
    return _rattle(atoms, 2, amp=0.05, mix=False)


def triclinic_supercell():
    cell = cellpar_to_cell([7.7, 7.9, 8.1, 80.0, 95.0, 72.0])
    rng = np.random.default_rng(3)
    atoms = Atoms(cell=cell, pbc=True)
    frac = (np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.25) / 3
    atoms += Atoms("Si" * len(frac), scaled_positions=frac + rng.normal(scale=0.01, size=frac.shape),
                   cell=cell)
    return _rattle(atoms, 4, amp=0.05)


def slab():
    atoms = bulk("Si", "diamond", a=5.5, cubic=True) * (2, 2, 1)
    atoms.pbc = (True, True, False)
    return _rattle(atoms, 5)


def cluster():
    atoms = bulk("Si", "diamond", a=5.5, cubic=True)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return _rattle(atoms, 6)


STRUCTURES = {"cubic": cubic_sige, "triclinic_small": triclinic_small,
              "triclinic_supercell": triclinic_supercell, "slab": slab, "cluster": cluster}


# ------------------------------------------------------------------------------------ helpers

def run_lammps(lmp, model, atoms, elements, tmp_path, pair_style="sigmapot", pair_coeff=None,
               extra="", unc=True):
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "structure.data"
    rot, boundary = write_lammps_data(atoms, data, elements)
    pair_coeff = pair_coeff or f"pair_coeff * * {model} {' '.join(elements)}"
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        atom_modify map array
        boundary {boundary}
        read_data {data}
        pair_style {pair_style}
        {pair_coeff}
        {"compute u all sigmapot/atom" if unc else ""}
        compute pe all pe/atom
        compute sa all stress/atom NULL virial
        compute csa all centroid/stress/atom NULL virial
        compute p all pressure NULL virial
        thermo_style custom step pe {"c_u[1] c_u[2] c_u[3] c_u[4]" if unc else ""} c_p[1]
        {extra}
        run 0
    """)
    return collect(lmp, rot, unc)


def collect(lmp, rot=np.eye(3), unc=True):
    from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY, LMP_TYPE_VECTOR
    nlocal = lmp.extract_global("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id"))[:nlocal]
    order = np.argsort(ids)
    ext = lmp.numpy.extract_compute
    out = {
        "energy": lmp.get_thermo("pe"),
        "forces": np.array(lmp.numpy.extract_atom("f"))[:nlocal][order] @ rot.T,
        "x": np.array(lmp.numpy.extract_atom("x"))[:nlocal][order],
        "energies": np.array(ext("pe", LMP_STYLE_ATOM, LMP_TYPE_VECTOR))[order],
        "unc": np.array(ext("u", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))[order] if unc else None,
        "unc_global": np.array(ext("u", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)) if unc else None,
        "press": np.array(ext("p", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)),
        "stress_atom": np.array(ext("sa", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))[order],
        "cstress_atom": np.array(ext("csa", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))[order],
        "volume": lmp.get_thermo("vol"),
    }
    return out


def ase_reference(model, atoms):
    atoms = atoms.copy()
    atoms.calc = SigmaCalculator(str(model))
    props = ["energy", "forces", "energies", "energies_std", "forces_std", "energy_std"]
    if atoms.pbc.all():
        props.append("stress")
    atoms.calc.calculate(atoms, props)
    return atoms.calc.results


def model_per_atom_virial(model, atoms):
    """Per-atom virials (half / centroid split) straight from the TorchScript model, summed to owners."""
    module = torch.jit.load(str(model))
    species = torch.tensor([list(module.elements).index(s) for s in atoms.get_chemical_symbols()])
    i, j, vec = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, float(module.cutoff))
    out = module(species, torch.from_numpy(np.stack([i, j])), torch.from_numpy(vec), len(atoms), False)
    return out["virial"].detach().numpy(), out["centroid_virial"].detach().numpy()


def assert_close(a, b, tol=TOL, what=""):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = np.abs(a - b).max() if a.size else 0.0
    assert err <= tol * max(1.0, np.abs(b).max() if b.size else 0.0), f"{what}: max |diff| = {err:.3e}"


# ------------------------------------------------------------------------------------ tests

def test_plugin_path_and_styles(lmp_factory, plugin):
    assert plugin.name.endswith("plugin.so") and plugin.is_file()
    lmp = lmp_factory()
    assert lmp.has_style("pair", "sigmapot")
    assert lmp.has_style("compute", "sigmapot/atom")


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_matches_ase_calculator(lmp_factory, model_file, tmp_path, name):
    atoms = STRUCTURES[name]()
    elements = ["Si", "Ge"]
    ref = ase_reference(model_file, atoms)
    res = run_lammps(lmp_factory(), model_file, atoms, elements, tmp_path)
    n = len(atoms)

    assert_close(res["energy"], ref["energy"], what="energy")
    assert_close(res["forces"], ref["forces"], what="forces")
    assert_close(res["energies"], ref["energies"], what="per-atom energy")
    assert_close(res["unc"][:, 0], ref["energies_std"], what="sigma_E")
    assert_close(res["unc"][:, 1], ref["forces_std"], what="sigma_F")
    assert_close(res["unc"][:, 2], ref["forces_interval"], what="force interval")
    g = res["unc_global"]
    assert_close(g, [ref["forces_std"].max(), ref["forces_std"].mean(), ref["energies_std"].max(),
                     ref["energy_std"]], what="global uncertainty vector")
    assert ref["forces_std"].max() > 1e-6  # the test model really has an ensemble spread

    # per-atom virials (stress/atom = -virial * nktv2p) against the model's own per-atom split
    vir, cvir = model_per_atom_virial(model_file, atoms)
    if np.allclose(write_lammps_data(atoms, tmp_path / "tmp.data", elements)[0], np.eye(3), atol=1e-12):
        assert_close(-res["stress_atom"] / NKTV2P, vir[:n, :6], what="stress/atom")
        assert_close(-res["cstress_atom"] / NKTV2P, cvir[:n], what="centroid/stress/atom")
    # per-atom sums equal the global virial
    total = -res["stress_atom"].sum(0) / NKTV2P
    assert_close(-res["cstress_atom"][:, :6].sum(0) / NKTV2P, total, what="centroid sum")
    if atoms.pbc.all():
        virial_ase = -ref["stress"] * atoms.get_volume()  # Voigt xx yy zz yz xz xy
        virial_lmp = res["press"] * res["volume"] / NKTV2P  # xx yy zz xy xz yz
        voigt_lmp = virial_lmp[[0, 1, 2, 5, 4, 3]]
        assert_close(voigt_lmp, virial_ase, what="global virial")
        assert_close(total[[0, 1, 2, 5, 4, 3]], virial_ase, what="sum of per-atom virial")


def test_float32_model(lmp_factory, sige_model, tmp_path):
    from sigmapot.export import export_model
    path = export_model(sige_model, tmp_path / "sige32.pt", dtype=torch.float32)
    atoms = cubic_sige()
    ref = ase_reference(path, atoms)
    res = run_lammps(lmp_factory(), path, atoms, ["Si", "Ge"], tmp_path)
    assert_close(res["energy"], ref["energy"], tol=1e-5, what="energy (float32)")
    assert_close(res["forces"], ref["forces"], tol=1e-4, what="forces (float32)")


def test_chunks_and_type_order(lmp_factory, model_file, tmp_path):
    """Chunked evaluation (chunk 5) and a type order that differs from the model's give the same."""
    atoms = cubic_sige()
    ref = ase_reference(model_file, atoms)
    res = run_lammps(lmp_factory(), model_file, atoms, ["Ge", "Si"], tmp_path,
                     pair_style="sigmapot chunk 5 threads 1 uncertainty_every 1")
    assert_close(res["energy"], ref["energy"], what="energy")
    assert_close(res["forces"], ref["forces"], what="forces")
    assert_close(res["unc"][:, 1], ref["forces_std"], what="sigma_F")


def test_hybrid_overlay_zbl(lmp_factory, model_file, tmp_path):
    """hybrid/overlay sigmapot + zbl = sum of the two; NULL leaves a type to the other style only."""
    atoms = cubic_sige()
    ref = ase_reference(model_file, atoms)
    zbl_coeff = "pair_coeff 1 1 {0} 14 14\npair_coeff 1 2 {0} 14 32\npair_coeff 2 2 {0} 32 32"
    zbl = zbl_coeff.format("zbl")
    res_zbl = run_lammps(lmp_factory(), model_file, atoms, ["Si", "Ge"], tmp_path / "z",
                         pair_style="zbl 2.0 3.0", pair_coeff=zbl_coeff.format(""), unc=False)
    res = run_lammps(lmp_factory(), model_file, atoms, ["Si", "Ge"], tmp_path,
                     pair_style="hybrid/overlay sigmapot zbl 2.0 3.0",
                     pair_coeff=f"pair_coeff * * sigmapot {model_file} Si Ge\n{zbl}")
    assert abs(res_zbl["energy"]) > 1e-6
    assert_close(res["energy"], ref["energy"] + res_zbl["energy"], what="hybrid energy")
    assert_close(res["forces"], ref["forces"] + res_zbl["forces"], what="hybrid forces")
    assert_close(res["unc"][:, 1], ref["forces_std"], what="hybrid sigma_F")

    # NULL: type 2 (Ge) only by zbl; sigmapot sees the Si atoms alone
    si_only = atoms[[a.symbol == "Si" for a in atoms]]
    ref_si = ase_reference(model_file, si_only)
    res_null = run_lammps(lmp_factory(), model_file, atoms, ["Si", "Ge"], tmp_path / "n",
                          pair_style="hybrid/overlay sigmapot zbl 2.0 3.0",
                          pair_coeff=f"pair_coeff * * sigmapot {model_file} Si NULL\n{zbl}")
    assert_close(res_null["energy"], ref_si["energy"] + res_zbl["energy"], what="NULL energy")
    is_si = np.array([a.symbol == "Si" for a in atoms])
    assert_close(res_null["unc"][is_si, 1], ref_si["forces_std"], what="NULL sigma_F")
    assert np.all(res_null["unc"][~is_si] == 0.0)


def test_fix_pair_extracts_uncertainty(lmp_factory, model_file, tmp_path):
    atoms = cubic_sige()
    ref = ase_reference(model_file, atoms)
    lmp = lmp_factory()
    res = run_lammps(lmp, model_file, atoms, ["Si", "Ge"], tmp_path,
                     extra="fix fp all pair 1 sigmapot sigma_f 1 sigma_e 1 force_interval 1")
    from lammps import LMP_STYLE_ATOM, LMP_TYPE_ARRAY
    order = np.argsort(np.array(lmp.numpy.extract_atom("id"))[:len(atoms)])
    arr = np.array(lmp.numpy.extract_fix("fp", LMP_STYLE_ATOM, LMP_TYPE_ARRAY))[order]
    assert_close(arr[:, 0], ref["forces_std"], what="fix pair sigma_f")
    assert_close(arr[:, 1], ref["energies_std"], what="fix pair sigma_e")
    assert_close(arr[:, 2], res["unc"][:, 2], what="fix pair force_interval")


def test_stale_uncertainty_is_an_error(lmp_factory, model_file, tmp_path):
    """A compute sigmapot/atom read on a step without fresh uncertainty errors instead of returning
    stale numbers."""
    atoms = cubic_sige()
    lmp = lmp_factory()
    run_lammps(lmp, model_file, atoms, ["Si", "Ge"], tmp_path)
    lmp.commands_string("""
        velocity all create 300 7 loop geom
        fix 1 all nve
        thermo 5
        thermo_style custom step pe
        run 7
        reset_timestep 100
    """)
    from lammps import LMP_STYLE_ATOM, LMP_TYPE_ARRAY
    with pytest.raises(Exception, match="no uncertainty for this step"):
        lmp.numpy.extract_compute("u", LMP_STYLE_ATOM, LMP_TYPE_ARRAY)


def test_fix_halt_on_sigma_f(lmp_factory, model_file, tmp_path):
    atoms = cubic_sige()
    lmp = lmp_factory()
    res = run_lammps(lmp, model_file, atoms, ["Si", "Ge"], tmp_path)
    threshold = 1.0001 * res["unc_global"][0]  # the rattled structure relaxes: passes it quickly?
    lmp.commands_string(f"""
        velocity all create 3000 11 loop geom
        fix 1 all nve
        variable maxsf equal c_u[1]
        fix stop all halt 5 v_maxsf > {threshold} error continue
        thermo 100
        run 200
    """)
    step = lmp.get_thermo("step")
    last = lmp.numpy.extract_compute("u", 0, 1)[0]
    assert step % 5 == 0
    if step < 200:
        assert last > threshold
    else:  # never passed: every checked value stayed below
        assert last <= threshold


def test_run0_min_nve_restart(lmp_factory, trained_si_file, tmp_path):
    atoms = _rattle(bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2), 9, amp=0.05, mix=False)
    elements = ["Si"]

    # a trained model: a random-weight one has no minimum near the crystal (its energy keeps
    # falling as atoms move together), so neither minimisation nor 1 ps of NVE would be meaningful

    # minimisation lowers energy and forces
    lmp = lmp_factory()
    res0 = run_lammps(lmp, trained_si_file, atoms, elements, tmp_path, unc=False)
    fmax0 = np.abs(res0["forces"]).max()
    lmp.commands_string("minimize 0 1e-3 200 2000")
    res1 = collect(lmp, unc=False)
    assert res1["energy"] < res0["energy"]
    assert np.abs(res1["forces"]).max() < min(1e-2, fmax0)

    # NVE, 1 ps at dt = 1 fs: total energy conserved
    lmp = lmp_factory()
    run_lammps(lmp, trained_si_file, atoms, elements, tmp_path / "nve")
    lmp.commands_string("""
        velocity all create 300 5 loop geom
        fix 1 all nve
        timestep 0.001
        thermo_style custom step temp pe ke etotal
        thermo 100
        run 0
    """)
    e0 = lmp.get_thermo("etotal")
    etots = []
    for _ in range(10):
        lmp.command("run 100 pre no post no")
        etots.append(lmp.get_thermo("etotal"))
    ke = lmp.get_thermo("ke")
    assert ke > 0.01
    drift = np.abs(np.array(etots) - e0).max()
    assert drift < 1e-4 * len(atoms), f"energy drift {drift:.2e} eV over 1 ps"

    # restart: continuous 20 steps == 10 steps, write_data, read_data, 10 steps
    def deck(lmp, data):
        lmp.commands_string(f"""
            units metal
            atom_style atomic
            atom_modify map array
            boundary p p p
            read_data {data}
            pair_style sigmapot
            pair_coeff * * {trained_si_file} Si
            compute u all sigmapot/atom
            compute pe all pe/atom
            compute sa all stress/atom NULL virial
            compute csa all centroid/stress/atom NULL virial
            compute p all pressure NULL virial
            fix 1 all nve
            thermo 10
        """)

    data = tmp_path / "start.data"
    write_lammps_data(atoms, data, elements)
    a = lmp_factory()
    deck(a, data)
    a.commands_string("velocity all create 900 3 loop geom\nrun 20")
    ref = collect(a)
    b = lmp_factory()
    deck(b, data)
    b.commands_string(f"velocity all create 900 3 loop geom\nrun 10\nwrite_data {tmp_path}/mid.data")
    c = lmp_factory()
    deck(c, tmp_path / "mid.data")
    c.commands_string("reset_timestep 10\nrun 10")
    res = collect(c)
    box = np.diag(atoms.cell.array)
    dx = res["x"] - ref["x"]
    dx -= box * np.round(dx / box)  # the same atoms, possibly wrapped differently
    assert_close(dx, np.zeros_like(dx), tol=1e-9, what="positions after restart")
    assert_close(res["forces"], ref["forces"], tol=1e-8, what="forces after restart")
    assert_close(res["energy"], ref["energy"], tol=1e-9, what="energy after restart")
