// sigmapot::atom_energies — the atom-level part of the model and its gradient in one fused CPU pass.
//
// Reproduces (to round-off) SigmaModel.atom_energies_reference in python/sigmapot/model.py: from the basis
// moments of every atom (n, 20, B) (the neighbour sums of monomials times radial basis, atom-major) it runs,
// per member m and atom i,
//
//   moments  A = basis_i W_m              (20, K)        radial channel mix
//   mixes    b1, b2, b3 = A_l mix_{l,m}    (3/6/10, K)    channel mixes of ranks 1, 2, 3
//   features x = invariants(A, b1, b2, b3), standardised with feature_mean / feature_std
//   energy   h = MLP_m([x, onehot(species_i)])             SiLU between layers
//
// and returns h (M, n) together with scale * dh/d(basis_i), per member (G = M) or summed over the members
// (G = 1), as (G, n, 20, B).  That is "descriptors forward, the MLP backward to dE/dx, then the invariants'
// and mixes' backward to the basis moments" with no autograd graph: each (member, atom) keeps its 20 x K
// block, its 10K features and its layer activations in cache, where the PyTorch path streams (M, 20, n, K)
// tensors through ~40 operators and their autograd backward.  The per-edge chain rule stays with
// sigmapot::edge_gradients.
//
// Registered with TORCH_LIBRARY_FRAGMENT (the library is defined by invariants.cpp):
// torch.ops.sigmapot.atom_energies(basis, radial_weight, channel_mix, feature_mean, feature_std, weights,
// biases, species, scale, members).  Inference only (inputs that require grad are rejected; training uses
// the PyTorch path, which it differentiates twice).  CPU only: float32/float64.  Parallel over atoms with
// at::parallel_for; each output element is computed by one thread in a fixed order (members 0..M-1), so
// results are bit-identical for any thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "clones.h"
#include "invariant_rows.h"

