"""The compiled operator torch.ops.sigmapot.atom_energies (ops/atom_energies.cpp): the atom-level part of
the model (radial mix, channel mixes, invariants, readout) and its gradient w.r.t. the basis moments.

The reference is SigmaModel.atom_energies_reference (training's operations, autograd), and finite
differences of the energies.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sigmapot import ops
from sigmapot.config import ModelConfig
from sigmapot.model import SigmaModel

if not ops.load_ops():
    pytest.skip(ops.missing_ops_message(), allow_module_level=True)


def model(elements=("Si", "Ge"), K=8, hidden=(32, 32), shared=False, dtype=torch.float64, seed=0) -> SigmaModel:
    """Random weights with non-trivial feature statistics, so every term of the readout matters."""
    net = SigmaModel(ModelConfig(elements=list(elements), num_channels=K, hidden=list(hidden), ensemble_size=3,
                                 shared_descriptor=shared), seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        net.feature_mean.normal_(0.0, 0.3, generator=gen)
        net.feature_std.uniform_(0.5, 2.0, generator=gen)
        net.energy_scale.fill_(0.7)
        net.reference_energy.copy_(torch.linspace(-4.0, -3.0, len(elements), dtype=torch.float64))
        net.mlp[-1].weight.mul_(30.0)
    return net.to(dtype).requires_grad_(False)


def basis_and_species(net: SigmaModel, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    basis = 0.4 * torch.randn(n, 20, net.num_radial * net.num_elements, generator=gen,
                              dtype=net.reference_energy.dtype)
    species = torch.randint(0, net.num_elements, (n,), generator=gen)
    return basis, species


def fused(net: SigmaModel, species: torch.Tensor, basis: torch.Tensor, members: bool):
    """What SigmaModel._atom_level computes with the operator."""
    h, grad = torch.ops.sigmapot.atom_energies(
        basis, net.radial_weight, net.channel_mix, net.feature_mean, net.feature_std,
        [layer.weight for layer in net.mlp], [layer.bias for layer in net.mlp], species,
        float(net.energy_scale), members)
    return net.reference_energy[species] + net.energy_scale * h, grad


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().max() / ref.abs().max().clamp(min=1e-300))


# n = 300 spans three tiles of 128 atoms (the last one partial)
@pytest.mark.parametrize("elements,K,hidden,shared,n", [
    (("Si", "Ge"), 8, (32, 32), False, 300),
    (("Si",), 16, (32, 32), False, 130),
    (("Si", "Ge"), 5, (7,), True, 40),
    (("Si", "Ge", "C"), 6, (9,), False, 17),
    (("Si",), 4, (16, 8, 4), True, 1),
])
@pytest.mark.parametrize("members", [True, False])
def test_equals_the_reference_float64(elements, K, hidden, shared, n, members):
    net = model(elements, K, hidden, shared)
    basis, species = basis_and_species(net, n)
    energy, grad = fused(net, species, basis, members)
    ref_energy, ref_grad = net.atom_energies_reference(species, basis, members)
    assert energy.shape == ref_energy.shape == (3, n)
    assert grad.shape == ref_grad.shape == (3 if members else 1, n, 20, basis.shape[2])
    assert rel(energy, ref_energy) < 1e-12
    assert rel(grad, ref_grad) < 1e-12
    assert ref_grad.abs().max() > 1e-3


@pytest.mark.parametrize("members", [True, False])
def test_equals_the_reference_float32(members):
    net = model(K=16, dtype=torch.float32)
    basis, species = basis_and_species(net, 257)
    energy, grad = fused(net, species, basis, members)
    ref_energy, ref_grad = model(K=16).atom_energies_reference(species, basis.double(), members)
    assert energy.dtype == grad.dtype == torch.float32
    assert rel(energy.double(), ref_energy) < 1e-5
    assert rel(grad.double(), ref_grad) < 1e-5


def test_gradient_matches_finite_differences():
    net = model(K=6, hidden=(16, 16))
    basis, species = basis_and_species(net, 9, seed=3)
    _, grad = fused(net, species, basis, True)
    direction = torch.randn(basis.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    eps = 1e-6
    plus = fused(net, species, basis + eps * direction, True)[0].sum(1)
    minus = fused(net, species, basis - eps * direction, True)[0].sum(1)
    numeric = (plus - minus) / (2 * eps)
    analytic = (grad * direction).sum((1, 2, 3))          # grad includes energy_scale
    torch.testing.assert_close(analytic, numeric, atol=1e-7, rtol=1e-7)


def test_members_sum_to_the_mean_gradient():
    net = model()
    basis, species = basis_and_species(net, 50)
    _, each = fused(net, species, basis, True)
    _, summed = fused(net, species, basis, False)
    torch.testing.assert_close(each.sum(0, keepdim=True), summed, atol=1e-13, rtol=0)


def test_bit_identical_for_one_and_two_threads():
    script = f"""
import hashlib, sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_atom_energies_op import basis_and_species, fused, model
torch.set_num_threads(int(sys.argv[1]))
net = model(K=16)
basis, species = basis_and_species(net, 1000)
for members in (True, False):
    energy, grad = fused(net, species, basis, members)
    print(hashlib.sha256(energy.numpy().tobytes() + grad.numpy().tobytes()).hexdigest())
"""
    runs = [subprocess.run([sys.executable, "-c", script, str(threads)], capture_output=True, text=True,
                           timeout=300) for threads in (1, 2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert len(runs[0].stdout.split()) == 2
    assert runs[0].stdout == runs[1].stdout


def test_no_atoms():
    net = model()
    basis, species = basis_and_species(net, 0)
    energy, grad = fused(net, species, basis, True)
    assert energy.shape == (3, 0) and grad.shape == (3, 0, 20, 16)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.update(basis=a["basis"][:, :19]), "basis must be \\(n, 20, B\\)"),
    (lambda a: a.update(basis=a["basis"].float()), "must be Float"),
    (lambda a: a.update(species=a["species"][:-1]), "species has 9 entries for 10 atoms"),
    (lambda a: a.update(species=a["species"] + 5), "species indices must lie in \\[0, 2\\)"),
    (lambda a: a.update(radial_weight=a["radial_weight"][:, :-1]), "does not act on B = 16"),
    (lambda a: a.update(weights=a["weights"][:-1], biases=a["biases"][:-1]), "last layer must have one output"),
    (lambda a: a.update(weights=a["weights"][-1:], biases=a["biases"][-1:]), "at least one hidden layer"),
    (lambda a: a.update(biases=a["biases"][:-1]), "one bias per weight"),
    (lambda a: a.update(basis=a["basis"].clone().requires_grad_(True)), "inference-only"),
])
def test_bad_inputs_raise_clear_errors(change, message):
    net = model()
    basis, species = basis_and_species(net, 10)
    args = dict(basis=basis, radial_weight=net.radial_weight, channel_mix=net.channel_mix,
                feature_mean=net.feature_mean, feature_std=net.feature_std,
                weights=[layer.weight for layer in net.mlp], biases=[layer.bias for layer in net.mlp],
                species=species)
    change(args)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sigmapot.atom_energies(*args.values(), 1.0, True)
