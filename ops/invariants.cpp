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
// The k loops (stride 1) vectorise at -O3 (CMake's Release): the blocks one row writes through the same
// pointer (po + f * K, qa + c * S) never overlap, which the compiler cannot prove (too many alias checks to
// version for), hence the "no loop-carried dependence" pragma.
#if defined(__clang__)
#define SIGMAPOT_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define SIGMAPOT_IVDEP _Pragma("GCC ivdep")
#else
#define SIGMAPOT_IVDEP
#endif

// The 39 inputs of channel k of one row (m, i), as locals, and the intermediates P = a1 a1 (compact),
// Q = a2 a2 (matrix square, compact), V = b3 : a2: the forward and the backward (which recomputes
// them instead of saving them) share these lines.
#define SIGMAPOT_CHANNEL_LOCALS \
    const T a0 = pa[k]; \
    const T x = pa[1 * S + k], y = pa[2 * S + k], z = pa[3 * S + k]; \
    const T xx = pa[4 * S + k], xy = pa[5 * S + k], xz = pa[6 * S + k]; \
    const T yy = pa[7 * S + k], yz = pa[8 * S + k], zz = pa[9 * S + k]; \
    const T xxx = pa[10 * S + k], xxy = pa[11 * S + k], xxz = pa[12 * S + k], xyy = pa[13 * S + k]; \
    const T xyz = pa[14 * S + k], xzz = pa[15 * S + k], yyy = pa[16 * S + k], yyz = pa[17 * S + k]; \
    const T yzz = pa[18 * S + k], zzz = pa[19 * S + k]; \
    const T Bx = p1[k], By = p1[S + k], Bz = p1[2 * S + k]; \
    const T Bxx = p2[k], Bxy = p2[S + k], Bxz = p2[2 * S + k]; \
    const T Byy = p2[3 * S + k], Byz = p2[4 * S + k], Bzz = p2[5 * S + k]; \
    const T Bxxx = p3[k], Bxxy = p3[S + k], Bxxz = p3[2 * S + k], Bxyy = p3[3 * S + k]; \
    const T Bxyz = p3[4 * S + k], Bxzz = p3[5 * S + k], Byyy = p3[6 * S + k], Byyz = p3[7 * S + k]; \
    const T Byzz = p3[8 * S + k], Bzzz = p3[9 * S + k]; \
    const T Pxx = x * x, Pxy = x * y, Pxz = x * z, Pyy = y * y, Pyz = y * z, Pzz = z * z; \
    const T Qxx = xx * xx + xy * xy + xz * xz; \
    const T Qxy = xx * xy + xy * yy + xz * yz; \
    const T Qxz = xx * xz + xy * yz + xz * zz; \
    const T Qyy = xy * xy + yy * yy + yz * yz; \
    const T Qyz = xy * xz + yy * yz + yz * zz; \
    const T Qzz = xz * xz + yz * yz + zz * zz; \
    const T Vx = Bxxx * xx + 2 * (Bxxy * xy + Bxxz * xz + Bxyz * yz) + Bxyy * yy + Bxzz * zz; \
    const T Vy = Bxxy * xx + 2 * (Bxyy * xy + Bxyz * xz + Byyz * yz) + Byyy * yy + Byzz * zz; \
    const T Vz = Bxxz * xx + 2 * (Bxyz * xy + Bxzz * xz + Byzz * yz) + Byyz * yy + Bzzz * zz;

