// sigmapot::edge_gradients — the per-slot chain rule of the neighbour sums in one fused CPU pass.
//
// Reproduces (to round-off) SigmaModel.slot_gradients in python/sigmapot/model.py (the caller is
// SigmaModel._edge_gradients): from g = dE/d(basis moments) (G, n, 20, B) per atom, and the padded
// (atom, slot) layout of _neighbour_sums — the slot's monomials ylm_pad (n, width, 20), radial basis
// phi_pad (n, width, B) and its r-derivative dphi_pad (n, width, B) — it returns (G, n, width, 4):
// [dE/du_x, dE/du_y, dE/du_z, dE/d|r|] of the slot's edge for every member (row of g).
//
//   gy_c = sum_b g[c, b] phi_b  (20 numbers),  gp_b = sum_c g[c, b] Y_c  (B numbers)
//   dE/d|r| = sum_b gp_b dphi_b,   dE/du_a = sum_c gy_c dY_c/du_a
//
// with dY_c/du_a = p_a(c) Y_{c - e_a} written out (p_a(c) the power of u_a in monomial c, _POWERS), the
// lower-degree monomials taken from ylm_pad[..., :10] as the reference does.  Why: in PyTorch this is three
// batched matmuls over (G, n, width, 30) and (G, n, width, 20) intermediates; here each row (member, atom)
// keeps its 20 x B block of g hot (plus a transposed copy) and streams over its width slots.
//
// Registered for TorchScript with TORCH_LIBRARY_FRAGMENT (the library itself is defined by invariants.cpp):
// torch.ops.sigmapot.edge_gradients(g, ylm_pad, phi_pad, dphi_pad).  Inference only: not differentiable,
// and inputs that require grad are rejected with an error.  CPU only: float32/float64; other devices get a
// clear error.  Stateless and reentrant; parallel over rows (member, atom) with at::parallel_for (torch's
// intra-op threads), small inputs serially.  Each output element is computed by one thread with the same
// operation order whatever the thread count, so results are bit-identical across thread counts.
// A slot whose constant monomial ylm_pad[i, w, 0] is 0 is an empty (padding) slot: its output is exactly 0.
#include <ATen/Dispatch.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kMonomials = 20;

// Rows (member, atom) per parallel chunk: about 32k (slot, radial) elements (each ~40 multiply-adds), so
// small inputs run serially.
inline int64_t grain_rows(int64_t width, int64_t B) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(width * std::max<int64_t>(B, 1), 1));
}

void check_inputs(const at::Tensor& g, const at::Tensor& ylm, const at::Tensor& phi, const at::Tensor& dphi) {
  const at::Tensor* ts[4] = {&g, &ylm, &phi, &dphi};
  const char* names[4] = {"g", "ylm_pad", "phi_pad", "dphi_pad"};
  const int64_t dims[4] = {4, 3, 3, 3};
  const char* layouts[4] = {"(G, n, 20, B)", "(n, width, 20)", "(n, width, B)", "(n, width, B)"};
  for (int j = 0; j < 4; ++j) {
    const at::Tensor& t = *ts[j];
    TORCH_CHECK(t.defined(), "sigmapot::edge_gradients: ", names[j], " is undefined");
    TORCH_CHECK(t.device().is_cpu(), "sigmapot::edge_gradients is CPU-only (got ", names[j], " on ",
                t.device(), "); use SigmaModel.slot_gradients (the PyTorch path) for other devices");
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                "sigmapot::edge_gradients: ", names[j], " must be float32 or float64, got ", t.scalar_type());
    TORCH_CHECK(t.scalar_type() == g.scalar_type(), "sigmapot::edge_gradients: ", names[j], " has dtype ",
                t.scalar_type(), " but g has ", g.scalar_type());
    TORCH_CHECK(!t.requires_grad(), "sigmapot::edge_gradients is inference-only (not differentiable), but ",
                names[j], " requires grad: detach the inputs, or use SigmaModel.slot_gradients");
    TORCH_CHECK(t.dim() == dims[j], "sigmapot::edge_gradients: ", names[j], " must be ", dims[j], "-D ",
                layouts[j], ", got shape ", t.sizes());
  }
  TORCH_CHECK(g.size(2) == kMonomials, "sigmapot::edge_gradients: g must have 20 monomial components along "
              "dim 2, (G, n, 20, B), got shape ", g.sizes());
  TORCH_CHECK(ylm.size(2) == kMonomials, "sigmapot::edge_gradients: ylm_pad must have 20 monomials along "
              "dim 2, (n, width, 20), got shape ", ylm.sizes());
  TORCH_CHECK(phi.sizes() == dphi.sizes(), "sigmapot::edge_gradients: dphi_pad of shape ", dphi.sizes(),
              " does not match phi_pad of shape ", phi.sizes());
  TORCH_CHECK(ylm.size(0) == phi.size(0) && ylm.size(1) == phi.size(1), "sigmapot::edge_gradients: ylm_pad "
              "of shape ", ylm.sizes(), " and phi_pad of shape ", phi.sizes(), " differ in (n, width)");
  TORCH_CHECK(g.size(1) == phi.size(0) && g.size(3) == phi.size(2), "sigmapot::edge_gradients: g of shape ",
              g.sizes(), " (G, n, 20, B) does not match phi_pad of shape ", phi.sizes(), " (n, width, B)");
}

