"""The compiled operator torch.ops.sigmapot.edge_gradients (ops/edge_gradients.cpp) against the PyTorch path.

The reference is SigmaModel.slot_gradients, which SigmaModel._edge_gradients uses on other devices (and
on CPU without the compiled operators).
"""
from __future__ import annotations

import pytest
import torch

from sigmapot import ops
from sigmapot.config import ModelConfig
from sigmapot.model import SigmaModel, bessel_basis, bessel_basis_derivative

if not ops.load_ops():
    pytest.skip(ops.missing_ops_message(), allow_module_level=True)

edge_gradients = torch.ops.sigmapot.edge_gradients

_MODEL = SigmaModel(ModelConfig(elements=["Si"]))


def reference(g: torch.Tensor, ylm: torch.Tensor, phi: torch.Tensor, dphi: torch.Tensor) -> torch.Tensor:
    """(G, n, width, 4) slot gradients: the model's PyTorch path."""
    return _MODEL.to(g.dtype).slot_gradients(g, ylm, phi, dphi)


def random_inputs(G: int, n: int, width: int, B: int, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(G, n, 20, B, generator=gen, dtype=torch.float64)
    ylm = torch.randn(n, width, 20, generator=gen, dtype=torch.float64)
    phi = torch.randn(n, width, B, generator=gen, dtype=torch.float64)
    dphi = torch.randn(n, width, B, generator=gen, dtype=torch.float64)
    return [t.to(dtype) for t in (g, ylm, phi, dphi)]


def realistic_inputs(G: int, n: int, width: int, B: int, dtype=torch.float64, seed: int = 0):
    """Slots filled as _neighbour_sums does: real unit-vector monomials and radial basis (B/8 element
    blocks, each edge in one block), a random number of occupied slots per atom, the rest all zero.
    Returns the inputs and the (n, width) mask of occupied slots."""
    gen = torch.Generator().manual_seed(seed)
    Nb, Z, cutoff = 8, B // 8, 5.0
    vec = torch.randn(n, width, 3, generator=gen, dtype=torch.float64)
    r = 1.5 + 4.0 * torch.rand(n, width, generator=gen, dtype=torch.float64)     # some beyond the cutoff
    vec = vec / torch.linalg.vector_norm(vec, dim=-1, keepdim=True) * r.unsqueeze(-1)
    u = vec / r.unsqueeze(-1)
    ylm = _MODEL._monomials(u)
    phi = bessel_basis(r, cutoff, Nb, 6)
    dphi = bessel_basis_derivative(r, cutoff, Nb, 6)
    if Z > 1:
        block = torch.nn.functional.one_hot(torch.randint(0, Z, (n, width), generator=gen), Z).to(phi.dtype)
        phi = (block.unsqueeze(-1) * phi.unsqueeze(-2)).flatten(-2)
        dphi = (block.unsqueeze(-1) * dphi.unsqueeze(-2)).flatten(-2)
    counts = torch.randint(0, width + 1, (n,), generator=gen)
    counts[0] = width                                                            # one full row
    if n > 1:
        counts[1] = 0                                                            # one atom without neighbours
    mask = torch.arange(width).unsqueeze(0) < counts.unsqueeze(1)                # (n, width)
    m = mask.unsqueeze(-1).to(phi.dtype)
    ylm, phi, dphi = ylm * m, phi * m, dphi * m
    g = torch.randn(G, n, 20, B, generator=gen, dtype=torch.float64)
    return [t.to(dtype) for t in (g, ylm, phi, dphi)], mask


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().max() / ref.abs().max().clamp(min=1e-300))


@pytest.mark.parametrize("G,n,width,B", [(1, 17, 30, 8), (4, 9, 30, 16), (4, 40, 1, 8), (1, 3, 1, 16),
                                         (2, 300, 7, 8), (3, 5, 12, 24), (4, 70, 30, 8)])
def test_random_float64(G, n, width, B):
    g, ylm, phi, dphi = random_inputs(G, n, width, B)
    out = edge_gradients(g, ylm, phi, dphi)
    assert out.shape == (G, n, width, 4) and out.dtype == torch.float64
    assert rel(out, reference(g, ylm, phi, dphi)) < 1e-12


@pytest.mark.parametrize("G,n,width,B", [(1, 17, 30, 8), (4, 9, 30, 16), (4, 40, 1, 8), (2, 300, 7, 8)])
def test_random_float32(G, n, width, B):
    g, ylm, phi, dphi = random_inputs(G, n, width, B, dtype=torch.float32, seed=1)
    out = edge_gradients(g, ylm, phi, dphi)
    assert out.shape == (G, n, width, 4) and out.dtype == torch.float32
    want = reference(*[t.double() for t in (g, ylm, phi, dphi)])
    assert rel(out.double(), want) < 1e-5
    assert rel(out, reference(g, ylm, phi, dphi)) < 1e-5


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("G,B", [(1, 8), (4, 8), (4, 16)])
def test_realistic(G, B, dtype, tol):
    (g, ylm, phi, dphi), mask = realistic_inputs(G, 60, 30, B, dtype=dtype, seed=G + B)
    assert (~mask).any() and mask.any()
    out = edge_gradients(g, ylm, phi, dphi)
    want = reference(*[t.double() for t in (g, ylm, phi, dphi)])
    assert rel(out.double(), want) < tol
    # empty slots: exactly zero
    assert torch.equal(out[:, ~mask], torch.zeros_like(out[:, ~mask]))
    assert out[:, mask].abs().amax() > 0


