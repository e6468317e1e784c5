"""The compiled operator torch.ops.sigmapot.edge_forces (ops/edge_forces.cpp): atom forces from edge
gradients, the same sums as sigmapot.model.edge_forces (its reference), bit for bit."""
from __future__ import annotations

import pytest
import torch

from sigmapot import ops
from sigmapot.model import edge_forces

if not ops.load_ops():
    pytest.skip(ops.missing_ops_message(), allow_module_level=True)


def inputs(G: int, n: int, E: int, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    dE_dr = torch.randn(G, E, 3, generator=gen, dtype=torch.float64).to(dtype)
    center = torch.randint(0, n, (E,), generator=gen)
    neighbor = torch.randint(0, n, (E,), generator=gen)
    return dE_dr, center, neighbor


@pytest.mark.parametrize("G,dtype", [(1, torch.float64), (4, torch.float64), (3, torch.float32), (8, torch.float32)])
def test_equals_the_reference_bit_for_bit(G, dtype):
    n = 50
    dE_dr, center, neighbor = inputs(G, n, 2000, dtype)
    got = torch.ops.sigmapot.edge_forces(dE_dr, center, neighbor, n)
    want = torch.stack([edge_forces(dE_dr[m], center, neighbor, n) for m in range(G)])
    assert got.dtype == dtype and got.shape == (G, n, 3)
    assert torch.equal(got, want)
    assert torch.equal(got, edge_forces(dE_dr, center, neighbor, n))      # the (G, E, 3) form


def test_forces_sum_to_zero_and_atoms_without_edges_get_none():
    dE_dr, center, neighbor = inputs(2, 10, 300)
    center[center == 9], neighbor[neighbor == 9] = 0, 1                    # atom 9 takes part in no edge
    got = torch.ops.sigmapot.edge_forces(dE_dr, center, neighbor, 10)
    assert got.sum(1).abs().max() < 1e-12
    assert got[:, 9].abs().max() == 0


def test_thread_count_does_not_change_the_result():
    dE_dr, center, neighbor = inputs(4, 500, 20000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.sigmapot.edge_forces(dE_dr, center, neighbor, 500)
        torch.set_num_threads(2)
        two = torch.ops.sigmapot.edge_forces(dE_dr, center, neighbor, 500)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_no_edges():
    dE_dr, center, neighbor = inputs(3, 4, 0)
    assert torch.equal(torch.ops.sigmapot.edge_forces(dE_dr, center, neighbor, 4), torch.zeros(3, 4, 3))


@pytest.mark.parametrize("change,message", [
    (lambda g, c, nb, n: (g, c, nb, 5), "atom indices must lie in \\[0, 5\\)"),
    (lambda g, c, nb, n: (g, c, nb - 1, n), "atom indices must lie in \\[0, 50\\), got \\[-1"),
    (lambda g, c, nb, n: (g[0], c, nb, n), "dE_dr must be \\(G, E, 3\\)"),
    (lambda g, c, nb, n: (g, c[:-1], nb, n), "must be \\(E,\\) with E = 100"),
    (lambda g, c, nb, n: (g.int(), c, nb, n), "float32 or float64"),
    (lambda g, c, nb, n: (g, c.int(), nb, n), "must be int64"),
    (lambda g, c, nb, n: (g.requires_grad_(True), c, nb, n), "inference-only"),
])
def test_bad_inputs_raise_clear_errors(change, message):
    args = change(*inputs(2, 50, 100), 50)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.sigmapot.edge_forces(*args)