// ------------------------------------------------------------------------------------------ kernel
// All tensors contiguous.  Row r = (member m, atom i), r = m * n + i: g block at g + r * 20 * B, slot w of
// atom i at ylm + (i * width + w) * 20 and phi/dphi + (i * width + w) * B, output at out + (r * width + w) * 4.
// The parallel range runs over q = i * G + m (members innermost) so that an atom's slot data, read by all G
// members, is loaded from memory once.
// The two contractions are written as elementwise loops along a contiguous axis (no floating-point
// reductions, which the compiler would not vectorise without -ffast-math): gy over the 20 components
// (from the transposed block gt, (B, 20)), gp over the B radial functions; one length-B dot product remains.
template <typename T>
inline void slot_row(const T* __restrict gb, const T* __restrict gt, T* __restrict gp,
                     const T* __restrict ylm, const T* __restrict phi, const T* __restrict dphi,
                     T* __restrict po, const int64_t width, const int64_t B) {
  for (int64_t w = 0; w < width; ++w) {
    const T* __restrict y = ylm + w * kMonomials;
    T* __restrict o = po + w * 4;
    if (y[0] == T(0)) {  // empty slot
      o[0] = T(0);
      o[1] = T(0);
      o[2] = T(0);
      o[3] = T(0);
      continue;
    }
    const T* __restrict p = phi + w * B;
    const T* __restrict dp = dphi + w * B;

    // gy_c = sum_b g[c, b] phi_b: vectorised along c (20 accumulators in registers)
    T gy[kMonomials];
    for (int64_t c = 0; c < kMonomials; ++c) gy[c] = T(0);
    for (int64_t b = 0; b < B; ++b) {
      const T pb = p[b];
      const T* __restrict gtb = gt + b * kMonomials;
      for (int64_t c = 0; c < kMonomials; ++c) gy[c] += gtb[c] * pb;
    }

    // gp_b = sum_c g[c, b] Y_c: vectorised along b; then dE/d|r| = sum_b gp_b dphi_b
    {
      const T y0 = y[0];
      for (int64_t b = 0; b < B; ++b) gp[b] = gb[b] * y0;
    }
    for (int64_t c = 1; c < kMonomials; ++c) {
      const T yc = y[c];
      const T* __restrict gc = gb + c * B;
      for (int64_t b = 0; b < B; ++b) gp[b] += gc[b] * yc;
    }
    T gr = T(0);
    for (int64_t b = 0; b < B; ++b) gr += gp[b] * dp[b];

    // dE/du_a = sum_c gy_c dY_c/du_a, monomial order of _POWERS:
    // 0:1 1:x 2:y 3:z 4:xx 5:xy 6:xz 7:yy 8:yz 9:zz 10:xxx 11:xxy 12:xxz 13:xyy 14:xyz 15:xzz 16:yyy 17:yyz
    // 18:yzz 19:zzz
    const T one = y[0], x = y[1], yv = y[2], z = y[3];
    const T xx = y[4], xy = y[5], xz = y[6], yy = y[7], yz = y[8], zz = y[9];
    o[0] = gy[1] * one + 2 * gy[4] * x + gy[5] * yv + gy[6] * z + 3 * gy[10] * xx + 2 * gy[11] * xy +
           2 * gy[12] * xz + gy[13] * yy + gy[14] * yz + gy[15] * zz;
    o[1] = gy[2] * one + gy[5] * x + 2 * gy[7] * yv + gy[8] * z + gy[11] * xx + 2 * gy[13] * xy +
           gy[14] * xz + 3 * gy[16] * yy + 2 * gy[17] * yz + gy[18] * zz;
    o[2] = gy[3] * one + gy[6] * x + gy[8] * yv + 2 * gy[9] * z + gy[12] * xx + gy[14] * xy +
           2 * gy[15] * xz + gy[17] * yy + 2 * gy[18] * yz + 3 * gy[19] * zz;
    o[3] = gr;
  }
}

