"""The compiled operators of sigmapot (`torch.ops.sigmapot.*`, libsigmapot_ops.so, sources in ops/).

Exported model files call them on CPU: a process must load the library before `torch.jit.load` of such a
file.  The LAMMPS plugin links it; in Python, `load_ops()` loads it (export and load do so themselves).
The wheel ships it in sigmapot/lib/; a source checkout builds it with `make plugin`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

LIBRARY = "libsigmapot_ops.so"
_HERE = Path(__file__).resolve().parent
_loaded: Optional[Path] = None


def library_path() -> Optional[Path]:
    """The library to load: $SIGMAPOT_OPS, else the package's lib/, else a source checkout's build folder."""
    env = os.environ.get("SIGMAPOT_OPS")
    candidates = [Path(env)] if env else []
    candidates += [_HERE / "lib" / LIBRARY, _HERE.parents[1] / "build" / "plugin" / LIBRARY]
    return next((path for path in candidates if path.is_file()), None)


def load_ops() -> bool:
    """Load the operators once per process; False when the library is not installed or built."""
    global _loaded
    if _loaded is None:
        path = library_path()
        if path is None:
            return False
        torch.ops.load_library(str(path))
        _loaded = path
    return True


def missing_ops_message() -> str:
    return (f"sigmapot's compiled operators ({LIBRARY}) are not installed: install sigmapot from its wheel "
            "(pip install '.[lammps]' compiles them in), or in a source checkout run 'make plugin'")