namespace {

using sigmapot_rows::backward_row;
using sigmapot_rows::forward_row;

constexpr int64_t kMonomials = 20;

// Atoms per tile: each tile's matrices (20 x tile x K moments and their gradients) stay in cache, and
// each matrix product is large enough for BLAS.  Tiles are fixed, so results do not depend on the threads.
constexpr int64_t kTileAtoms = 128;

struct Shapes {
  int64_t n, B, Md, K, M, F, Z, L;  // Z: elements, the first layer's inputs beyond the F features
};

void check_tensor(const at::Tensor& t, const std::string& name, int64_t dim, at::ScalarType dtype) {
  TORCH_CHECK(t.defined(), "sigmapot::atom_energies: ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "sigmapot::atom_energies is CPU-only (got ", name, " on ", t.device(),
              "); use SigmaModel.atom_energies_reference (the PyTorch path) for other devices");
  TORCH_CHECK(t.scalar_type() == dtype, "sigmapot::atom_energies: ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == dim, "sigmapot::atom_energies: ", name, " must be ", dim, "-D, got shape ",
              t.sizes());
}

Shapes check_inputs(const at::Tensor& basis, const at::Tensor& radial_weight, const at::Tensor& channel_mix,
                    const at::Tensor& feature_mean, const at::Tensor& feature_std, at::TensorList weights,
                    at::TensorList biases, const at::Tensor& species) {
  TORCH_CHECK(basis.defined(), "sigmapot::atom_energies: basis is undefined");
  const at::ScalarType dtype = basis.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "sigmapot::atom_energies: basis must be float32 or float64, got ", dtype);
  check_tensor(basis, "basis (n, 20, B)", 3, dtype);
  check_tensor(radial_weight, "radial_weight (Md, B, K)", 3, dtype);
  check_tensor(channel_mix, "channel_mix (3, Md, K, K)", 4, dtype);
  check_tensor(feature_mean, "feature_mean (Md, 1, 10K)", 3, dtype);
  check_tensor(feature_std, "feature_std (Md, 1, 10K)", 3, dtype);
  check_tensor(species, "species (n,)", 1, at::kLong);
  Shapes s;
  s.n = basis.size(0);
  s.B = basis.size(2);
  s.Md = radial_weight.size(0);
  s.K = radial_weight.size(2);
  s.F = 10 * s.K;
  s.L = static_cast<int64_t>(weights.size());
  TORCH_CHECK(basis.size(1) == kMonomials, "sigmapot::atom_energies: basis must be (n, 20, B), got ",
              basis.sizes());
  TORCH_CHECK(radial_weight.size(1) == s.B, "sigmapot::atom_energies: radial_weight ", radial_weight.sizes(),
              " does not act on B = ", s.B, " basis functions");
  TORCH_CHECK(channel_mix.sizes() == at::IntArrayRef({3, s.Md, s.K, s.K}),
              "sigmapot::atom_energies: channel_mix must be (3, ", s.Md, ", ", s.K, ", ", s.K, "), got ",
              channel_mix.sizes());
  TORCH_CHECK(feature_mean.sizes() == at::IntArrayRef({s.Md, 1, s.F}) &&
                  feature_std.sizes() == at::IntArrayRef({s.Md, 1, s.F}),
              "sigmapot::atom_energies: feature_mean and feature_std must be (", s.Md, ", 1, ", s.F, "), got ",
              feature_mean.sizes(), " and ", feature_std.sizes());
  TORCH_CHECK(species.size(0) == s.n, "sigmapot::atom_energies: species has ", species.size(0),
              " entries for ", s.n, " atoms");
  TORCH_CHECK(s.L >= 2 && biases.size() == weights.size(),
              "sigmapot::atom_energies: need one bias per weight and at least one hidden layer, got ",
              weights.size(), " weights and ", biases.size(), " biases");
  s.M = weights[0].size(0);
  TORCH_CHECK(s.Md == 1 || s.Md == s.M, "sigmapot::atom_energies: ", s.Md, " descriptors for ", s.M,
              " members (must be 1 or ", s.M, ")");
  for (int64_t l = 0; l < s.L; ++l) {
    const std::string idx = std::to_string(l);
    check_tensor(weights[l], "weights[" + idx + "] (M, in, out)", 3, dtype);
    check_tensor(biases[l], "biases[" + idx + "] (M, 1, out)", 3, dtype);
    TORCH_CHECK(weights[l].size(0) == s.M && (l == 0 || weights[l].size(1) == weights[l - 1].size(2)),
                "sigmapot::atom_energies: weights[", l, "] of shape ", weights[l].sizes(),
                " does not follow the previous layer");
    TORCH_CHECK(biases[l].sizes() == at::IntArrayRef({s.M, 1, weights[l].size(2)}),
                "sigmapot::atom_energies: biases[", l, "] must be (", s.M, ", 1, ", weights[l].size(2),
                "), got ", biases[l].sizes());
  }
  TORCH_CHECK(weights[s.L - 1].size(2) == 1, "sigmapot::atom_energies: the last layer must have one output, got ",
              weights[s.L - 1].sizes());
  s.Z = weights[0].size(1) - s.F;
  TORCH_CHECK(s.Z >= 1, "sigmapot::atom_energies: the first layer takes ", weights[0].size(1), " inputs, fewer than the ",
              s.F, " features plus one element");
  if (s.n > 0) {
    const int64_t lo = species.min().item<int64_t>(), hi = species.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < s.Z, "sigmapot::atom_energies: species indices must lie in [0, ", s.Z,
                "), got [", lo, ", ", hi, "]");
  }
  return s;
}

// The invariant rows and their backward over one tile of na atoms, component-major: component c of atom i
// at c * na * K + i * K; x is (na, F) with F = 10K.  Compiled for AVX-512 and AVX2 as well as the
// baseline (clones.h).
#define SIGMAPOT_ROWS_FORWARD(T)                                                                          \
  SIGMAPOT_CLONES void rows_forward(const T* pa, const T* p1, const T* p2, const T* p3, T* px, int64_t na, \
                                    int64_t K) {                                                          \
    for (int64_t i = 0; i < na; ++i)                                                                      \
      forward_row<T>(pa + i * K, p1 + i * K, p2 + i * K, p3 + i * K, px + i * 10 * K, na * K, K);         \
  }
