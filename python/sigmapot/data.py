"""Reading and checking DFT frames, precomputing neighbour lists, and batching them for training."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .neighbors import neighbor_list


VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")  # ASE order


class DataError(ValueError):
    """Training or evaluation data is unusable; the message names the file and frame."""


@dataclass
class Frame:
    symbols: List[str]
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float
    forces: np.ndarray
    stress: Optional[np.ndarray]  # 3x3, eV/A^3, ASE sign convention
    config_type: str
    source: str

    @property
    def natoms(self) -> int:
        return len(self.symbols)

    @property
    def volume(self) -> float:
        return abs(float(np.linalg.det(self.cell)))


def read_frames(path: str | Path) -> List[Frame]:
    """Read every frame of a file ASE can read; check energies, forces and stresses."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"data file '{path}' is empty")
    try:
        # parallel=False: under MPI, ASE's default reads on rank 0 and broadcasts, a collective that
        # hangs (or feeds another broadcast) when only some ranks read
        images = ase.io.read(str(path), index=":", parallel=False)
    except Exception as exc:
        raise DataError(f"cannot read '{path}' with ASE ({type(exc).__name__}: {exc}); give an "
                        "extended XYZ file or another format ASE reads") from None
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise DataError(f"'{path}' holds no frames")
    frames = []
    for k, atoms in enumerate(images):
        where = f"'{path}' frame {k}"
        if len(atoms) == 0:
            raise DataError(f"{where} has no atoms")
        calc = atoms.calc
        results = calc.results if calc is not None else {}
        energy = results.get("energy", atoms.info.get("energy"))
        forces = results.get("forces", atoms.arrays.get("forces"))
        if energy is None or forces is None:
            raise DataError(f"{where} lacks {'energy' if energy is None else 'forces'}; every "
                            "training frame needs a total energy (eV) and per-atom forces (eV/A)")
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (len(atoms), 3):
            raise DataError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
        stress = results.get("stress", atoms.info.get("stress"))
        if stress is not None:
            stress = np.asarray(stress, dtype=np.float64)
            if stress.shape == (6,):
                from ase.stress import voigt_6_to_full_3x3_stress
                stress = voigt_6_to_full_3x3_stress(stress)
            if stress.shape != (3, 3):
                raise DataError(f"{where}: stress has shape {stress.shape}, expected (3, 3) or (6,)")
        for name, value in (("energy", energy), ("forces", forces), ("positions", atoms.positions),
                            ("stress", stress if stress is not None else 0.0)):
            if not np.isfinite(value).all():
                raise DataError(f"{where}: {name} contains NaN or Inf; remove or fix that frame")
        frames.append(Frame(symbols=atoms.get_chemical_symbols(), positions=atoms.positions.copy(),
                            cell=atoms.cell.array.copy(), pbc=atoms.pbc.copy(), energy=float(energy),
                            forces=forces, stress=stress if stress is not None and atoms.pbc.all()
                            else None, config_type=str(atoms.info.get("config_type", "default")),
                            source=f"{path}:{k}"))
    return frames


def frame_key(frame: Frame) -> bytes:
    h = hashlib.sha256(" ".join(frame.symbols).encode())
    for arr in (frame.positions, frame.cell):
        h.update(np.ascontiguousarray(np.round(arr, 8), dtype=np.float64).tobytes())
    return h.digest()


def check_duplicates(frames: Sequence[Frame], other: Sequence[Frame] = ()) -> None:
    """Refuse repeated structures: they bias the loss, and across splits they leak validation data."""
    seen: Dict[bytes, str] = {}
    for f in list(other) + list(frames):
        key = frame_key(f)
        if key in seen:
            raise DataError(f"{f.source} repeats the structure of {seen[key]}; remove the duplicate "
                            "(a repeated frame weighs twice in the loss, and one in both training and "
                            "validation data makes the validation error meaningless)")
        seen[key] = f.source


def data_hash(frames: Sequence[Frame]) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(" ".join(f.symbols).encode())
        for arr in (f.positions, f.cell, f.forces, np.array([f.energy])):
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return h.hexdigest()


def summarize(frames: Sequence[Frame]) -> Dict[str, object]:
    counts: Dict[str, int] = {}
    for f in frames:
        for s in f.symbols:
            counts[s] = counts.get(s, 0) + 1
    types: Dict[str, int] = {}
    for f in frames:
        types[f.config_type] = types.get(f.config_type, 0) + 1
    return {"frames": len(frames), "atoms": int(sum(f.natoms for f in frames)),
            "element_counts": counts, "config_types": types, "sha256": data_hash(frames)}


@dataclass
class Graph:
    """One frame as model input: species, edges and targets (torch tensors, float64)."""
    species: torch.Tensor
    center: torch.Tensor
    neighbor: torch.Tensor
    vec: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    stress: Optional[torch.Tensor]
    volume: float
    natoms: int
    weight: float = 1.0         # the frame's weight in the training loss (train.frame_weights)


