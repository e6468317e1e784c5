"""The compiled operators torch.ops.sigmapot.edge_basis and edge_vector_gradients (ops/edge_terms.cpp): the
edge-level part of the model (radial basis, monomials, neighbour sums, and their chain rule back to the
edge vectors).

The references are the model's PyTorch path (SigmaModel.basis_moments, SigmaModel._edge_gradients via
_energies_and_edge_gradients_reference) and finite differences.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sigmapot import ops
from sigmapot.config import ModelConfig
from sigmapot.model import SigmaModel, _component_major

if not ops.load_ops():
    pytest.skip(ops.missing_ops_message(), allow_module_level=True)


def model(elements=("Si", "Ge"), num_radial=8, envelope_p=6, cutoff=4.0) -> SigmaModel:
    net = SigmaModel(ModelConfig(elements=list(elements), num_radial=num_radial, envelope_p=envelope_p,
                                 cutoff=cutoff, ensemble_size=2))
    with torch.no_grad():
        net.avg_num_neighbors.fill_(12.5)
    return net


def edges(net: SigmaModel, n: int, E: int, seed: int = 0, dtype=torch.float64, shuffle: bool = True):
    """Random edges: centres in [0, n) in random order, lengths from 0 (coincident atoms) to beyond the
    cutoff, neighbours' elements at random; one atom without edges."""
    gen = torch.Generator().manual_seed(seed)
    center = torch.randint(1, n, (E,), generator=gen) if n > 1 else torch.zeros(E, dtype=torch.long)
    if not shuffle:
        center = center.sort().values
    vec = torch.randn(E, 3, generator=gen, dtype=torch.float64)
    r = net.cutoff * 1.2 * torch.rand(E, generator=gen, dtype=torch.float64)
    vec = vec / torch.linalg.vector_norm(vec, dim=-1, keepdim=True) * r.unsqueeze(-1)
    if E >= 2:
        vec[0] = 0.0
        vec[1] = torch.tensor([1e-6, 0.0, 0.0])
    species = torch.randint(0, net.num_elements, (n,), generator=gen)
    neighbor = torch.randint(0, n, (E,), generator=gen)
    return species, center, neighbor, vec.to(dtype)


def compiled_basis(net: SigmaModel, species, center, neighbor, vec, n):
    return torch.ops.sigmapot.edge_basis(vec, center, species[neighbor], n, net.num_elements, net.cutoff,
                                         net.num_radial, net.envelope_p, 1.0 / float(net.avg_num_neighbors))


def compiled_gradients(net: SigmaModel, g, species, center, neighbor, vec):
    return torch.ops.sigmapot.edge_vector_gradients(g, vec, center, species[neighbor], net.num_elements,
                                                    net.cutoff, net.num_radial, net.envelope_p,
                                                    1.0 / float(net.avg_num_neighbors))


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().max() / ref.abs().max().clamp(min=1e-300))


@pytest.mark.parametrize("elements,num_radial,envelope_p,shuffle", [
    (("Si", "Ge"), 8, 6, True), (("Si",), 8, 6, False), (("Si", "Ge", "C"), 5, 3, True), (("Si",), 11, 1, True)])
def test_basis_equals_the_reference(elements, num_radial, envelope_p, shuffle):
    net = model(elements, num_radial, envelope_p)
    n = 30
    species, center, neighbor, vec = edges(net, n, 600, shuffle=shuffle)
    got = compiled_basis(net, species, center, neighbor, vec, n)
    want = net.basis_moments(species, center, neighbor, vec.unsqueeze(0), n)          # component-major
    assert got.shape == (n, 20, net.num_elements * num_radial)
    assert rel(_component_major(got.unsqueeze(0)), want) < 1e-12
    assert got[0].abs().max() == 0                                                     # the atom without edges


# G = 1, 4, 8 with 8 radial functions are compiled for their sizes, the others take the general kernel
@pytest.mark.parametrize("elements,num_radial,G", [(("Si", "Ge"), 8, 3), (("Si",), 8, 1), (("Si", "Ge", "C"), 5, 2),
                                                   (("Si", "Ge"), 8, 4), (("Si",), 8, 8), (("Si", "Ge"), 6, 4)])
