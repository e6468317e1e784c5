// sigmapot::invariants — the rotation invariants of the sigmapot descriptor in one fused CPU pass.
//
// Reproduces (to round-off) the tail of SigmaModel._invariants in python/sigmapot/model.py, before the
// standardisation: from the compact symmetric moments a = (Mm, 20, n, K) (component-major) and their
// channel mixes b1 (Mm, 3, n, K), b2 (Mm, 6, n, K), b3 (Mm, 10, n, K) it returns the ten invariant blocks
// x = (Mm, n, 10K), block f in columns f*K .. f*K+K-1.  Why: in PyTorch these are ~60 tensor ops (gathers,
// products, sums over (n, K) blocks) plus their autograd backward, and they dominated the MD step; here
// each (m, i, k) loads its 20 + 19 values once, computes everything in registers and writes its outputs,
// and the hand-written backward does the same (recomputing the intermediates instead of saving them).
//
// Registered for TorchScript with TORCH_LIBRARY (no Python bindings): load libsigmapot_ops.so with
// torch.ops.load_library and call torch.ops.sigmapot.invariants(a, b1, b2, b3).  Differentiable once
// (torch.autograd.grad reaches a, b1, b2, b3); a double backward (create_graph=True, then differentiating
// the gradients again) raises an error: training uses the pure-PyTorch path.  CPU only: float32/float64;
// other devices get a clear error.  Stateless and reentrant; parallel over rows (m, i) with at::parallel_for
// (torch's intra-op threads), small inputs serially.
//
// Notation per (m, i, k) (no sums over k), w2 = (1, 2, 2, 1, 2, 1), w3 = 6 / prod(p!) per _POWERS:
//   P = a1 a1 (compact rank 2), Q = a2 a2 (matrix square, compact), V_a = sum_bc b3_abc a2_bc
//   f0 = a0, f1 = a1.b1, f2 = a2:b2, f3 = a3:b3, f4 = P:b2, f5 = Q:b2, f6 = a1.V, f7 = P:Q, f8 = V.V, f9 = Q:Q
// (":" a full contraction, i.e. compact components weighted by w2 or w3).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include "invariant_rows.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace {

// Rows (m, i) per parallel chunk: about 16k (row, channel) elements, so small inputs run serially.
inline int64_t grain_rows(int64_t K) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(K, 1)); }

void check_inputs(const at::Tensor& a, const at::Tensor& b1, const at::Tensor& b2, const at::Tensor& b3) {
  const at::Tensor* ts[4] = {&a, &b1, &b2, &b3};
  const char* names[4] = {"a", "b1", "b2", "b3"};
  const int64_t comps[4] = {20, 3, 6, 10};
  for (int j = 0; j < 4; ++j) {
    const at::Tensor& t = *ts[j];
    TORCH_CHECK(t.defined(), "sigmapot::invariants: ", names[j], " is undefined");
    TORCH_CHECK(t.device().is_cpu(), "sigmapot::invariants is CPU-only (got ", names[j], " on ", t.device(),
                "); use the pure-PyTorch invariants for other devices");
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
                "sigmapot::invariants: ", names[j], " must be float32 or float64, got ", t.scalar_type());
    TORCH_CHECK(t.scalar_type() == a.scalar_type(), "sigmapot::invariants: ", names[j], " has dtype ",
                t.scalar_type(), " but a has ", a.scalar_type());
    TORCH_CHECK(t.dim() == 4, "sigmapot::invariants: ", names[j], " must be 4-D (Mm, ", comps[j],
                ", n, K), got shape ", t.sizes());
    TORCH_CHECK(t.size(1) == comps[j], "sigmapot::invariants: ", names[j], " must have ", comps[j],
                " components along dim 1, got shape ", t.sizes());
    TORCH_CHECK(t.size(0) == a.size(0) && t.size(2) == a.size(2) && t.size(3) == a.size(3),
                "sigmapot::invariants: ", names[j], " of shape ", t.sizes(),
                " does not match a of shape ", a.sizes(), " in (Mm, n, K)");
  }
}

