"""Keep freed heap memory in the process (glibc), as the LAMMPS pair style does at start-up.

Every model call allocates and frees megabytes of work tensors.  With glibc's defaults the larger ones
are mmap'ed and handed back to the kernel when freed, so the next call page-faults them in again; with
these settings they are reused from the heap (measured for LAMMPS and for the ASE calculator:
docs/experiments.md, 2026-12-01 and 2026-12-02).  Other C libraries are left alone.
"""
from __future__ import annotations

import ctypes
import platform

# mallopt parameters of glibc's malloc.h
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20),   # glibc's maximum: work tensors come from the heap
             (_M_TRIM_THRESHOLD, 1 << 30),    # do not return freed heap tops below 1 GiB
             (_M_TOP_PAD, 64 << 20))          # grow the heap in 64 MiB steps


def keep_heap_memory() -> bool:
    """Apply the settings (idempotent); True if this process runs on glibc and it accepted them."""
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS)
