"""ASE calculator that runs an exported sigmapot file (the same TorchScript the LAMMPS plugin runs)."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from .export import load_exported, read_metadata
from .heap import keep_heap_memory
from .neighbors import neighbor_list


DEFAULT_CHUNK = 1024  # centre atoms per model call, as in the LAMMPS pair style (work arrays stay in cache)

# forward() outputs that are per atom (first axis or second for member_*), summed over chunks
_PER_ATOM = ("forces", "virial", "centroid_virial")


def check_chunk(chunk: int) -> int:
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1 centre atoms per model call, got {chunk}")
    return int(chunk)


def evaluate_structure(model, species: np.ndarray, positions: np.ndarray, cell: np.ndarray,
                       pbc: np.ndarray, dtype: torch.dtype, device: torch.device | str = "cpu",
                       uncertainty: bool = True, chunk: int = DEFAULT_CHUNK, virial: bool = True
                       ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """One structure through a model (exported or in memory): forward() (with members when
    `uncertainty`, with virials when `virial`) on chunks of `chunk` centre atoms, then the calibrated
    uncertainty().  The calculator and the calibration both use exactly this path.

    A chunk is what the LAMMPS pair style hands the model: its centres first, then the other atoms
    their edges reach; per-atom outputs (forces on neighbours too) are summed into the structure's.
    """
    chunk = check_chunk(chunk)
    i, j, vec = neighbor_list(positions, cell, pbc, float(model.cutoff))
    n = len(species)
    order = np.argsort(i, kind="stable")
    i, j, vec = i[order], j[order], vec[order]
    bounds = np.searchsorted(i, np.arange(0, max(n, 1) + chunk, chunk))  # chunk c: edges bounds[c]:bounds[c+1]
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    total: Dict[str, torch.Tensor] = {}
    local = np.empty(n, dtype=np.int64)  # atom -> index within the current chunk (only its atoms are read)
    for c, start in enumerate(range(0, max(n, 1), chunk)):
        end = min(n, start + chunk)
        ci, cj, cvec = i[bounds[c]:bounds[c + 1]], j[bounds[c]:bounds[c + 1]], vec[bounds[c]:bounds[c + 1]]
        atoms = np.arange(start, end)
        if start > 0 or end < n:  # the other atoms this chunk's edges reach, after its centres
            atoms = np.concatenate([atoms, np.setdiff1d(cj, atoms)])
        local[atoms] = np.arange(len(atoms))
        out = model(as_tensor(species[atoms]), as_tensor(np.stack([ci - start, local[cj]])),
                    as_tensor(cvec).to(dtype), end - start, uncertainty, virial)
        total = _accumulate(total, out, torch.from_numpy(atoms).to(device), n)
    if not uncertainty:
        return total, {}
    unc = model.uncertainty(total["member_energy"], total["member_forces"], total["member_energy"].sum(1))
    return total, unc


def _accumulate(total: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor], atoms: torch.Tensor,
                n: int) -> Dict[str, torch.Tensor]:
    """Add one chunk's outputs (its atoms `atoms`, centres first) into the structure's totals."""
    if not total:  # zeros shaped like the outputs, with n atoms
        for key, value in out.items():
            shape = list(value.shape)
            if key == "energy" or key in _PER_ATOM:
                shape[0] = n
            elif key.startswith("member_"):
                shape[1] = n
            total[key] = value.new_zeros(shape)
    nc = out["energy"].shape[0]
    for key, value in out.items():
        if key == "energy":
            total[key][atoms[:nc]] += value
        elif key in _PER_ATOM:
            total[key].index_add_(0, atoms, value)
        elif key == "member_energy":
            total[key][:, atoms[:nc]] += value
        elif key == "member_forces":
            total[key].index_add_(1, atoms, value)
        else:  # total_virial
            total[key] += value
    return total


class SigmaCalculator(Calculator):
    """Energies, forces, stress and calibrated per-atom uncertainty from an exported model file.

    Results: energy, free_energy, forces, stress, energies (per atom), and the uncertainties
    energies_std (sigma_E,i, eV), forces_std (sigma_F,i, eV/A), energy_std (sigma of the total
    energy, eV) and forces_interval (per-atom force-error bound at the calibrated coverage).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies",
                              "energies_std", "forces_std", "energy_std", "forces_interval"]

    def __init__(self, model: str, device: str = "cpu", dtype: Optional[str] = None,
                 uncertainty: bool = True, chunk: int = DEFAULT_CHUNK, **kwargs):
        super().__init__(**kwargs)
        self.chunk = check_chunk(chunk)
        self.uncertainty = bool(uncertainty)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device='{device}' was asked for but torch sees no CUDA device; "
                               "use device='cpu'")
        self.model = load_exported(model, device=device)
        keep_heap_memory()
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
        periodic = bool(atoms.pbc.all())  # stress (the only virial output here) needs all three axes
        out, unc = evaluate_structure(self.model, species, atoms.positions, atoms.cell.array, atoms.pbc,
                                      self.dtype, self.device, self.uncertainty, self.chunk, periodic)
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
        if periodic:
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