@pytest.mark.parametrize("G,n,width,B", [(1, 0, 30, 8), (4, 0, 1, 16), (4, 5, 0, 8), (0, 5, 3, 8)])
def test_empty(G, n, width, B):
    for dtype in (torch.float32, torch.float64):
        g, ylm, phi, dphi = random_inputs(G, n, width, B, dtype=dtype)
        out = edge_gradients(g, ylm, phi, dphi)
        assert out.shape == (G, n, width, 4) and out.dtype == dtype


def test_threads():
    """Large enough to be split over threads; the result is bit-identical for 1 and 2 threads."""
    threads = torch.get_num_threads()
    try:
        for dtype in (torch.float32, torch.float64):
            (g, ylm, phi, dphi), _ = realistic_inputs(4, 500, 30, 8, dtype=dtype, seed=3)
            outs = []
            for t in (1, 2):
                torch.set_num_threads(t)
                outs.append(edge_gradients(g, ylm, phi, dphi))
            assert torch.equal(outs[0], outs[1])
    finally:
        torch.set_num_threads(threads)


def test_non_contiguous_inputs():
    g, ylm, phi, dphi = random_inputs(3, 11, 6, 8, seed=4)
    gt = g.transpose(2, 3).contiguous().transpose(2, 3)
    ylm_t = ylm.transpose(0, 1).contiguous().transpose(0, 1)
    phi_big = torch.randn(11, 6, 16, dtype=torch.float64)
    phi_big[..., ::2] = phi
    assert not (gt.is_contiguous() or ylm_t.is_contiguous() or phi_big[..., ::2].is_contiguous())
    out = edge_gradients(gt, ylm_t, phi_big[..., ::2], dphi)
    assert rel(out, reference(g, ylm, phi, dphi)) < 1e-12


def test_torchscript():
    @torch.jit.script
    def slots(g: torch.Tensor, ylm: torch.Tensor, phi: torch.Tensor, dphi: torch.Tensor) -> torch.Tensor:
        return torch.ops.sigmapot.edge_gradients(g, ylm, phi, dphi)

    g, ylm, phi, dphi = random_inputs(2, 7, 5, 8, seed=5)
    assert rel(slots(g, ylm, phi, dphi), reference(g, ylm, phi, dphi)) < 1e-12


def test_bad_inputs():
    g, ylm, phi, dphi = random_inputs(2, 5, 4, 8)
    with pytest.raises(RuntimeError, match="20 monomial components"):
        edge_gradients(g[:, :, :19], ylm, phi, dphi)
    with pytest.raises(RuntimeError, match="20 monomials"):
        edge_gradients(g, ylm[..., :10], phi, dphi)
    with pytest.raises(RuntimeError, match="4-D"):
        edge_gradients(g[0], ylm, phi, dphi)
    with pytest.raises(RuntimeError, match="3-D"):
        edge_gradients(g, ylm, phi[None], dphi)
    with pytest.raises(RuntimeError, match="does not match phi_pad"):
        edge_gradients(g, ylm, phi, dphi[:, :3])
    with pytest.raises(RuntimeError, match="differ in"):
        edge_gradients(g, ylm[:, :3], phi, dphi)
    with pytest.raises(RuntimeError, match="does not match phi_pad"):
        edge_gradients(g[:, :4], ylm, phi, dphi)                                # n
    with pytest.raises(RuntimeError, match="does not match phi_pad"):
        edge_gradients(g[..., :7], ylm, phi, dphi)                              # B
    with pytest.raises(RuntimeError, match="dtype"):
        edge_gradients(g, ylm.float(), phi, dphi)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        edge_gradients(*[t.to(torch.int32) for t in (g, ylm, phi, dphi)])
    with pytest.raises(RuntimeError, match="float32 or float64"):
        edge_gradients(*[t.half() for t in (g, ylm, phi, dphi)])
    with pytest.raises(RuntimeError, match="CPU-only"):
        edge_gradients(*[t.to("meta") for t in (g, ylm, phi, dphi)])


@pytest.mark.parametrize("which", range(4))
def test_requires_grad_rejected(which):
    inputs = random_inputs(2, 5, 4, 8)
    inputs[which].requires_grad_(True)
    with pytest.raises(RuntimeError, match="inference-only"):
        edge_gradients(*inputs)
    with torch.no_grad(), pytest.raises(RuntimeError, match="inference-only"):
        edge_gradients(*inputs)
    out = edge_gradients(*[t.detach() for t in inputs])
    assert not out.requires_grad
