"""Physics of the model: autograd forces/stress vs finite differences, invariances, smoothness, export."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from conftest import rattled_sige
from sigmapot import SigmaCalculator
from sigmapot.export import export_model, load_exported
from sigmapot.neighbors import neighbor_list


@pytest.fixture(scope="module")
def calc(model_file):
    return SigmaCalculator(str(model_file))


def energy(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy()


def test_forces_match_finite_differences(calc):
    atoms = rattled_sige(1, size=(1, 1, 1))
    atoms.calc = calc
    forces = atoms.get_forces()
    h = 1e-5
    fd = np.zeros_like(forces)
    for a in range(len(atoms)):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, c] += h
            minus.positions[a, c] -= h
            fd[a, c] = -(energy(calc, plus) - energy(calc, minus)) / (2 * h)
    assert np.abs(forces).max() > 0.1
    np.testing.assert_allclose(forces, fd, atol=1e-7)


def test_stress_matches_strain_derivative(calc):
    atoms = rattled_sige(2, size=(1, 1, 1))
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.3, 0.1], [0.2, 0.0, -0.1], [0.0, 0.4, 0.0]]),
                   scale_atoms=True)
    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)
    h = 1e-6
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            e = []
            for sign in (1, -1):
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
                e.append(energy(calc, strained))
            fd[a, b] = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
    fd = 0.5 * (fd + fd.T)
    assert np.abs(stress).max() > 1e-3
    np.testing.assert_allclose(stress, fd, atol=1e-8)


def test_rotation_translation_permutation_invariance(calc):
    atoms = rattled_sige(3, size=(1, 1, 1))
    atoms.pbc = False
    atoms.center(vacuum=3.0)
    atoms.calc = calc
    e0, f0, s0 = atoms.get_potential_energy(), atoms.get_forces(), calc.results["forces_std"]

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T + np.array([1.7, -3.2, 0.4])
    moved.calc = calc
    assert moved.get_potential_energy() == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(moved.get_forces(), f0 @ q.T, atol=1e-10)
    np.testing.assert_allclose(calc.results["forces_std"], s0, atol=1e-10)

    perm = rng.permutation(len(atoms))
    shuffled = atoms[perm]
    shuffled.calc = calc
    assert shuffled.get_potential_energy() == pytest.approx(e0, abs=1e-10)
    np.testing.assert_allclose(shuffled.get_forces(), f0[perm], atol=1e-10)


def test_energy_and_forces_are_smooth_at_the_cutoff(calc):
    rc = calc.cutoff
    # a dimer pulled through the cutoff: energy and force go to their isolated values continuously
    rs = rc + np.array([-2e-3, -1e-3, -1e-6, 1e-6, 1e-3])
    es, fs = [], []
    for r in rs:
        dimer = Atoms("SiGe", positions=[[0, 0, 0], [r, 0, 0]], pbc=False)
        dimer.calc = calc
        es.append(dimer.get_potential_energy())
        fs.append(dimer.get_forces()[0, 0])
    far = es[-1]
    assert abs(es[2] - far) < 1e-12 and abs(fs[2]) < 1e-12
    assert 0 < abs(es[0] - far) < 1e-6 and abs(fs[0]) < 1e-4


def test_exported_file_equals_in_memory_model(sige_model, model_file):
    atoms = rattled_sige(4)
    i, j, vec = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, sige_model.cutoff)
    species = torch.tensor([sige_model.elements.index(s) for s in atoms.get_chemical_symbols()])
    args = (species, torch.from_numpy(np.stack([i, j])), torch.from_numpy(vec), len(atoms), True)
    ref = sige_model(*args)                    # the PyTorch invariants (training's path)
    assert load_exported(model_file).use_ops   # the file's: the compiled operator (sigmapot.ops)
    out = load_exported(model_file)(*args)
    assert set(ref) == set(out)
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], atol=1e-10, rtol=0)
    # with_virial=False (MD steps without pressure): the same energies and forces, no virial outputs
    lean = load_exported(model_file)(*args, False)
    assert set(ref) - set(lean) == {"virial", "centroid_virial", "total_virial"}
    for key in lean:
        torch.testing.assert_close(lean[key], ref[key], atol=1e-12, rtol=0)
    # frozen weights (autograd records no weight products) and the trained model left trainable
    assert not any(p.requires_grad for p in load_exported(model_file).parameters())
    assert all(p.requires_grad for p in sige_model.parameters())


@pytest.mark.parametrize("elements", [["Si", "Ge"], ["Si"]])
def test_forces_equal_the_autograd_reference(elements, model_file, tmp_path):
    """The model's closed-form edge gradients (and, in the exported file, the compiled invariants)
    against autograd through the whole model w.r.t. per-member edge vectors, as training computes them:
    per-member and mean forces and virials, float64, to 1e-10 eV/A."""
    from conftest import small_model
    from sigmapot.model import edge_forces, edge_virials
    model = small_model(elements)
    exported = load_exported(export_model(model, tmp_path / "m.pt"))
    atoms = rattled_sige(4)
    if elements == ["Si"]:
        atoms.set_chemical_symbols(["Si"] * len(atoms))
    i, j, vec = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    species = torch.tensor([model.elements.index(s) for s in atoms.get_chemical_symbols()])
    edges, edge_vec, n = torch.from_numpy(np.stack([i, j])), torch.from_numpy(vec), len(atoms)
    copies = edge_vec.unsqueeze(0).expand(model.ensemble_size, -1, -1).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.atomic_energies(species, edges[0], edges[1], copies, n).sum(), copies)
    member_forces = edge_forces(grad, edges[0], edges[1], n)
    virial = edge_virials(edge_vec, grad.mean(0), edges[0], edges[1], n)["virial"]
    assert member_forces.abs().max() > 0.1
    for run in (model, exported):
        out = run(species, edges, edge_vec, n, True)
        torch.testing.assert_close(out["member_forces"], member_forces, atol=1e-10, rtol=0)
        torch.testing.assert_close(out["forces"], member_forces.mean(0), atol=1e-10, rtol=0)
        torch.testing.assert_close(out["virial"], virial, atol=1e-10, rtol=0)
        lean = run(species, edges, edge_vec, n, False)
        torch.testing.assert_close(lean["forces"], member_forces.mean(0), atol=1e-10, rtol=0)


def test_model_files_without_the_compiled_operators(sige_model, model_file, tmp_path):
    """Where libsigmapot_ops.so is missing, loading a file that calls it says what to install, and an
    export falls back to the PyTorch invariants (with a warning) and still loads and agrees."""
    script = (f"import sigmapot.ops as ops; ops.library_path = lambda: None\n"
              f"from sigmapot.export import load_exported\nload_exported({str(model_file)!r})")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ModelFileError" in proc.stderr and "compiled operators (libsigmapot_ops.so)" in proc.stderr
    assert "make plugin" in proc.stderr

    import sigmapot.export as export
    original = export.load_ops
    export.load_ops = lambda: False
    try:
        with pytest.warns(UserWarning, match="slower PyTorch path"):
            plain = export_model(sige_model, tmp_path / "plain.pt")
    finally:
        export.load_ops = original
    assert not load_exported(plain).use_ops
    atoms = rattled_sige(6)
    for name in ("forces", "energy"):
        a, b = SigmaCalculator(str(plain)), SigmaCalculator(str(model_file))
        np.testing.assert_allclose(a.get_property(name, atoms.copy()), b.get_property(name, atoms.copy()),
                                   atol=1e-10, rtol=0)


def test_float32_export_agrees_with_float64(sige_model, tmp_path):
    path = export_model(sige_model, tmp_path / "m32.pt", dtype=torch.float32)
    atoms = rattled_sige(5)
    e64 = energy(SigmaCalculator(str(export_model(sige_model, tmp_path / "m64.pt"))), atoms)
    e32 = energy(SigmaCalculator(str(path)), atoms)
    assert load_exported(path).dtype_name == "float32"
    assert abs(e32 - e64) / len(atoms) < 1e-5


def test_periodic_cell_equals_explicit_supercell(calc):
    atoms = rattled_sige(6, size=(1, 1, 1))
    atoms.calc = calc
    e1, f1 = atoms.get_potential_energy(), atoms.get_forces()
    big = atoms.repeat((2, 3, 1))
    big.calc = calc
    assert big.get_potential_energy() == pytest.approx(6 * e1, abs=1e-9)
    np.testing.assert_allclose(big.get_forces()[: len(atoms)], f1, atol=1e-10)


def test_cell_smaller_than_cutoff(calc):
    prim = bulk("Si", "diamond", a=5.43)  # 2 atoms, cell vectors 3.84 A < 2 r_c
    prim.positions[1] += [0.05, -0.02, 0.03]
    assert min(np.linalg.norm(prim.cell.array, axis=1)) < calc.cutoff
    prim.calc = calc
    e, f = prim.get_potential_energy(), prim.get_forces()
    sc = prim.repeat((3, 3, 3))
    sc.calc = calc
    assert sc.get_potential_energy() == pytest.approx(27 * e, abs=1e-9)
    np.testing.assert_allclose(sc.get_forces()[:2], f, atol=1e-10)
    np.testing.assert_allclose(f.sum(0), 0.0, atol=1e-10)