// ------------------------------------------------------------------------------------------ kernels
// a, b1, b2, b3 contiguous; component c of row (m, i) starts at base + (m * C + c) * S + i * K, S = n * K.
using sigmapot_rows::backward_row;
using sigmapot_rows::forward_row;

template <typename T>
void forward_kernel(const T* a, const T* b1, const T* b2, const T* b3, T* out, int64_t Mm, int64_t n,
                    int64_t K) {
  const int64_t S = n * K;
  at::parallel_for(0, Mm * n, grain_rows(K), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t m = r / n, i = r - m * n;
      forward_row<T>(a + m * 20 * S + i * K, b1 + m * 3 * S + i * K, b2 + m * 6 * S + i * K,
                     b3 + m * 10 * S + i * K, out + r * 10 * K, S, K);
    }
  });
}

template <typename T>
void backward_kernel(const T* g, const T* a, const T* b1, const T* b2, const T* b3, T* da, T* db1, T* db2,
                     T* db3, int64_t Mm, int64_t n, int64_t K) {
  const int64_t S = n * K;
  at::parallel_for(0, Mm * n, grain_rows(K), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t m = r / n, i = r - m * n;
      const int64_t o20 = m * 20 * S + i * K, o3 = m * 3 * S + i * K;
      const int64_t o6 = m * 6 * S + i * K, o10 = m * 10 * S + i * K;
      backward_row<T>(g + r * 10 * K, a + o20, b1 + o3, b2 + o6, b3 + o10, da + o20, db1 + o3, db2 + o6,
                      db3 + o10, S, K);
    }
  });
}

// ------------------------------------------------------------------------------------------ CPU ops
at::Tensor invariants_forward_cpu(const at::Tensor& a_in, const at::Tensor& b1_in, const at::Tensor& b2_in,
                                  const at::Tensor& b3_in) {
  check_inputs(a_in, b1_in, b2_in, b3_in);
  const at::Tensor a = a_in.contiguous(), b1 = b1_in.contiguous(), b2 = b2_in.contiguous(),
                   b3 = b3_in.contiguous();
  const int64_t Mm = a.size(0), n = a.size(2), K = a.size(3);
  at::Tensor out = at::empty({Mm, n, 10 * K}, a.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sigmapot::invariants", [&] {
    forward_kernel<scalar_t>(a.const_data_ptr<scalar_t>(), b1.const_data_ptr<scalar_t>(),
                             b2.const_data_ptr<scalar_t>(), b3.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>(), Mm, n, K);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> invariants_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& a_in, const at::Tensor& b1_in, const at::Tensor& b2_in,
    const at::Tensor& b3_in) {
  check_inputs(a_in, b1_in, b2_in, b3_in);
  const int64_t Mm = a_in.size(0), n = a_in.size(2), K = a_in.size(3);
  TORCH_CHECK(grad_in.device().is_cpu() && grad_in.scalar_type() == a_in.scalar_type(),
              "sigmapot::invariants backward: the output gradient must be a CPU ", a_in.scalar_type(),
              " tensor, got ", grad_in.scalar_type(), " on ", grad_in.device());
  TORCH_CHECK(grad_in.dim() == 3 && grad_in.size(0) == Mm && grad_in.size(1) == n && grad_in.size(2) == 10 * K,
              "sigmapot::invariants backward: the output gradient must have shape (", Mm, ", ", n, ", ",
              10 * K, "), got ", grad_in.sizes());
  const at::Tensor g = grad_in.contiguous(), a = a_in.contiguous(), b1 = b1_in.contiguous(),
                   b2 = b2_in.contiguous(), b3 = b3_in.contiguous();
  at::Tensor da = at::empty_like(a), db1 = at::empty_like(b1), db2 = at::empty_like(b2),
             db3 = at::empty_like(b3);
  if (Mm * n * K > 0) {
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sigmapot::invariants_backward", [&] {
      backward_kernel<scalar_t>(g.const_data_ptr<scalar_t>(), a.const_data_ptr<scalar_t>(),
                                b1.const_data_ptr<scalar_t>(), b2.const_data_ptr<scalar_t>(),
                                b3.const_data_ptr<scalar_t>(), da.mutable_data_ptr<scalar_t>(),
                                db1.mutable_data_ptr<scalar_t>(), db2.mutable_data_ptr<scalar_t>(),
                                db3.mutable_data_ptr<scalar_t>(), Mm, n, K);
    });
  }
  return {da, db1, db2, db3};
}