#define SIGMAPOT_ROWS_BACKWARD(T)                                                                         \
  SIGMAPOT_CLONES void rows_backward(const T* pg, const T* pa, const T* p1, const T* p2, const T* p3,      \
                                     T* qa, T* q1, T* q2, T* q3, int64_t na, int64_t K) {                  \
    for (int64_t i = 0; i < na; ++i)                                                                      \
      backward_row<T>(pg + i * 10 * K, pa + i * K, p1 + i * K, p2 + i * K, p3 + i * K, qa + i * K,         \
                      q1 + i * K, q2 + i * K, q3 + i * K, na * K, K);                                     \
  }
SIGMAPOT_ROWS_FORWARD(float)
SIGMAPOT_ROWS_FORWARD(double)
SIGMAPOT_ROWS_BACKWARD(float)
SIGMAPOT_ROWS_BACKWARD(double)

template <typename T>
void invariants_rows(const at::Tensor& A, const at::Tensor& b1, const at::Tensor& b2, const at::Tensor& b3,
                     at::Tensor& x, int64_t na, int64_t K) {
  rows_forward(A.const_data_ptr<T>(), b1.const_data_ptr<T>(), b2.const_data_ptr<T>(), b3.const_data_ptr<T>(),
               x.mutable_data_ptr<T>(), na, K);
}

template <typename T>
void invariants_rows_backward(const at::Tensor& dx, const at::Tensor& A, const at::Tensor& b1,
                              const at::Tensor& b2, const at::Tensor& b3, at::Tensor& gA, at::Tensor& gb1,
                              at::Tensor& gb2, at::Tensor& gb3, int64_t na, int64_t K) {
  rows_backward(dx.const_data_ptr<T>(), A.const_data_ptr<T>(), b1.const_data_ptr<T>(), b2.const_data_ptr<T>(),
                b3.const_data_ptr<T>(), gA.mutable_data_ptr<T>(), gb1.mutable_data_ptr<T>(),
                gb2.mutable_data_ptr<T>(), gb3.mutable_data_ptr<T>(), na, K);
}

// dh *= silu'(z) = sg (1 + z (1 - sg)), with sg = sigmoid(z) kept from the forward pass
template <typename T>
void silu_backward(at::Tensor& dh, const at::Tensor& z, const at::Tensor& sg) {
  const T *pz = z.const_data_ptr<T>(), *ps = sg.const_data_ptr<T>();
  T* pd = dh.mutable_data_ptr<T>();
  for (int64_t t = 0; t < z.numel(); ++t) pd[t] *= ps[t] * (T(1) + pz[t] * (T(1) - ps[t]));
}

// One member's descriptor of a tile: the moments A (20 na, K) and the mixes b1, b2, b3, component-major,
// and the standardised features x (na, F).
struct Descriptor {
  at::Tensor A, b1, b2, b3, x;
};

struct Params {
  at::Tensor radial, mix, mean, inv_std;          // (Md, B, K), (3, Md, K, K), (Md, 1, F), (Md, 1, F)
  std::vector<at::Tensor> weights, biases;         // per layer (M, in, out), (M, 1, out)
};

template <typename T>
Descriptor descriptor(const Params& p, const at::Tensor& basis_cm, int64_t md, int64_t na, int64_t K) {
  Descriptor d;
  d.A = at::mm(basis_cm, p.radial[md]);                                   // (20 na, K)
  d.b1 = at::mm(d.A.narrow(0, na, 3 * na), p.mix[0][md]);
  d.b2 = at::mm(d.A.narrow(0, 4 * na, 6 * na), p.mix[1][md]);
  d.b3 = at::mm(d.A.narrow(0, 10 * na, 10 * na), p.mix[2][md]);
  d.x = at::empty({na, 10 * K}, basis_cm.options());
  invariants_rows<T>(d.A, d.b1, d.b2, d.b3, d.x, na, K);
  d.x.sub_(p.mean[md]).mul_(p.inv_std[md]);
  return d;
}

