// sigmapot::edge_basis and sigmapot::edge_vector_gradients — the edge-level part of the model in two fused
// CPU passes over the neighbour list.
//
// edge_basis reproduces (to round-off) SigmaModel._edge_terms + _slots + _neighbour_sums in
// python/sigmapot/model.py: for every edge (i, j) with vector r_ij it forms the 20 monomials Y_c(u) of
// u = r_ij / max(|r_ij|, r_min) and the Bessel radial basis phi_b(|r_ij|) (times 1/avg_num_neighbors) in
// the block of j's element, and returns the neighbour sums basis[i, c, z_j Nb + b] = sum_j Y_c phi_b, (n, 20,
// Z Nb).  edge_vector_gradients is the chain rule back: from g = dE/d(basis) (G, n, 20, Z Nb) it returns
// dE/dr_ij (G, E, 3) for every member (row of g), as SigmaModel._edge_gradients does through the padded
// slots.  Why: in PyTorch these are ~60 operators over (E, 20) and (E, Nb) tensors (norms, powers, sines,
// one-hots, a sort and padded copies) where each edge needs ~300 multiply-adds in registers; here each edge
// is computed once from its vector, with one sine and one cosine (the other Nb-1 by the angle-addition
// recurrence, in float64 whatever the model's dtype).
//
// Registered with TORCH_LIBRARY_FRAGMENT (the library is defined by invariants.cpp).  Inference only
// (inputs that require grad are rejected).  CPU only: float32/float64.  edge_basis runs in parallel over
// centre atoms (edges are bucketed by centre, in the caller's order within an atom), edge_vector_gradients
// over centre atoms too; each output element is computed by one thread in a fixed order, so results are bit-identical
// for any thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "clones.h"