template <typename T>
void edge_gradients_kernel(const T* g, const T* ylm, const T* phi, const T* dphi, T* out, int64_t G,
                           int64_t n, int64_t width, int64_t B) {
  at::parallel_for(0, G * n, grain_rows(width, B), [&](int64_t begin, int64_t end) {
    std::vector<T> gt(static_cast<size_t>(kMonomials * B));  // the row's g block, transposed (B, 20)
    std::vector<T> gp(static_cast<size_t>(std::max<int64_t>(B, 1)));
    for (int64_t q = begin; q < end; ++q) {
      // q = i * G + m: the members of one atom in turn, so that its slots stay in cache between them
      const int64_t i = q / G, m = q - i * G, r = m * n + i;
      const T* gb = g + r * kMonomials * B;
      for (int64_t c = 0; c < kMonomials; ++c)
        for (int64_t b = 0; b < B; ++b) gt[b * kMonomials + c] = gb[c * B + b];
      slot_row<T>(gb, gt.data(), gp.data(), ylm + i * width * kMonomials, phi + i * width * B,
                  dphi + i * width * B, out + r * width * 4, width, B);
    }
  });
}

// ------------------------------------------------------------------------------------------ ops
at::Tensor edge_gradients_cpu(const at::Tensor& g_in, const at::Tensor& ylm_in, const at::Tensor& phi_in,
                              const at::Tensor& dphi_in) {
  check_inputs(g_in, ylm_in, phi_in, dphi_in);
  const at::Tensor g = g_in.contiguous(), ylm = ylm_in.contiguous(), phi = phi_in.contiguous(),
                   dphi = dphi_in.contiguous();
  const int64_t G = g.size(0), n = phi.size(0), width = phi.size(1), B = phi.size(2);
  at::Tensor out = at::empty({G, n, width, 4}, g.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "sigmapot::edge_gradients", [&] {
    edge_gradients_kernel<scalar_t>(g.const_data_ptr<scalar_t>(), ylm.const_data_ptr<scalar_t>(),
                                    phi.const_data_ptr<scalar_t>(), dphi.const_data_ptr<scalar_t>(),
                                    out.mutable_data_ptr<scalar_t>(), G, n, width, B);
  });
  return out;
}

// For every backend other than CPU (CUDA, MPS, meta, ...): a clear error instead of the dispatcher's
// "could not run ... with arguments from the 'X' backend".
at::Tensor edge_gradients_other_backends(const at::Tensor& g, const at::Tensor& ylm, const at::Tensor& phi,
                                         const at::Tensor& dphi) {
  check_inputs(g, ylm, phi, dphi);  // raises the CPU-only error for non-CPU tensors
  return edge_gradients_cpu(g, ylm, phi, dphi);
}

// Autograd key: not differentiable.  Reject inputs that require grad here (before the autograd fallback
// would record a graph that fails only at backward time), then run the backend kernel.
at::Tensor edge_gradients_autograd(const at::Tensor& g, const at::Tensor& ylm, const at::Tensor& phi,
                                   const at::Tensor& dphi) {
  const at::Tensor* ts[4] = {&g, &ylm, &phi, &dphi};
  const char* names[4] = {"g", "ylm_pad", "phi_pad", "dphi_pad"};
  for (int j = 0; j < 4; ++j)
    TORCH_CHECK(!(ts[j]->defined() && ts[j]->requires_grad()),
                "sigmapot::edge_gradients is inference-only (not differentiable), but ", names[j],
                " requires grad: detach the inputs, or use SigmaModel.slot_gradients");
  at::AutoDispatchBelowADInplaceOrView guard;
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sigmapot::edge_gradients", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&)>();
  return op.call(g, ylm, phi, dphi);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sigmapot, m) {
  m.def("edge_gradients(Tensor g, Tensor ylm_pad, Tensor phi_pad, Tensor dphi_pad) -> Tensor");
}

TORCH_LIBRARY_IMPL(sigmapot, CPU, m) { m.impl("edge_gradients", edge_gradients_cpu); }

TORCH_LIBRARY_IMPL(sigmapot, CompositeExplicitAutograd, m) {
  m.impl("edge_gradients", edge_gradients_other_backends);
}

TORCH_LIBRARY_IMPL(sigmapot, Autograd, m) { m.impl("edge_gradients", edge_gradients_autograd); }