// dE/dx (na, F) of member m's MLP on the standardised features x and the element one-hot, times scale;
// the member's energies go to energy (na,).
template <typename T>
at::Tensor readout_gradient(const Params& p, const Shapes& s, const at::Tensor& x, const at::Tensor& species,
                            int64_t m, double scale, at::Tensor energy) {
  const int64_t L = s.L, F = s.F;
  std::vector<at::Tensor> pre(L), sg(L);   // pre-activations and their sigmoids
  at::Tensor h = x;
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor& w = p.weights[l][m];
    if (l == 0) {  // the one-hot columns: row F + z of the first weight, per atom
      at::Tensor bias = w.narrow(0, F, s.Z).index_select(0, species).add_(p.biases[0][m]);
      pre[0] = at::addmm(bias, h, w.narrow(0, 0, F));
    } else {
      pre[l] = at::addmm(p.biases[l][m], h, w);
    }
    if (l < L - 1) {
      sg[l] = at::sigmoid(pre[l]);
      h = pre[l] * sg[l];
    }
  }
  energy.copy_(pre[L - 1].view({-1}));
  // backward: dh = d(scale * out) / d(input of layer l), from the last layer's (its weight column) down
  at::Tensor dh = (p.weights[L - 1][m].view({1, -1}) * scale).expand({x.size(0), -1}).contiguous();
  for (int64_t l = L - 2; l >= 0; --l) {
    silu_backward<T>(dh, pre[l], sg[l]);
    dh = at::mm(dh, (l == 0 ? p.weights[0][m].narrow(0, 0, F) : p.weights[l][m]).t());
  }
  return dh;
}

template <typename T>
void atom_energies_tiles(const Shapes& s, const Params& p, const at::Tensor& basis, const at::Tensor& species,
                         double scale, bool members, at::Tensor& energy, at::Tensor& grad) {
  const int64_t K = s.K, B = s.B, tiles = (s.n + kTileAtoms - 1) / kTileAtoms;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i0 = t * kTileAtoms, na = std::min(kTileAtoms, s.n - i0);
      const at::Tensor basis_cm = basis.narrow(0, i0, na).transpose(0, 1).reshape({kMonomials * na, B});
      const at::Tensor sp = species.narrow(0, i0, na);
      at::Tensor gsum;  // sum over members of dE/d(basis), (B, 20 na)
      Descriptor d;
      for (int64_t m = 0; m < s.M; ++m) {
        const int64_t md = s.Md == 1 ? 0 : m;
        if (m == 0 || s.Md > 1) d = descriptor<T>(p, basis_cm, md, na, K);
        at::Tensor dx = readout_gradient<T>(p, s, d.x, sp, m, scale, energy[m].narrow(0, i0, na));
        dx.mul_(p.inv_std[md]);
        at::Tensor gA = at::empty_like(d.A), gb1 = at::empty_like(d.b1), gb2 = at::empty_like(d.b2),
                   gb3 = at::empty_like(d.b3);
        invariants_rows_backward<T>(dx, d.A, d.b1, d.b2, d.b3, gA, gb1, gb2, gb3, na, K);
        gA.narrow(0, na, 3 * na).addmm_(gb1, p.mix[0][md].t());
        gA.narrow(0, 4 * na, 6 * na).addmm_(gb2, p.mix[1][md].t());
        gA.narrow(0, 10 * na, 10 * na).addmm_(gb3, p.mix[2][md].t());
        // (B, 20 na) = W (B, K) gA^T: BLAS is far faster with the long axis last than with B = 8 last
        const at::Tensor& w = p.radial[md];
        if (members) {
          grad[m].narrow(0, i0, na).copy_(at::mm(w, gA.t()).view({B, kMonomials, na}).permute({2, 1, 0}));
        } else if (m == 0) {
          gsum = at::mm(w, gA.t());
        } else {
          gsum.addmm_(w, gA.t());
        }
      }
      if (!members) grad[0].narrow(0, i0, na).copy_(gsum.view({B, kMonomials, na}).permute({2, 1, 0}));
    }
  });
}

