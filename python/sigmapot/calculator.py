"""ASE calculator that runs an exported sigmapot file (the same TorchScript the LAMMPS plugin runs)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from .export import load_exported, read_metadata
from .neighbors import neighbor_list


def evaluate_structure(model, species: np.ndarray, positions: np.ndarray, cell: np.ndarray,
                       pbc: np.ndarray, dtype: torch.dtype, device: torch.device | str = "cpu",
                       uncertainty: bool = True
                       ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """One structure through a model (exported or in memory): forward() (with members when
    `uncertainty`), then the calibrated uncertainty().  The calculator and the calibration both use
    exactly this path."""
    i, j, vec = neighbor_list(positions, cell, pbc, float(model.cutoff))
    out = model(torch.from_numpy(species).to(device), torch.from_numpy(np.stack([i, j])).to(device),
                torch.from_numpy(vec).to(device=device, dtype=dtype), len(species), uncertainty)
    if not uncertainty:
        return out, {}
    unc = model.uncertainty(out["member_energy"], out["member_forces"], out["member_energy"].sum(1))
    return out, unc


class SigmaCalculator(Calculator):
    """Energies, forces, stress and calibrated per-atom uncertainty from an exported model file.

    Results: energy, free_energy, forces, stress, energies (per atom), and the uncertainties
    energies_std (sigma_E,i, eV), forces_std (sigma_F,i, eV/A), energy_std (sigma of the total
    energy, eV) and forces_interval (per-atom force-error bound at the calibrated coverage).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies",
                              "energies_std", "forces_std", "energy_std", "forces_interval"]

    def __init__(self, model: str, device: str = "cpu", dtype: Optional[str] = None,
                 uncertainty: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.uncertainty = bool(uncertainty)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device='{device}' was asked for but torch sees no CUDA device; "
                               "use device='cpu'")
        self.model = load_exported(model, device=device)
        self.metadata = read_metadata(self.model)
        if dtype is not None:
            if dtype not in ("float32", "float64"):
                raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
            self.model = self.model.to(getattr(torch, dtype))
            self.model.dtype_name = dtype
        self.dtype = getattr(torch, self.model.dtype_name)
        self.device = torch.device(device)
        self.elements: List[str] = list(self.model.elements)
        self.cutoff = float(self.model.cutoff)

    def species_indices(self, symbols: List[str]) -> np.ndarray:
        index = {el: k for k, el in enumerate(self.elements)}
        unknown = sorted(set(symbols) - set(index))
        if unknown:
            raise ValueError(f"element(s) {unknown} are not in this model; it knows {self.elements}")
        return np.array([index[s] for s in symbols], dtype=np.int64)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        species = self.species_indices(atoms.get_chemical_symbols())
        if not np.isfinite(atoms.positions).all():
            raise ValueError("atoms.positions contains NaN or Inf")
        n = len(atoms)
        out, unc = evaluate_structure(self.model, species, atoms.positions, atoms.cell.array, atoms.pbc,
                                      self.dtype, self.device, self.uncertainty)
        energies = out["energy"].detach().cpu().double().numpy()
        energy = float(energies.sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": energies,
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if self.uncertainty:
            self.results.update({
                "energies_std": unc["energy_std"].detach().cpu().double().numpy(),
                "forces_std": unc["force_std"].detach().cpu().double().numpy(),
                "energy_std": float(unc["total_energy_std"]),
                "forces_interval": unc["force_interval"].detach().cpu().double().numpy(),
            })
        elif any(p.endswith(("_std", "_interval")) for p in properties):
            raise ValueError(f"{sorted(properties)} asks for uncertainty but this calculator was made "
                             "with uncertainty=False; make it with uncertainty=True")
        if atoms.pbc.all():
            virial = out["total_virial"].detach().cpu().double().numpy()
            xx, yy, zz, xy, xz, yz, yx, zx, zy = virial
            # ASE Voigt order xx yy zz yz xz xy; stress = -virial / V (virial is symmetric to
            # round-off for a rotation-invariant model, the symmetrised part is used)
            voigt = np.array([xx, yy, zz, 0.5 * (yz + zy), 0.5 * (xz + zx), 0.5 * (xy + yx)])
            self.results["stress"] = -voigt / atoms.get_volume()
        elif "stress" in properties:
            raise ValueError("stress needs periodic boundaries on all three axes "
                             f"(atoms.pbc = {atoms.pbc.tolist()})")
        for key in ("energies", "forces", "energies_std", "forces_std"):
            if key in self.results and not np.isfinite(self.results[key]).all():
                raise FloatingPointError(f"the model returned non-finite {key}; atoms at "
                                         f"{np.flatnonzero(~np.isfinite(self.results[key]).reshape(n, -1).all(1)).tolist()}")
