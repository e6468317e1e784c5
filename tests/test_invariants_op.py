"""The compiled operator torch.ops.sigmapot.invariants (ops/invariants.cpp) against the PyTorch invariants.

The reference is SigmaModel.invariant_products, the PyTorch path that training uses.
"""
from __future__ import annotations

import pytest
import torch

from sigmapot import ops
from sigmapot.config import ModelConfig
from sigmapot.model import SigmaModel

if not ops.load_ops():
    pytest.skip(ops.missing_ops_message(), allow_module_level=True)

invariants = torch.ops.sigmapot.invariants


def reference(a: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor, b3: torch.Tensor) -> torch.Tensor:
    """(Mm, n, 10K) invariants before standardisation: the model's PyTorch path (training's)."""
    model = SigmaModel(ModelConfig(elements=["Si"], num_channels=a.shape[3]))  # any member count
    return model.to(a.dtype).invariant_products(a, b1, b2, b3)


def inputs(Mm: int, n: int, K: int, dtype=torch.float64, seed: int = 0, requires_grad: bool = False):
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(Mm, c, n, K, generator=gen, dtype=dtype) for c in (20, 3, 6, 10)]
    return [t.requires_grad_(requires_grad) for t in tensors]


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach(), ref.detach()
    return float((x - ref).abs().max() / ref.abs().max().clamp(min=1e-300))


@pytest.mark.parametrize("Mm,n,K", [(3, 17, 5), (1, 40, 16), (4, 9, 19), (2, 300, 8), (2, 3, 70)])
def test_forward_float64(Mm, n, K):
    a, b1, b2, b3 = inputs(Mm, n, K)
    x = invariants(a, b1, b2, b3)
    assert x.shape == (Mm, n, 10 * K) and x.dtype == torch.float64
    assert rel(x, reference(a, b1, b2, b3)) < 1e-12