namespace {

constexpr int64_t kMonomials = 20;
constexpr int64_t kMaxRadial = 64;
constexpr int64_t kGrainEdges = 2048;
constexpr double kPi = 3.14159265358979323846;

// dE/du_a = sum_c q_c dY_c/du_a for G rows at once (q[c G + m], out g_u[a G + m]), with dY_c/du_a =
// p_a(c) Y_{c - e_a} written out; monomials in the order of model._POWERS (1, x, y, z, xx, xy, xz, yy, yz,
// zz, xxx, xxy, xxz, xyy, xyz, xzz, yyy, yyz, yzz, zzz).  GM: G when known at compile time, else 0.
template <int64_t GM>
SIGMAPOT_INLINE void monomial_gradient(const double* q_all, const double* Y, int64_t G_rt, double* g_u) {
  const int64_t G = GM > 0 ? GM : G_rt;
  const double x = Y[1], y = Y[2], z = Y[3], xx = Y[4], xy = Y[5], xz = Y[6], yy = Y[7], yz = Y[8], zz = Y[9];
  for (int64_t m = 0; m < G; ++m) {
    const double* q = q_all + m;  // q[c * G] is q_c of row m
#define Q(c) q[(c) * G]
    g_u[m] = Q(1) + 2 * Q(4) * x + Q(5) * y + Q(6) * z + 3 * Q(10) * xx + 2 * (Q(11) * xy + Q(12) * xz) +
             Q(13) * yy + Q(14) * yz + Q(15) * zz;
    g_u[G + m] = Q(2) + Q(5) * x + 2 * Q(7) * y + Q(8) * z + Q(11) * xx + 2 * (Q(13) * xy + Q(17) * yz) +
                 Q(14) * xz + 3 * Q(16) * yy + Q(18) * zz;
    g_u[2 * G + m] = Q(3) + Q(6) * x + Q(8) * y + 2 * Q(9) * z + Q(12) * xx + Q(14) * xy +
                     2 * (Q(15) * xz + Q(18) * yz) + Q(17) * yy + 3 * Q(19) * zz;
#undef Q
  }
}

struct Basis {
  double cutoff, scale;  // scale = 1 / avg_num_neighbors
  int64_t num_radial, envelope_p, num_elements;
};

// One edge's geometry: |r|, u and the monomials Y (edge_geometry also writes the radial basis phi, and its
// r-derivative when dphi != nullptr).
struct Edge {
  double r, u[3], Y[kMonomials];
};

SIGMAPOT_INLINE void edge_geometry(const double v[3], const Basis& b, Edge& e, double* phi, double* dphi) {
  const double rc = b.cutoff, r_min = 1e-4 * rc;
  e.r = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  const double r_safe = std::max(e.r, r_min), inv_r = 1.0 / r_safe;
  const double ux = v[0] * inv_r, uy = v[1] * inv_r, uz = v[2] * inv_r;
  e.u[0] = ux, e.u[1] = uy, e.u[2] = uz;
  const double xx = ux * ux, yy = uy * uy, zz = uz * uz, xy = ux * uy, xz = ux * uz, yz = uy * uz;
  const double Y[kMonomials] = {1.0,     ux,      uy,      uz,      xx,      xy,      xz,
                                yy,      yz,      zz,      xx * ux, xx * uy, xx * uz, yy * ux,
                                xy * uz, zz * ux, yy * uy, yy * uz, zz * uy, zz * uz};
  std::copy(Y, Y + kMonomials, e.Y);
  // envelope: 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), zero for r >= rc
  const double p = static_cast<double>(b.envelope_p);
  const double x = std::min(e.r / rc, 1.0);
  const bool inside = e.r < rc;
  double xm1 = 1.0;  // x^(p-1)
  for (int64_t t = 1; t < b.envelope_p; ++t) xm1 *= x;
  const double xp = xm1 * x;
  const double env = inside ? 1.0 - (p + 1.0) * (p + 2.0) / 2.0 * xp + p * (p + 2.0) * xp * x -
                                  p * (p + 1.0) / 2.0 * xp * x * x
                            : 0.0;
  const double denv =
      inside ? -p * (p + 1.0) * (p + 2.0) / (2.0 * rc) * xm1 * (1.0 - x) * (1.0 - x) : 0.0;
  // sin(n pi r / rc) for n = 1..Nb by angle addition from n = 1
  const double k1 = kPi / rc, s1 = std::sin(k1 * r_safe), c1 = std::cos(k1 * r_safe);
  const double norm = std::sqrt(2.0 / rc) * b.scale;
  const double radial = norm * inv_r * env;                                       // phi = radial * sin
  const double radial_r = norm * inv_r * denv, radial_s = e.r >= r_min ? norm * env * inv_r * inv_r : 0.0;
  double s = s1, c = c1;
  for (int64_t n = 1; n <= b.num_radial; ++n) {
    phi[n - 1] = radial * s;
    // d/dr [sin(k r) / r] env = (k cos r - sin) / r^2 env, plus sin / r * denv
    if (dphi != nullptr) dphi[n - 1] = radial_s * (n * k1 * c * r_safe - s) + radial_r * s;
    const double s_next = s * c1 + c * s1, c_next = c * c1 - s * s1;
    s = s_next, c = c_next;
  }
}

struct EdgeInputs {
  at::Tensor vec, center, species;  // (E, 3), (E,), (E,) neighbour elements
  int64_t E;
};

EdgeInputs check_edges(const char* op, const at::Tensor& vec, const at::Tensor& center, const at::Tensor& species,
                       const Basis& b, int64_t n) {
  TORCH_CHECK(vec.defined() && center.defined() && species.defined(), op, ": an input is undefined");
  for (const at::Tensor* t : {&vec, &center, &species})
    TORCH_CHECK(t->device().is_cpu(), op, " is CPU-only (got ", t->device(),
                "); the model's PyTorch path serves other devices");
  TORCH_CHECK(vec.scalar_type() == at::kFloat || vec.scalar_type() == at::kDouble, op,
              ": edge_vec must be float32 or float64, got ", vec.scalar_type());
  TORCH_CHECK(vec.dim() == 2 && vec.size(1) == 3, op, ": edge_vec must be (E, 3), got ", vec.sizes());
  const int64_t E = vec.size(0);
  TORCH_CHECK(center.scalar_type() == at::kLong && species.scalar_type() == at::kLong, op,
              ": center and neighbor_species must be int64");
  TORCH_CHECK(center.dim() == 1 && center.size(0) == E && species.dim() == 1 && species.size(0) == E, op,
              ": center and neighbor_species must be (E,) with E = ", E, ", got ", center.sizes(), " and ",
              species.sizes());
  TORCH_CHECK(b.num_radial >= 1 && b.num_radial <= kMaxRadial, op, ": num_radial must lie in [1, ", kMaxRadial,
              "], got ", b.num_radial);
  TORCH_CHECK(b.cutoff > 0 && b.num_elements >= 1 && b.envelope_p >= 1, op,
              ": cutoff, num_elements and envelope_p must be positive");
  TORCH_CHECK(n >= 0, op, ": n must be >= 0, got ", n);
  EdgeInputs in{vec.contiguous(), center.contiguous(), species.contiguous(), E};
  if (E > 0) {
    const int64_t lo = in.center.min().item<int64_t>(), hi = in.center.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < n, op, ": centres must lie in [0, ", n, "), got [", lo, ", ", hi, "]");
    const int64_t zlo = in.species.min().item<int64_t>(), zhi = in.species.max().item<int64_t>();
    TORCH_CHECK(zlo >= 0 && zhi < b.num_elements, op, ": neighbour elements must lie in [0, ", b.num_elements,
                "), got [", zlo, ", ", zhi, "]");
  }
  return in;
}