// One row (m, i): each pointer is the row's start in its tensor, S the component stride (n * K).
template <typename T>
inline void forward_row(const T* __restrict pa, const T* __restrict p1, const T* __restrict p2,
                        const T* __restrict p3, T* __restrict po, const int64_t S, const int64_t K) {
  SIGMAPOT_IVDEP
  for (int64_t k = 0; k < K; ++k) {
    SIGMAPOT_CHANNEL_LOCALS

    po[k] = a0;
    po[K + k] = x * Bx + y * By + z * Bz;
    po[2 * K + k] = xx * Bxx + yy * Byy + zz * Bzz + 2 * (xy * Bxy + xz * Bxz + yz * Byz);
    po[3 * K + k] = xxx * Bxxx + yyy * Byyy + zzz * Bzzz + 6 * (xyz * Bxyz) +
                    3 * (xxy * Bxxy + xxz * Bxxz + xyy * Bxyy + xzz * Bxzz + yyz * Byyz + yzz * Byzz);
    po[4 * K + k] = Pxx * Bxx + Pyy * Byy + Pzz * Bzz + 2 * (Pxy * Bxy + Pxz * Bxz + Pyz * Byz);
    po[5 * K + k] = Qxx * Bxx + Qyy * Byy + Qzz * Bzz + 2 * (Qxy * Bxy + Qxz * Bxz + Qyz * Byz);
    po[6 * K + k] = x * Vx + y * Vy + z * Vz;
    po[7 * K + k] = Pxx * Qxx + Pyy * Qyy + Pzz * Qzz + 2 * (Pxy * Qxy + Pxz * Qxz + Pyz * Qyz);
    po[8 * K + k] = Vx * Vx + Vy * Vy + Vz * Vz;
    po[9 * K + k] = Qxx * Qxx + Qyy * Qyy + Qzz * Qzz + 2 * (Qxy * Qxy + Qxz * Qxz + Qyz * Qyz);
  }
}

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
inline void backward_row(const T* __restrict pg, const T* __restrict pa, const T* __restrict p1,
                         const T* __restrict p2, const T* __restrict p3, T* __restrict qa, T* __restrict q1,
                         T* __restrict q2, T* __restrict q3, const int64_t S, const int64_t K) {
  SIGMAPOT_IVDEP
  for (int64_t k = 0; k < K; ++k) {
    SIGMAPOT_CHANNEL_LOCALS
    (void) a0;
    const T g0 = pg[k], g1 = pg[K + k], g2 = pg[2 * K + k], g3 = pg[3 * K + k], g4 = pg[4 * K + k];
    const T g5 = pg[5 * K + k], g6 = pg[6 * K + k], g7 = pg[7 * K + k], g8 = pg[8 * K + k];
    const T g9 = pg[9 * K + k];

    // gradients w.r.t. the compact intermediates (multinomial weights w2 included)
    const T gPxx = g4 * Bxx + g7 * Qxx, gPyy = g4 * Byy + g7 * Qyy, gPzz = g4 * Bzz + g7 * Qzz;
    const T gPxy = 2 * (g4 * Bxy + g7 * Qxy), gPxz = 2 * (g4 * Bxz + g7 * Qxz);
    const T gPyz = 2 * (g4 * Byz + g7 * Qyz);
    const T g92 = 2 * g9;
    const T gQxx = g5 * Bxx + g7 * Pxx + g92 * Qxx, gQyy = g5 * Byy + g7 * Pyy + g92 * Qyy;
    const T gQzz = g5 * Bzz + g7 * Pzz + g92 * Qzz;
    const T gQxy = 2 * (g5 * Bxy + g7 * Pxy + g92 * Qxy), gQxz = 2 * (g5 * Bxz + g7 * Pxz + g92 * Qxz);
    const T gQyz = 2 * (g5 * Byz + g7 * Pyz + g92 * Qyz);
    const T g82 = 2 * g8;
    const T gVx = g6 * x + g82 * Vx, gVy = g6 * y + g82 * Vy, gVz = g6 * z + g82 * Vz;

    // a0, a1
    qa[k] = g0;
    qa[1 * S + k] = g1 * Bx + g6 * Vx + 2 * gPxx * x + gPxy * y + gPxz * z;
    qa[2 * S + k] = g1 * By + g6 * Vy + gPxy * x + 2 * gPyy * y + gPyz * z;
    qa[3 * S + k] = g1 * Bz + g6 * Vz + gPxz * x + gPyz * y + 2 * gPzz * z;
    // a2: from f2, from Q (product rule on each Q component), from V
    qa[4 * S + k] = g2 * Bxx + 2 * gQxx * xx + gQxy * xy + gQxz * xz
                    + gVx * Bxxx + gVy * Bxxy + gVz * Bxxz;
    qa[5 * S + k] = 2 * g2 * Bxy + 2 * (gQxx + gQyy) * xy + gQxy * (xx + yy) + gQxz * yz + gQyz * xz
                    + 2 * (gVx * Bxxy + gVy * Bxyy + gVz * Bxyz);
    qa[6 * S + k] = 2 * g2 * Bxz + 2 * (gQxx + gQzz) * xz + gQxy * yz + gQxz * (xx + zz) + gQyz * xy
                    + 2 * (gVx * Bxxz + gVy * Bxyz + gVz * Bxzz);
    qa[7 * S + k] = g2 * Byy + gQxy * xy + 2 * gQyy * yy + gQyz * yz
                    + gVx * Bxyy + gVy * Byyy + gVz * Byyz;
    qa[8 * S + k] = 2 * g2 * Byz + gQxy * xz + gQxz * xy + 2 * (gQyy + gQzz) * yz + gQyz * (yy + zz)
                    + 2 * (gVx * Bxyz + gVy * Byyz + gVz * Byzz);
    qa[9 * S + k] = g2 * Bzz + gQxz * xz + gQyz * yz + 2 * gQzz * zz
                    + gVx * Bxzz + gVy * Byzz + gVz * Bzzz;
    // a3 (f3 only), weights w3
    const T g33 = 3 * g3;
    qa[10 * S + k] = g3 * Bxxx;
    qa[11 * S + k] = g33 * Bxxy;
    qa[12 * S + k] = g33 * Bxxz;
    qa[13 * S + k] = g33 * Bxyy;
    qa[14 * S + k] = 6 * g3 * Bxyz;
    qa[15 * S + k] = g33 * Bxzz;
    qa[16 * S + k] = g3 * Byyy;
    qa[17 * S + k] = g33 * Byyz;
    qa[18 * S + k] = g33 * Byzz;
    qa[19 * S + k] = g3 * Bzzz;
    // b1
    q1[k] = g1 * x;
    q1[S + k] = g1 * y;
    q1[2 * S + k] = g1 * z;
    // b2 = w2 (g2 a2 + g4 P + g5 Q)
    q2[k] = g2 * xx + g4 * Pxx + g5 * Qxx;
    q2[S + k] = 2 * (g2 * xy + g4 * Pxy + g5 * Qxy);
    q2[2 * S + k] = 2 * (g2 * xz + g4 * Pxz + g5 * Qxz);
    q2[3 * S + k] = g2 * yy + g4 * Pyy + g5 * Qyy;
    q2[4 * S + k] = 2 * (g2 * yz + g4 * Pyz + g5 * Qyz);
    q2[5 * S + k] = g2 * zz + g4 * Pzz + g5 * Qzz;
    // b3 = w3 g3 a3 + (dV/db3)^T gV
    q3[k] = g3 * xxx + gVx * xx;
    q3[S + k] = g33 * xxy + 2 * gVx * xy + gVy * xx;
    q3[2 * S + k] = g33 * xxz + 2 * gVx * xz + gVz * xx;
    q3[3 * S + k] = g33 * xyy + gVx * yy + 2 * gVy * xy;
    q3[4 * S + k] = 6 * g3 * xyz + 2 * (gVx * yz + gVy * xz + gVz * xy);
    q3[5 * S + k] = g33 * xzz + gVx * zz + 2 * gVz * xz;
    q3[6 * S + k] = g3 * yyy + gVy * yy;
    q3[7 * S + k] = g33 * yyz + 2 * gVy * yz + gVz * yy;
    q3[8 * S + k] = g33 * yzz + gVy * zz + 2 * gVz * yz;
    q3[9 * S + k] = g3 * zzz + gVz * zz;
  }
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