@pytest.mark.parametrize("Mm,n,K", [(3, 17, 5), (1, 40, 16), (2, 300, 19), (2, 3, 70)])
def test_gradients_float64(Mm, n, K):
    a, b1, b2, b3 = inputs(Mm, n, K, requires_grad=True)
    grad_out = torch.randn(Mm, n, 10 * K, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad([invariants(a, b1, b2, b3)], [a, b1, b2, b3], [grad_out])
    want = torch.autograd.grad([reference(a, b1, b2, b3)], [a, b1, b2, b3], [grad_out])
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert rel(g, w) < 1e-12


def test_gradients_through_channel_mix():
    """As in the model: b = a_rank @ mix, gradients reach both the moments and the mixes."""
    Mm, n, K = 2, 11, 6
    a = inputs(Mm, n, K)[0].requires_grad_(True)
    mix = (torch.eye(K, dtype=torch.float64) + 0.1 * torch.randn(3, Mm, K, K, dtype=torch.float64)).requires_grad_(True)

    def energy(fn):
        _, a1, a2, a3 = a.split([1, 3, 6, 10], dim=1)
        bs = [torch.bmm(t.reshape(Mm, c * n, K), mix[r]).view(Mm, c, n, K)
              for r, (t, c) in enumerate(zip((a1, a2, a3), (3, 6, 10)))]
        return torch.tanh(fn(a, *bs)).sum()

    got = torch.autograd.grad([energy(invariants)], [a, mix])
    want = torch.autograd.grad([energy(reference)], [a, mix])
    for g, w in zip(got, want):
        assert rel(g, w) < 1e-12


def test_gradcheck():
    assert torch.autograd.gradcheck(invariants, tuple(inputs(2, 3, 4, requires_grad=True)), eps=1e-6, atol=1e-8)


def test_float32():
    a, b1, b2, b3 = inputs(3, 50, 16, requires_grad=True)
    a32, b132, b232, b332 = [t.detach().float().requires_grad_(True) for t in (a, b1, b2, b3)]
    grad_out = torch.randn(3, 50, 160, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = invariants(a32, b132, b232, b332)
    assert x.dtype == torch.float32
    ref = reference(a, b1, b2, b3)
    assert rel(x.double(), ref) < 1e-5
    got = torch.autograd.grad([x], [a32, b132, b232, b332], [grad_out.float()])
    want = torch.autograd.grad([ref], [a, b1, b2, b3], [grad_out])
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and rel(g.double(), w) < 1e-5


def test_empty_and_single_member():
    a, b1, b2, b3 = inputs(3, 0, 4, requires_grad=True)
    x = invariants(a, b1, b2, b3)
    assert x.shape == (3, 0, 40)
    grads = torch.autograd.grad([x.sum()], [a, b1, b2, b3])
    assert [g.shape for g in grads] == [t.shape for t in (a, b1, b2, b3)]
    a, b1, b2, b3 = inputs(1, 7, 3)
    assert rel(invariants(a, b1, b2, b3), reference(a, b1, b2, b3)) < 1e-12


def test_threads():
    """Large enough for several parallel chunks: the same values as serially."""
    a, b1, b2, b3 = inputs(4, 700, 8, requires_grad=True)
    grad_out = torch.randn(4, 700, 80, dtype=torch.float64)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            x = invariants(a, b1, b2, b3)
            results.append((x, *torch.autograd.grad([x], [a, b1, b2, b3], [grad_out])))
    finally:
        torch.set_num_threads(threads)
    for p, q in zip(*results):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_non_contiguous_inputs():
    a, b1, b2, b3 = inputs(2, 6, 5)
    # same values in a transposed memory layout
    a_t, b1_t, b2_t, b3_t = [t.transpose(2, 3).contiguous().transpose(2, 3) for t in (a, b1, b2, b3)]
    assert not a_t.is_contiguous()
    torch.testing.assert_close(invariants(a_t, b1_t, b2_t, b3_t), invariants(a, b1, b2, b3), rtol=0, atol=0)


def test_torchscript():
    @torch.jit.script
    def energy_and_grad(a: torch.Tensor, b1: torch.Tensor, b2: torch.Tensor, b3: torch.Tensor):
        e = torch.ops.sigmapot.invariants(a, b1, b2, b3).square().sum()
        grads = torch.autograd.grad([e], [a, b1, b2, b3])
        return e, grads

    a, b1, b2, b3 = inputs(2, 5, 4, requires_grad=True)
    e, grads = energy_and_grad(a, b1, b2, b3)
    e_ref = reference(a, b1, b2, b3).square().sum()
    want = torch.autograd.grad([e_ref], [a, b1, b2, b3])
    assert abs(float(e) - float(e_ref.detach())) < 1e-12 * abs(float(e_ref.detach()))
    for g, w in zip(grads, want):
        assert g is not None and rel(g, w) < 1e-12


def test_no_double_backward():
    a, b1, b2, b3 = inputs(2, 3, 4, requires_grad=True)
    (ga,) = torch.autograd.grad([invariants(a, b1, b2, b3).square().sum()], [a], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad([ga.sum()], [a])
    with pytest.raises(RuntimeError, match="differentiable once"):
        ga.sum().backward()


def test_bad_inputs():
    a, b1, b2, b3 = inputs(2, 3, 4)
    with pytest.raises(RuntimeError, match="20 components"):
        invariants(a[:, :19], b1, b2, b3)
    with pytest.raises(RuntimeError, match="does not match"):
        invariants(a, b1[:, :, :2], b2, b3)
    with pytest.raises(RuntimeError, match="4-D"):
        invariants(a, b1, b2, b3[0])
    with pytest.raises(RuntimeError, match="dtype"):
        invariants(a, b1.float(), b2, b3)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        invariants(*[t.to(torch.int32) for t in (a, b1, b2, b3)])
    with pytest.raises(RuntimeError, match="CPU-only"):
        invariants(*[t.to("meta") for t in (a, b1, b2, b3)])