std::tuple<at::Tensor, at::Tensor> atom_energies_cpu(const at::Tensor& basis_in, const at::Tensor& radial_in,
                                                     const at::Tensor& mix_in, const at::Tensor& mean_in,
                                                     const at::Tensor& std_in, at::TensorList weights,
                                                     at::TensorList biases, const at::Tensor& species_in,
                                                     double scale, bool members) {
  const Shapes s = check_inputs(basis_in, radial_in, mix_in, mean_in, std_in, weights, biases, species_in);
  Params p;
  p.radial = radial_in.contiguous();
  p.mix = mix_in.contiguous();
  p.mean = mean_in.contiguous();
  p.inv_std = std_in.reciprocal();
  for (int64_t l = 0; l < s.L; ++l) {
    p.weights.push_back(weights[l].contiguous());
    p.biases.push_back(biases[l].contiguous());
  }
  const at::Tensor basis = basis_in.contiguous(), species = species_in.contiguous();
  at::Tensor energy = at::empty({s.M, s.n}, basis.options());
  at::Tensor grad = at::empty({members ? s.M : 1, s.n, kMonomials, s.B}, basis.options());
  if (s.n == 0) return {energy, grad};
  AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "sigmapot::atom_energies", [&] {
    atom_energies_tiles<scalar_t>(s, p, basis, species, scale, members, energy, grad);
  });
  return {energy, grad};
}

// Autograd key: not differentiable.  Inputs that require grad are refused here, before the autograd
// fallback would record a graph that fails only at backward time.
std::tuple<at::Tensor, at::Tensor> atom_energies_autograd(
    const at::Tensor& basis, const at::Tensor& radial, const at::Tensor& mix, const at::Tensor& mean,
    const at::Tensor& std_, at::TensorList weights, at::TensorList biases, const at::Tensor& species,
    double scale, bool members) {
  bool requires_grad = false;
  for (const at::Tensor* t : {&basis, &radial, &mix, &mean, &std_})
    requires_grad = requires_grad || (t->defined() && t->requires_grad());
  for (const at::Tensor& t : weights) requires_grad = requires_grad || (t.defined() && t.requires_grad());
  for (const at::Tensor& t : biases) requires_grad = requires_grad || (t.defined() && t.requires_grad());
  TORCH_CHECK(!requires_grad,
              "sigmapot::atom_energies is inference-only (it returns its own gradient), but an input requires "
              "grad: detach the inputs, or use SigmaModel.atom_energies_reference (the PyTorch path)");
  at::AutoDispatchBelowADInplaceOrView guard;
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sigmapot::atom_energies", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, at::TensorList, at::TensorList, const at::Tensor&, double, bool)>();
  return op.call(basis, radial, mix, mean, std_, weights, biases, species, scale, members);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sigmapot, m) {
  m.def("atom_energies(Tensor basis, Tensor radial_weight, Tensor channel_mix, Tensor feature_mean, "
        "Tensor feature_std, Tensor[] weights, Tensor[] biases, Tensor species, float scale, bool members) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sigmapot, CPU, m) { m.impl("atom_energies", atom_energies_cpu); }

TORCH_LIBRARY_IMPL(sigmapot, CompositeExplicitAutograd, m) {
  m.impl("atom_energies", atom_energies_cpu);  // other backends: its CPU-only error
}

TORCH_LIBRARY_IMPL(sigmapot, Autograd, m) { m.impl("atom_energies", atom_energies_autograd); }