// For every backend other than CPU (CUDA, MPS, meta, ...): a clear error instead of the dispatcher's
// "could not run ... with arguments from the 'X' backend".
at::Tensor invariants_other_backends(const at::Tensor& a, const at::Tensor& b1, const at::Tensor& b2,
                                     const at::Tensor& b3) {
  check_inputs(a, b1, b2, b3);  // raises the CPU-only error for non-CPU tensors
  return invariants_forward_cpu(a, b1, b2, b3);
}

// ------------------------------------------------------------------------------------------ autograd
// A graph node held as the Edge's pointer type (c10::intrusive_ptr since torch 2.13, std::shared_ptr before).
template <typename N, typename... Args>
auto make_node(Args&&... args) {
  using Ptr = decltype(torch::autograd::Edge::function);
  if constexpr (std::is_same_v<Ptr, std::shared_ptr<torch::autograd::Node>>)
    return std::make_shared<N>(std::forward<Args>(args)...);
  else
    return c10::make_intrusive<N>(std::forward<Args>(args)...);
}

class InvariantsFunction : public torch::autograd::Function<InvariantsFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b1,
                            const at::Tensor& b2, const at::Tensor& b3) {
    ctx->save_for_backward({a, b1, b2, b3});
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("sigmapot::invariants", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&)>();
    return op.call(a, b1, b2, b3);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& grad = grad_outputs[0];
    if (!grad.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    bool any_requires_grad = grad.requires_grad();
    for (const auto& t : saved) any_requires_grad = any_requires_grad || t.requires_grad();
    torch::autograd::variable_list grads;
    {
      at::NoGradGuard no_grad;  // the kernel is not differentiable
      auto [da, db1, db2, db3] = invariants_backward_cpu(grad, saved[0], saved[1], saved[2], saved[3]);
      grads = {da, db1, db2, db3};
    }
    if (c10::GradMode::is_enabled() && any_requires_grad) {
      // create_graph=True: the gradients get a grad_fn that raises when a second backward reaches it
      // (instead of being constants, which would make a double backward silently wrong).  Its edges go to
      // grad_out and the saved inputs, so that any double backward through them does reach it.
      auto error = make_node<torch::autograd::Error>(
          "sigmapot::invariants is differentiable once only: its backward has no derivative "
          "(a double backward, e.g. training on forces, must use the pure-PyTorch invariants)",
          torch::autograd::collect_next_edges(grad, saved[0], saved[1], saved[2], saved[3]));
      for (auto& t : grads) torch::autograd::set_history(t, error);
    }
    const bool needs[4] = {ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                           ctx->needs_input_grad(3)};
    for (int j = 0; j < 4; ++j)
      if (!needs[j]) grads[j] = at::Tensor();
    return grads;
  }
};

at::Tensor invariants_autograd(const at::Tensor& a, const at::Tensor& b1, const at::Tensor& b2,
                               const at::Tensor& b3) {
  return InvariantsFunction::apply(a, b1, b2, b3);
}

}  // namespace

TORCH_LIBRARY(sigmapot, m) {
  m.def("invariants(Tensor a, Tensor b1, Tensor b2, Tensor b3) -> Tensor");
}

TORCH_LIBRARY_IMPL(sigmapot, CPU, m) { m.impl("invariants", invariants_forward_cpu); }

TORCH_LIBRARY_IMPL(sigmapot, CompositeExplicitAutograd, m) {
  m.impl("invariants", invariants_other_backends);
}

TORCH_LIBRARY_IMPL(sigmapot, Autograd, m) { m.impl("invariants", invariants_autograd); }