void reject_grad(const char* op, std::initializer_list<const at::Tensor*> ts) {
  for (const at::Tensor* t : ts)
    TORCH_CHECK(!(t->defined() && t->requires_grad()), op,
                " is inference-only (not differentiable), but an input requires grad: detach the inputs, or "
                "use the model's PyTorch path");
}

// Edges bucketed by centre (counting sort, stable: the caller's order within an atom): the edges of atom i
// are order[start[i]:start[i+1]].
struct Buckets {
  std::vector<int64_t> start, order;
};

Buckets bucket_by_centre(const EdgeInputs& in, int64_t n) {
  const int64_t* center = in.center.const_data_ptr<int64_t>();
  Buckets bk{std::vector<int64_t>(n + 1, 0), std::vector<int64_t>(in.E)};
  for (int64_t e = 0; e < in.E; ++e) ++bk.start[center[e] + 1];
  for (int64_t i = 0; i < n; ++i) bk.start[i + 1] += bk.start[i];
  std::vector<int64_t> fill(bk.start.begin(), bk.start.end() - 1);
  for (int64_t e = 0; e < in.E; ++e) bk.order[fill[center[e]]++] = e;
  return bk;
}

// Atoms per parallel chunk for about kGrainEdges edges.
int64_t grain_atoms(const EdgeInputs& in, int64_t n) {
  return std::max<int64_t>(1, kGrainEdges * n / std::max<int64_t>(in.E, 1));
}

// ------------------------------------------------------------------------------------------ edge_basis
// What one call's kernels read: the edges bucketed by centre, and (gradients) g with G rows.
template <typename T>
struct Task {
  const EdgeInputs& in;
  const Basis& b;
  const Buckets& bk;
  int64_t n, G;
  const T* g;
  T* out;
};

// dst[c stride + r] += Y_c phi_r (c < 20, r < Nb; NB: Nb when known at compile time, else 0): one edge's
// term of the neighbour sums, as 20 vector passes; restrict lets the compiler vectorise over r.
template <typename T, int64_t NB>
SIGMAPOT_INLINE void outer_accumulate(const double* Y, const T* __restrict phi, int64_t Nb_rt, int64_t stride,
                                      T* __restrict dst) {
  const int64_t Nb = NB > 0 ? NB : Nb_rt;
  for (int64_t c = 0; c < kMonomials; ++c) {
    const T y = static_cast<T>(Y[c]);
    T* __restrict d = dst + c * stride;
#pragma GCC unroll 1  // else GCC unrolls the 8 radial terms completely and leaves them scalar
    for (int64_t r = 0; r < Nb; ++r) d[r] += y * phi[r];
  }
}