def to_graph(frame: Frame, elements: List[str], cutoff: float) -> Graph:
    index = {el: k for k, el in enumerate(elements)}
    missing = sorted(set(frame.symbols) - set(index))
    if missing:
        raise DataError(f"{frame.source} has element(s) {missing} that the model does not have "
                        f"({elements}); add them to model.elements or to the training data")
    i, j, vec = neighbor_list(frame.positions, frame.cell, frame.pbc, cutoff)
    return Graph(species=torch.tensor([index[s] for s in frame.symbols], dtype=torch.long),
                 center=torch.from_numpy(i), neighbor=torch.from_numpy(j),
                 vec=torch.from_numpy(vec), energy=torch.tensor(frame.energy, dtype=torch.float64),
                 forces=torch.from_numpy(frame.forces),
                 stress=None if frame.stress is None else torch.from_numpy(frame.stress),
                 volume=frame.volume, natoms=frame.natoms)


@dataclass
class Batch:
    species: torch.Tensor
    center: torch.Tensor
    neighbor: torch.Tensor
    vec: torch.Tensor
    frame_of_atom: torch.Tensor
    frame_of_edge: torch.Tensor
    natoms: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor        # (B, 3, 3), zeros where absent
    has_stress: torch.Tensor    # (B,) bool
    volume: torch.Tensor
    weight: torch.Tensor        # (B,) loss weight of each frame
    n_frames: int


def collate(graphs: Sequence[Graph]) -> Batch:
    offsets = np.cumsum([0] + [g.natoms for g in graphs])
    return Batch(
        species=torch.cat([g.species for g in graphs]),
        center=torch.cat([g.center + int(o) for g, o in zip(graphs, offsets)]),
        neighbor=torch.cat([g.neighbor + int(o) for g, o in zip(graphs, offsets)]),
        vec=torch.cat([g.vec for g in graphs]),
        frame_of_atom=torch.cat([torch.full((g.natoms,), k, dtype=torch.long)
                                 for k, g in enumerate(graphs)]),
        frame_of_edge=torch.cat([torch.full((g.center.numel(),), k, dtype=torch.long)
                                 for k, g in enumerate(graphs)]),
        natoms=torch.tensor([g.natoms for g in graphs], dtype=torch.float64),
        energy=torch.stack([g.energy for g in graphs]),
        forces=torch.cat([g.forces for g in graphs]),
        stress=torch.stack([g.stress if g.stress is not None else torch.zeros(3, 3, dtype=torch.float64)
                            for g in graphs]),
        has_stress=torch.tensor([g.stress is not None for g in graphs]),
        volume=torch.tensor([g.volume for g in graphs], dtype=torch.float64),
        weight=torch.tensor([g.weight for g in graphs], dtype=torch.float64),
        n_frames=len(graphs),
    )


def shear_orders() -> Dict[str, Tuple[int, ...]]:
    """'a b c' -> perm: the shear components (yz, xz, xy) stand in the labelled columns a, b, c, so the
    corrected shear is `labelled[perm]` ('yz xz xy' is the identity, 'xz yz xy' exchanges yz and xz)."""
    names = VOIGT[3:]
    return {" ".join(names[i] for i in perm): perm for perm in itertools.permutations(range(3))}


def voigt(stress: np.ndarray) -> np.ndarray:
    """3x3 -> (xx, yy, zz, yz, xz, xy)."""
    return np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]])


def check_config_types(option: str, names, frames: Sequence[Frame], with_stress: bool) -> None:
    """Refuse config_type names given to `option` that no training frame (with a stress, if `with_stress`)
    has, listing the ones it could name."""
    present = sorted({f.config_type for f in frames if f.stress is not None or not with_stress})
    missing = sorted(set(names) - set(present))
    if missing:
        what = "has a stress; config_types with stresses:" if with_stress else "exists; the training config_types are"
        raise DataError(f"{option} names {missing}, but no training frame of that config_type {what} {present}")


def reorder_shear(frames: Sequence[Frame], orders: Mapping[str, str]) -> List[Frame]:
    """The frames with the labelled shear stresses of the config_types in `orders` read in that order.

    For data whose conversion wrote some groups' shear components in another Voigt order (`sigmapot
    evaluate` flags such a group and names the order that fits, e.g. 'xz yz xy' for the mlearn AIMD-NVT
    and Vacancy frames: docs/accuracy.md).
    """
    check_config_types("stress_shear_order", orders, frames, with_stress=True)
    from ase.stress import voigt_6_to_full_3x3_stress

    perms = {ct: [0, 1, 2] + [3 + k for k in shear_orders()[order]] for ct, order in orders.items()}
    return [dataclasses.replace(f, stress=voigt_6_to_full_3x3_stress(voigt(f.stress)[perms[f.config_type]]))
            if f.config_type in perms and f.stress is not None else f for f in frames]
