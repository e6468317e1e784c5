"""Full neighbour lists for ASE structures (vesin: cell lists in C++, any cell, mixed boundaries)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
from vesin import NeighborList


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                  cutoff: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (i, j, r_ij) for every ordered pair with |r_ij| < cutoff, r_ij = r_j + S.cell - r_i.

    Cells smaller than the cutoff give several periodic images of the same j (and of i itself).
    """
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=np.float64)
    if pbc.any() and abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError("the cell is singular but periodic boundaries are on: set a cell with "
                         "non-zero volume (atoms.set_cell) or turn pbc off")
    box = np.where(pbc[:, None], cell, 0.0) if not pbc.all() else cell
    calc = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, vec = calc.compute(points=np.ascontiguousarray(positions, dtype=np.float64), box=box,
                             periodic=pbc, quantities="ijD")
    return i.astype(np.int64), j.astype(np.int64), vec