// NB: the number of radial functions when known at compile time (the default 8), else 0 (b.num_radial).
template <typename T, int64_t NB>
SIGMAPOT_INLINE void basis_atoms(const Task<T>& t, int64_t begin, int64_t end) {
  const int64_t Nb = NB > 0 ? NB : t.b.num_radial, C = t.b.num_elements * Nb;
  const T* vec = t.in.vec.template const_data_ptr<T>();
  const int64_t* species = t.in.species.template const_data_ptr<int64_t>();
  Edge e;
  double phi[kMaxRadial];
  for (int64_t i = begin; i < end; ++i) {
    T* row = t.out + i * kMonomials * C;
    std::fill(row, row + kMonomials * C, T(0));
    for (int64_t q = t.bk.start[i]; q < t.bk.start[i + 1]; ++q) {
      const int64_t k = t.bk.order[q];
      const double v[3] = {double(vec[3 * k]), double(vec[3 * k + 1]), double(vec[3 * k + 2])};
      edge_geometry(v, t.b, e, phi, nullptr);
      T phi_t[kMaxRadial];
      for (int64_t r = 0; r < Nb; ++r) phi_t[r] = static_cast<T>(phi[r]);
      outer_accumulate<T, NB>(e.Y, phi_t, Nb, C, row + species[k] * Nb);
    }
  }
}

// out[w] = sum_r coeff[r] rows[r][w] for w < width (W: width when known at compile time, else 0): the
// vector pass of both edge contractions; restrict lets the compiler keep out in registers.
template <typename T, int64_t W>
SIGMAPOT_INLINE void row_combination(const double* coeff, const T* __restrict rows, int64_t num_rows,
                                     int64_t width_rt, T* __restrict out) {
  const int64_t width = W > 0 ? W : width_rt;
  for (int64_t w = 0; w < width; ++w) out[w] = T(0);
  for (int64_t r = 0; r < num_rows; ++r) {
    const T c = static_cast<T>(coeff[r]);
    for (int64_t w = 0; w < width; ++w) out[w] += c * rows[r * width + w];
  }
}

// ------------------------------------------------------------------------------------------ gradients
// Per centre atom, g of every member is laid out member-minor once per element block z:
//   Ag[z][c][m Nb + b] = g[m][c][z Nb + b]   and   Bg[z][b][c G + m] = g[m][c][z Nb + b],
// so that an edge's two contractions, gp_{m b} = sum_c Y_c g_m[c][b] and gy_{c m} = sum_b phi_b g_m[c][b],
// are 20 and Nb vector passes over all members at once (G Nb and 20 G wide, no horizontal sums), and the
// monomial derivative and the projection run across members (4 doubles for the default ensemble).
// GM: the number of rows G when known at compile time (1, 4, 8), else 0 (t.G).
template <typename T, int64_t NB, int64_t GM>
SIGMAPOT_INLINE void gradient_atoms(const Task<T>& t, int64_t begin, int64_t end) {
  const int64_t Nb = NB > 0 ? NB : t.b.num_radial, Z = t.b.num_elements, C = Z * Nb;
  const int64_t G = GM > 0 ? GM : t.G, n = t.n, E = t.in.E;
  const T* vec = t.in.vec.template const_data_ptr<T>();
  const int64_t* species = t.in.species.template const_data_ptr<int64_t>();
  const double r_min = 1e-4 * t.b.cutoff;
  Edge e;
  double phi[kMaxRadial], dphi[kMaxRadial];
  std::vector<T> Ag(Z * kMonomials * G * Nb), Bg(Z * Nb * kMonomials * G), gp(G * Nb), gy(kMonomials * G);
  std::vector<double> gy_d(kMonomials * G), g_u(3 * G), g_r(G);  // gy in float64, dE/du, dE/d|r|
  for (int64_t i = begin; i < end; ++i) {
    if (t.bk.start[i] == t.bk.start[i + 1]) continue;
    for (int64_t m = 0; m < G; ++m) {
      const T* block = t.g + (m * n + i) * kMonomials * C;
      for (int64_t z = 0; z < Z; ++z)
        for (int64_t c = 0; c < kMonomials; ++c)
          for (int64_t b = 0; b < Nb; ++b) {
            const T v = block[c * C + z * Nb + b];
            Ag[((z * kMonomials + c) * G + m) * Nb + b] = v;
            Bg[((z * Nb + b) * kMonomials + c) * G + m] = v;
          }
    }
    for (int64_t q = t.bk.start[i]; q < t.bk.start[i + 1]; ++q) {
      const int64_t k = t.bk.order[q];
      const double v[3] = {double(vec[3 * k]), double(vec[3 * k + 1]), double(vec[3 * k + 2])};
      edge_geometry(v, t.b, e, phi, dphi);
      const int64_t z = species[k];
      const T* A = Ag.data() + z * kMonomials * G * Nb;
      const T* B = Bg.data() + z * Nb * kMonomials * G;
      row_combination<T, GM * NB>(e.Y, A, kMonomials, G * Nb, gp.data());
      row_combination<T, GM * kMonomials>(phi, B, Nb, kMonomials * G, gy.data());
      for (int64_t m = 0; m < G; ++m) {  // dE/d|r| = sum_b gp_b dphi_b
        T acc = 0;
        for (int64_t b = 0; b < Nb; ++b) acc += gp[m * Nb + b] * static_cast<T>(dphi[b]);
        g_r[m] = double(acc);
      }
      for (int64_t w = 0; w < kMonomials * G; ++w) gy_d[w] = double(gy[w]);
      monomial_gradient<GM>(gy_d.data(), e.Y, G, g_u.data());
      const double inv_r = 1.0 / std::max(e.r, r_min), inv_len = 1.0 / std::max(e.r, 1e-30);
      const bool tangential = e.r >= r_min;
      for (int64_t m = 0; m < G; ++m) {
        // du/dr_ij = (1 - u u^T) / |r| (tangential) where |r| >= r_min; d|r|/dr_ij = r_ij / |r|
        double ga[3] = {g_u[m], g_u[G + m], g_u[2 * G + m]};
        if (tangential) {
          const double dot = ga[0] * e.u[0] + ga[1] * e.u[1] + ga[2] * e.u[2];
          for (int a = 0; a < 3; ++a) ga[a] -= e.u[a] * dot;
        }
        T* o = t.out + (m * E + k) * 3;
        for (int a = 0; a < 3; ++a) o[a] = static_cast<T>(ga[a] * inv_r + g_r[m] * v[a] * inv_len);
      }
    }
  }
}

