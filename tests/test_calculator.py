"""The ASE calculator: boundaries, errors, uncertainty results, and use inside ASE MD / optimisers."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.md.verlet import VelocityVerlet
from ase.md.velocitydistribution import thermalize_momenta
from ase.optimize import BFGS
from ase import units

from conftest import rattled_sige
from sigmapot import SigmaCalculator
from sigmapot.export import ModelFileError


@pytest.fixture(scope="module")
def calc(model_file):
    return SigmaCalculator(str(model_file))


def test_results_carry_calibrated_uncertainty(calc):
    atoms = rattled_sige(7)
    atoms.calc = calc
    atoms.get_potential_energy()
    r = calc.results
    n = len(atoms)
    assert r["energies"].shape == (n,) and r["energies_std"].shape == (n,) and r["forces_std"].shape == (n,)
    assert r["energies"].sum() == pytest.approx(r["energy"], abs=1e-9)
    assert (r["forces_std"] > 0).all() and r["energy_std"] > 0
    # fixture calibration: interval = 2.0 sigma_F
    np.testing.assert_allclose(r["forces_interval"], 2.0 * r["forces_std"], rtol=1e-12)


def test_mixed_and_open_boundaries(calc):
    atoms = rattled_sige(8)
    atoms.pbc = [True, False, True]
    atoms.calc = calc
    e_mixed = atoms.get_potential_energy()
    atoms.pbc = False
    e_open = atoms.get_potential_energy()
    assert np.isfinite(e_mixed) and np.isfinite(e_open) and e_mixed != e_open
    with pytest.raises(Exception, match="stress needs periodic"):
        atoms.get_stress()


def test_unknown_element_names_it_and_the_model_elements(calc):
    atoms = Atoms("SiC", positions=[[0, 0, 0], [1.8, 0, 0]])
    atoms.calc = calc
    with pytest.raises(ValueError, match=r"\['C'\].*\['Si', 'Ge'\]"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04truncated"])
def test_bad_model_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a TorchScript archive"):
        SigmaCalculator(str(path))
    with pytest.raises(ModelFileError, match="does not exist"):
        SigmaCalculator(str(tmp_path / "missing.pt"))


def test_ase_md_and_cell_relaxation_run(calc, trained_si_file):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (2, 2, 2)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    e0 = atoms.get_total_energy()
    dyn.run(20)
    assert abs(atoms.get_total_energy() - e0) / len(atoms) < 1e-3
    # relax on a trained landscape: a random-weight model has holes an optimiser can fall into
    rattled = bulk("Si", "diamond", a=5.5, cubic=True)
    rattled.set_cell(rattled.cell * [1.02, 0.99, 1.0], scale_atoms=True)
    rattled.rattle(0.05, seed=3)
    rattled.calc = SigmaCalculator(str(trained_si_file))
    opt = BFGS(FrechetCellFilter(rattled), logfile=None)
    # converge the filter (atoms + cell) tighter than the bound checked on the real forces: the filter's
    # atom forces are expressed in the deformed frame and differ from them by the cell strain
    converged = opt.run(fmax=0.01, steps=500)
    assert converged and np.abs(rattled.get_forces()).max() < 0.05


def test_mean_force_mode_matches_and_refuses_uncertainty(model_file):
    """uncertainty=False (the mean-force path LAMMPS uses with uncertainty_every 0) gives the same
    energy, forces and stress as the full call, and says how to get uncertainties when asked."""
    atoms = rattled_sige(11)
    full, mean = SigmaCalculator(str(model_file)), SigmaCalculator(str(model_file), uncertainty=False)
    ref = atoms.copy()
    ref.calc = full
    atoms.calc = mean
    assert abs(atoms.get_potential_energy() - ref.get_potential_energy()) < 1e-10
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), atol=1e-10)
    assert "forces_std" not in mean.results
    with pytest.raises(ValueError, match="uncertainty=True"):
        mean.get_property("forces_std", atoms)


@pytest.mark.parametrize("pbc", [True, False])
def test_chunked_evaluation_equals_one_call(model_file, pbc):
    """Chunks of centre atoms (what LAMMPS hands the model) sum to the single call: energies, forces,
    virials, member values and uncertainties; the 1x1x1 cell has periodic self-images in its edges."""
    from sigmapot.calculator import evaluate_structure
    from sigmapot.export import load_exported

    model = load_exported(model_file)
    for atoms in (rattled_sige(12, size=(1, 1, 1)), rattled_sige(13)):
        atoms.pbc = pbc
        species = SigmaCalculator(str(model_file)).species_indices(atoms.get_chemical_symbols())
        args = (model, species, atoms.positions, atoms.cell.array, atoms.pbc, torch.float64)
        ref, ref_unc = evaluate_structure(*args, chunk=10_000)
        for chunk in (1, 5, 17):
            out, unc = evaluate_structure(*args, chunk=chunk)
            assert out.keys() == ref.keys() and unc.keys() == ref_unc.keys()
            for key in ref:
                torch.testing.assert_close(out[key], ref[key], rtol=0, atol=1e-10, msg=f"{key}, chunk {chunk}")
            for key in ref_unc:
                torch.testing.assert_close(unc[key], ref_unc[key], rtol=0, atol=1e-10, msg=f"{key}, chunk {chunk}")
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        SigmaCalculator(str(model_file), chunk=0)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the heap settings are glibc's")
def test_calculator_keeps_freed_heap_memory(model_file):
    """As the pair style does: freed work memory stays in the process (no page faults on reuse)."""
    script = textwrap.dedent(f"""
        import json, resource
        import numpy as np
        from sigmapot import SigmaCalculator
        SigmaCalculator({str(model_file)!r})
        faults = []
        for _ in range(4):  # 64 MiB of work arrays per round, as a large model call allocates
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            blocks = [np.ones((16 << 20) // 8) for _ in range(4)]
            del blocks
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(json.dumps(faults))""")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    faults = json.loads(out.stdout.splitlines()[-1])
    assert faults[0] > 1000, faults            # the first round maps the memory in
    assert max(faults[1:]) < faults[0] / 10, faults   # later rounds reuse it (glibc defaults: ~2000 each)
