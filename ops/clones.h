// SIGMAPOT_CLONES: compile a hot function for AVX-512 and AVX2 as well as the baseline, picked at load time
// (GCC's target_clones), so that the wheel runs on any x86-64 and uses the wide vectors where they exist.
// The templates it calls must be inlined into it (SIGMAPOT_INLINE) to be vectorised with its instruction set.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SIGMAPOT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIGMAPOT_CLONES
#endif

#if defined(__GNUC__)
#define SIGMAPOT_INLINE inline __attribute__((always_inline))
#else
#define SIGMAPOT_INLINE inline
#endif
