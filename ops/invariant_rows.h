// The per-channel rows of the sigmapot invariants and their backward, shared by sigmapot::invariants
// (component-major tensors, stride S = n * K between components) and sigmapot::atom_energies (one atom's
// (20, K) block, stride S = K).  See invariants.cpp for the notation.
#pragma once

#include <cstdint>

#include "clones.h"

namespace sigmapot_rows {

// Component c of a row starts at base + c * S.
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
SIGMAPOT_INLINE void forward_row(const T* __restrict pa, const T* __restrict p1, const T* __restrict p2,
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
SIGMAPOT_INLINE void backward_row(const T* __restrict pg, const T* __restrict pa, const T* __restrict p1,
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

}  // namespace sigmapot_rows