def test_gradients_equal_the_reference(elements, num_radial, G):
    net = model(elements, num_radial)
    n = 25
    species, center, neighbor, vec = edges(net, n, 500, seed=1)
    g = torch.randn(G, n, 20, net.num_elements * num_radial, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    got = compiled_gradients(net, g, species, center, neighbor, vec)
    v = vec.unsqueeze(0)
    r, u, phi, ylm = net._edge_terms(species, neighbor, v)
    flat, width = net._slots(center, n)
    _, phi_pad, ylm_pad = net._neighbour_sums(phi, ylm, flat, width, n)
    want = net._edge_gradients(g, species, neighbor, v, r, u, phi_pad, ylm_pad, flat)
    assert got.shape == want.shape == (G, 500, 3)
    assert rel(got, want) < 1e-12


def test_gradients_are_the_derivative_of_the_basis():
    """sum(g * basis(vec)) differentiated by finite differences along a random direction."""
    net = model()
    n = 8
    species, center, neighbor, vec = edges(net, n, 60, seed=3)
    vec[:2] = torch.tensor([[1.0, 0.5, -0.3], [2.0, -1.0, 0.4]], dtype=torch.float64)  # away from r = 0
    g = torch.randn(1, n, 20, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    direction = torch.randn(vec.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    energy = lambda x: float((g[0] * compiled_basis(net, species, center, neighbor, x, n)).sum())  # noqa: E731
    eps = 1e-6
    numeric = (energy(vec + eps * direction) - energy(vec - eps * direction)) / (2 * eps)
    analytic = float((compiled_gradients(net, g, species, center, neighbor, vec)[0] * direction).sum())
    assert analytic == pytest.approx(numeric, rel=1e-7, abs=1e-9)


def test_float32_equals_the_float64_reference():
    net = model()
    n = 40
    species, center, neighbor, vec = edges(net, n, 900, seed=6)
    g = torch.randn(2, n, 20, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    basis64 = compiled_basis(net, species, center, neighbor, vec, n)
    grad64 = compiled_gradients(net, g, species, center, neighbor, vec)
    basis32 = compiled_basis(net, species, center, neighbor, vec.float(), n)
    grad32 = compiled_gradients(net, g.float(), species, center, neighbor, vec.float())
    assert basis32.dtype == grad32.dtype == torch.float32
    assert rel(basis32.double(), basis64) < 1e-5
    assert rel(grad32.double(), grad64) < 1e-5


def test_bit_identical_for_one_and_two_threads():
    script = f"""
import hashlib, sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_edge_terms_op import compiled_basis, compiled_gradients, edges, model
torch.set_num_threads(int(sys.argv[1]))
net = model()
species, center, neighbor, vec = edges(net, 3000, 80000)
g = torch.randn(3, 3000, 20, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
out = compiled_basis(net, species, center, neighbor, vec, 3000).numpy().tobytes()
out += compiled_gradients(net, g, species, center, neighbor, vec).numpy().tobytes()
print(hashlib.sha256(out).hexdigest())
"""
    runs = [subprocess.run([sys.executable, "-c", script, str(threads)], capture_output=True, text=True,
                           timeout=300) for threads in (1, 2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert len(runs[0].stdout.strip()) == len(hashlib.sha256().hexdigest())
    assert runs[0].stdout == runs[1].stdout


def test_no_edges():
    net = model()
    species, center, neighbor, vec = edges(net, 5, 0)
    assert compiled_basis(net, species, center, neighbor, vec, 5).abs().sum() == 0
    g = torch.ones(2, 5, 20, 16, dtype=torch.float64)
    assert compiled_gradients(net, g, species, center, neighbor, vec).shape == (2, 0, 3)


@pytest.mark.parametrize("call,message", [
    (lambda net, s, c, nb, v, n: compiled_basis(net, s, c, nb, v, 3), "centres must lie in \\[0, 3\\)"),
    (lambda net, s, c, nb, v, n: compiled_basis(net, s + 2, c, nb, v, n), "neighbour elements must lie in \\[0, 2\\)"),
    (lambda net, s, c, nb, v, n: compiled_basis(net, s, c, nb, v[:, :2], n), "edge_vec must be \\(E, 3\\)"),
    (lambda net, s, c, nb, v, n: compiled_basis(net, s, c[:-1], nb[:-1], v, n), "must be \\(E,\\) with E = 50"),
    (lambda net, s, c, nb, v, n: compiled_basis(net, s, c, nb, v.requires_grad_(True), n), "inference-only"),
    (lambda net, s, c, nb, v, n: compiled_gradients(net, torch.zeros(1, n, 20, 8, dtype=v.dtype), s, c, nb, v),
     "g must be \\(G, n, 20, 16\\)"),
    (lambda net, s, c, nb, v, n: compiled_gradients(net, torch.zeros(1, n, 20, 16), s, c, nb, v), "g has dtype Float"),
])
def test_bad_inputs_raise_clear_errors(call, message):
    net = model()
    species, center, neighbor, vec = edges(net, 10, 50)
    with pytest.raises(RuntimeError, match=message):
        call(net, species, center, neighbor, vec, 10)
