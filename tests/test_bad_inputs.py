"""Hostile inputs on the Python side: every one gives an error naming the problem and the fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import small_model
from sigmapot import SigmaCalculator
from sigmapot.config import ConfigError, load_train_config
from sigmapot.data import DataError, read_frames
from sigmapot.export import ModelFileError, export_model
from sigmapot.train import split_frames

FRAME = ('2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:forces:R:3 energy={e} '
         'pbc="T T T"\nSi 0 0 0 {f} 0 0\nSi 1.3 1.3 1.3 0 0 0\n')


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("this is not a structure file\n", "cannot read"),
    ('2\nProperties=species:S:1:pos:R:3 pbc="F F F"\nSi 0 0 0\nSi 0 0 2.3\n', "lacks energy"),
    (FRAME.format(e="nan", f="0.1"), "energy contains NaN"),
    (FRAME.format(e="-10.0", f="inf"), "forces contains NaN or Inf"),
])
def test_bad_training_files(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        read_frames(write(tmp_path, "bad.extxyz", text))


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_frames(write(tmp_path, "data.weird", "1 2 3\n"))
    with pytest.raises(DataError, match="does not exist"):
        read_frames(tmp_path / "missing.extxyz")


def test_duplicated_frames_are_refused(tmp_path):
    path = write(tmp_path, "dup.extxyz", FRAME.format(e="-10.0", f="0.1") * 2 + FRAME.format(e="-9", f="0.2")
                 .replace("1.3 1.3 1.3", "1.4 1.2 1.3"))
    cfg = load_train_config(None, {"train": [str(path)]})
    with pytest.raises(DataError, match="repeats the structure"):
        split_frames(cfg)


def test_validation_elements_missing_from_training(tmp_path, si_data):
    val = write(tmp_path, "val.extxyz", FRAME.format(e="-10.0", f="0.1").replace("Si 1.3", "Ge 1.3"))
    from sigmapot.train import train
    cfg = load_train_config(None, {"train": [str(si_data / "train.extxyz")], "validation": str(val),
                                   "max_frames": 4, "epochs": 1, "output": str(tmp_path / "run")})
    with pytest.raises(DataError, match=r"\['Ge'\].*lacks"):
        train(cfg, progress=False)


def test_config_file_errors(tmp_path):
    cfg = write(tmp_path, "c.yaml", "train: x.extxyz\nmodel:\n  cuttoff: 4.0\n")
    with pytest.raises(ConfigError, match="did you mean 'cutoff'"):
        load_train_config(str(cfg), {})
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_train_config(str(write(tmp_path, "l.yaml", "- a\n- b\n")), {})
    with pytest.raises(ConfigError, match="config file .* does not exist"):
        load_train_config(str(tmp_path / "nope.yaml"), {})


def test_ordinary_checkpoint_and_other_formats_are_refused(tmp_path):
    model = small_model(["Si"])
    ckpt = tmp_path / "ckpt.pt"
    torch.save(model.state_dict(), ckpt)
    with pytest.raises(ModelFileError, match="not a TorchScript archive"):
        SigmaCalculator(str(ckpt))
    model.format_version = 99
    newer = export_model(model, tmp_path / "newer.pt")
    with pytest.raises(ModelFileError, match="format version 99.*upgrade"):
        SigmaCalculator(str(newer))
    model.format_version = 1
    older = export_model(model, tmp_path / "older.pt")
    with pytest.raises(ModelFileError, match="format version 1, older.*sigmapot export RUN_DIR"):
        SigmaCalculator(str(older))
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    foreign = tmp_path / "foreign.pt"
    scripted.save(str(foreign))
    with pytest.raises(ModelFileError, match="not a sigmapot model"):
        SigmaCalculator(str(foreign))


def test_single_atom_empty_and_overlapping_structures(model_file):
    calc = SigmaCalculator(str(model_file))
    single = Atoms("Si", positions=[[0, 0, 0]])
    single.calc = calc
    assert np.isfinite(single.get_potential_energy())
    np.testing.assert_allclose(single.get_forces(), 0.0)
    # two atoms far closer than anything in training data: finite energy, forces and uncertainty
    close = Atoms("SiSi", positions=[[0, 0, 0], [0.05, 0, 0]])
    close.calc = calc
    assert np.isfinite(close.get_potential_energy()) and np.isfinite(close.get_forces()).all()
    assert np.isfinite(calc.results["forces_std"]).all()
    empty = Atoms()
    empty.calc = calc
    assert empty.get_potential_energy() == 0.0


def test_more_bad_frames(tmp_path):
    with pytest.raises(DataError, match="has no atoms"):
        read_frames(write(tmp_path, "zero.extxyz", '0\nLattice="5 0 0 0 5 0 0 0 5" energy=-1.0 pbc="T T T"\n'))
    good = FRAME.format(e="-10.0", f="0.1")
    bad_shape = good.replace("Si 0 0 0 0.1 0 0", "Si 0 0 0 0.1 0")
    with pytest.raises(DataError):
        read_frames(write(tmp_path, "shape.extxyz", bad_shape))


def test_yaml_with_python_tags_is_refused(tmp_path):
    cfg = write(tmp_path, "evil.yaml", "train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not plain YAML"):
        load_train_config(str(cfg), {})


def test_calculator_refuses_nan_positions_and_singular_periodic_cell(model_file):
    calc = SigmaCalculator(str(model_file))
    atoms = Atoms("Si2", positions=[[0, 0, 0], [np.nan, 0, 0]])
    atoms.calc = calc
    with pytest.raises(ValueError, match="NaN or Inf"):
        atoms.get_potential_energy()
    flat = Atoms("Si2", positions=[[0, 0, 0], [1.2, 1.2, 0]], cell=[[4, 0, 0], [0, 4, 0], [0, 0, 0]], pbc=True)
    flat.calc = calc
    with pytest.raises(ValueError, match="cell is singular"):
        flat.get_potential_energy()


def test_resume_without_checkpoint_is_explained(tmp_path, si_data):
    from sigmapot.train import train
    cfg = load_train_config(None, {"train": [str(si_data / "train.extxyz")], "output": str(tmp_path / "r")})
    with pytest.raises(FileNotFoundError, match="no checkpoint.*start without --resume"):
        train(cfg, resume=True, progress=False)


def test_calculator_stops_on_non_finite_model_output(tmp_path):
    model = small_model(["Si"])
    with torch.no_grad():
        model.mlp[0].weight.fill_(float("nan"))
    atoms = Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]])
    atoms.calc = SigmaCalculator(str(export_model(model, tmp_path / "nan.pt")))
    with pytest.raises(FloatingPointError, match=r"non-finite energies; atoms at \[0, 1\]"):
        atoms.get_potential_energy()