// The kernels over a range of centre atoms, compiled per instruction set (clones.h).
#define SIGMAPOT_EDGE_RANGES(T)                                                          \
  SIGMAPOT_CLONES void basis_range(const Task<T>& t, int64_t begin, int64_t end) {      \
    if (t.b.num_radial == 8)                                                            \
      basis_atoms<T, 8>(t, begin, end);                                                 \
    else                                                                                \
      basis_atoms<T, 0>(t, begin, end);                                                 \
  }                                                                                     \
  SIGMAPOT_CLONES void gradient_range(const Task<T>& t, int64_t begin, int64_t end) {   \
    if (t.b.num_radial == 8 && t.G == 1)                                                \
      gradient_atoms<T, 8, 1>(t, begin, end);                                           \
    else if (t.b.num_radial == 8 && t.G == 4)                                           \
      gradient_atoms<T, 8, 4>(t, begin, end);                                           \
    else if (t.b.num_radial == 8 && t.G == 8)                                           \
      gradient_atoms<T, 8, 8>(t, begin, end);                                           \
    else                                                                                \
      gradient_atoms<T, 0, 0>(t, begin, end);                                           \
  }
SIGMAPOT_EDGE_RANGES(float)
SIGMAPOT_EDGE_RANGES(double)

// ------------------------------------------------------------------------------------------ ops
at::Tensor edge_basis_cpu(const at::Tensor& vec, const at::Tensor& center, const at::Tensor& neighbor_species,
                          int64_t n, int64_t num_elements, double cutoff, int64_t num_radial, int64_t envelope_p,
                          double scale) {
  const Basis b{cutoff, scale, num_radial, envelope_p, num_elements};
  const EdgeInputs in = check_edges("sigmapot::edge_basis", vec, center, neighbor_species, b, n);
  at::Tensor out = at::empty({n, kMonomials, num_elements * num_radial}, vec.options());
  const Buckets bk = bucket_by_centre(in, n);
  AT_DISPATCH_FLOATING_TYPES(vec.scalar_type(), "sigmapot::edge_basis", [&] {
    const Task<scalar_t> task{in, b, bk, n, 0, nullptr, out.mutable_data_ptr<scalar_t>()};
    at::parallel_for(0, n, grain_atoms(in, n), [&](int64_t begin, int64_t end) { basis_range(task, begin, end); });
  });
  return out;
}

