// sigmapot::edge_forces — atom forces from edge gradients, F_i += dE/dr_ij and F_j -= dE/dr_ij for every
// edge (i, j) (r_ij = r_j - r_i), per row of dE/dr (G rows: one per ensemble member, or one for the mean).
//
// The same sums as sigmapot.model.edge_forces (two index_add passes: all centres, then all neighbours, in
// edge order), so the results are bit-identical to it; why: index_add over (E, 3) rows costs ~15 ns an
// edge on one core, and the uncertainty step scatters G = M rows, which made it the largest part of the
// step's extra cost.  Rows run in parallel (one thread per row, each in edge order), so results do not
// depend on the thread count.  Inference only, CPU only, float32/float64.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>

namespace {

template <typename T>
void scatter_rows(const T* g, const int64_t* center, const int64_t* neighbor, int64_t E, int64_t n, int64_t begin,
                  int64_t end, T* out) {
  for (int64_t m = begin; m < end; ++m) {
    const T* gm = g + m * E * 3;
    T* f = out + m * n * 3;
    for (int64_t a = 0; a < n * 3; ++a) f[a] = T(0);
    for (int64_t e = 0; e < E; ++e)
      for (int a = 0; a < 3; ++a) f[center[e] * 3 + a] += gm[e * 3 + a];
    for (int64_t e = 0; e < E; ++e)
      for (int a = 0; a < 3; ++a) f[neighbor[e] * 3 + a] -= gm[e * 3 + a];
  }
}

at::Tensor edge_forces_cpu(const at::Tensor& dE_dr, const at::Tensor& center, const at::Tensor& neighbor,
                           int64_t n_atoms) {
  const char* op = "sigmapot::edge_forces";
  TORCH_CHECK(dE_dr.defined() && center.defined() && neighbor.defined(), op, ": an input is undefined");
  for (const at::Tensor* t : {&dE_dr, &center, &neighbor}) {
    TORCH_CHECK(t->device().is_cpu(), op, " is CPU-only (got ", t->device(),
                "); sigmapot.model.edge_forces serves other devices");
    TORCH_CHECK(!t->requires_grad(), op,
                " is inference-only (not differentiable): use sigmapot.model.edge_forces under autograd");
  }
  TORCH_CHECK(dE_dr.scalar_type() == at::kFloat || dE_dr.scalar_type() == at::kDouble, op,
              ": dE_dr must be float32 or float64, got ", dE_dr.scalar_type());
  TORCH_CHECK(dE_dr.dim() == 3 && dE_dr.size(2) == 3, op, ": dE_dr must be (G, E, 3), got ", dE_dr.sizes());
  const int64_t G = dE_dr.size(0), E = dE_dr.size(1);
  TORCH_CHECK(center.scalar_type() == at::kLong && neighbor.scalar_type() == at::kLong, op,
              ": center and neighbor must be int64");
  TORCH_CHECK(center.dim() == 1 && center.size(0) == E && neighbor.dim() == 1 && neighbor.size(0) == E, op,
              ": center and neighbor must be (E,) with E = ", E, ", got ", center.sizes(), " and ",
              neighbor.sizes());
  TORCH_CHECK(n_atoms >= 0, op, ": n_atoms must be >= 0, got ", n_atoms);
  const at::Tensor c = center.contiguous(), nb = neighbor.contiguous(), g = dE_dr.contiguous();
  if (E > 0) {
    const int64_t lo = std::min(c.min().item<int64_t>(), nb.min().item<int64_t>());
    const int64_t hi = std::max(c.max().item<int64_t>(), nb.max().item<int64_t>());
    TORCH_CHECK(lo >= 0 && hi < n_atoms, op, ": atom indices must lie in [0, ", n_atoms, "), got [", lo, ", ", hi,
                "]");
  }
  at::Tensor out = at::empty({G, n_atoms, 3}, dE_dr.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "sigmapot::edge_forces", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, G, 1, [&](int64_t begin, int64_t end) {
      scatter_rows(gp, c.const_data_ptr<int64_t>(), nb.const_data_ptr<int64_t>(), E, n_atoms, begin, end, o);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sigmapot, m) {
  m.def("edge_forces(Tensor dE_dr, Tensor center, Tensor neighbor, int n_atoms) -> Tensor");
}

TORCH_LIBRARY_IMPL(sigmapot, CPU, m) { m.impl("edge_forces", edge_forces_cpu); }