at::Tensor edge_vector_gradients_cpu(const at::Tensor& g_in, const at::Tensor& vec, const at::Tensor& center,
                                     const at::Tensor& neighbor_species, int64_t num_elements, double cutoff,
                                     int64_t num_radial, int64_t envelope_p, double scale) {
  const Basis b{cutoff, scale, num_radial, envelope_p, num_elements};
  TORCH_CHECK(g_in.defined() && g_in.dim() == 4 && g_in.size(2) == kMonomials &&
                  g_in.size(3) == num_elements * num_radial,
              "sigmapot::edge_vector_gradients: g must be (G, n, 20, ", num_elements * num_radial, "), got ",
              g_in.defined() ? g_in.sizes() : at::IntArrayRef());
  TORCH_CHECK(g_in.scalar_type() == vec.scalar_type(), "sigmapot::edge_vector_gradients: g has dtype ",
              g_in.scalar_type(), " but edge_vec has ", vec.scalar_type());
  TORCH_CHECK(g_in.device().is_cpu(), "sigmapot::edge_vector_gradients is CPU-only (got g on ", g_in.device(), ")");
  const int64_t G = g_in.size(0), n = g_in.size(1);
  const EdgeInputs in = check_edges("sigmapot::edge_vector_gradients", vec, center, neighbor_species, b, n);
  const at::Tensor g = g_in.contiguous();
  at::Tensor out = at::empty({G, in.E, 3}, vec.options());
  const Buckets bk = bucket_by_centre(in, n);
  AT_DISPATCH_FLOATING_TYPES(vec.scalar_type(), "sigmapot::edge_vector_gradients", [&] {
    const Task<scalar_t> task{in, b, bk, n, G, g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>()};
    at::parallel_for(0, n, grain_atoms(in, n),
                     [&](int64_t begin, int64_t end) { gradient_range(task, begin, end); });
  });
  return out;
}

// ------------------------------------------------------------------------------------------ dispatch
at::Tensor edge_basis_autograd(const at::Tensor& vec, const at::Tensor& center, const at::Tensor& species,
                               int64_t n, int64_t num_elements, double cutoff, int64_t num_radial,
                               int64_t envelope_p, double scale) {
  reject_grad("sigmapot::edge_basis", {&vec});
  at::AutoDispatchBelowADInplaceOrView guard;
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sigmapot::edge_basis", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                         int64_t, double, int64_t, int64_t, double)>();
  return op.call(vec, center, species, n, num_elements, cutoff, num_radial, envelope_p, scale);
}

at::Tensor edge_vector_gradients_autograd(const at::Tensor& g, const at::Tensor& vec, const at::Tensor& center,
                                          const at::Tensor& species, int64_t num_elements, double cutoff,
                                          int64_t num_radial, int64_t envelope_p, double scale) {
  reject_grad("sigmapot::edge_vector_gradients", {&g, &vec});
  at::AutoDispatchBelowADInplaceOrView guard;
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sigmapot::edge_vector_gradients", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, int64_t, double, int64_t, int64_t, double)>();
  return op.call(g, vec, center, species, num_elements, cutoff, num_radial, envelope_p, scale);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sigmapot, m) {
  m.def("edge_basis(Tensor edge_vec, Tensor center, Tensor neighbor_species, int n, int num_elements, "
        "float cutoff, int num_radial, int envelope_p, float scale) -> Tensor");
  m.def("edge_vector_gradients(Tensor g, Tensor edge_vec, Tensor center, Tensor neighbor_species, "
        "int num_elements, float cutoff, int num_radial, int envelope_p, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(sigmapot, CPU, m) {
  m.impl("edge_basis", edge_basis_cpu);
  m.impl("edge_vector_gradients", edge_vector_gradients_cpu);
}

TORCH_LIBRARY_IMPL(sigmapot, CompositeExplicitAutograd, m) {
  m.impl("edge_basis", edge_basis_cpu);
  m.impl("edge_vector_gradients", edge_vector_gradients_cpu);
}

TORCH_LIBRARY_IMPL(sigmapot, Autograd, m) {
  m.impl("edge_basis", edge_basis_autograd);
  m.impl("edge_vector_gradients", edge_vector_gradients_autograd);
}
