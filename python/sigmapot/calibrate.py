"""Calibration of the ensemble spread on held-out frames, stored in the model (one path for all engines).

sigma_F,i^2 = (a raw_i^b)^2 + c^2, with raw_i the RMS deviation of member forces from the mean force on
atom i, fit by maximum likelihood of the observed force-error vectors (b in [0.25, 2]; b = 1 and c at
its lower bound below 200 atoms) (an isotropic Gaussian per atom, so sigma_F,i estimates the RMS norm of
the error on atom i).  A power law keeps the ranking of the raw spread and corrects both its scale and
its tendency to under-spread where the ensemble agrees.  The floor c (at least FORCE_RESOLUTION) is the
error no ensemble spread signals: at sites whose force vanishes by symmetry every member predicts zero,
and both the spread and the error are round-off, whose ratio would decide coverage at random.  The interval
half-width q * sigma_F,i uses a split-conformal quantile q of |dF_i| / sigma_F,i, so it covers the stated
share of held-out atoms.  sigma_E (per atom and total) is the raw member spread times one scale s, set by
the same split-conformal rule on the total-energy errors of the same frames (see `energy_scale`).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Dict, List, Sequence

import numpy as np
import torch

from .data import Frame
from .calculator import evaluate_structure


@torch.no_grad()
def _identity_calibration(model) -> torch.Tensor:
    saved = model.calibration.clone()
    model.calibration.copy_(torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0], dtype=model.calibration.dtype))
    return saved


def raw_errors(model, frames: Sequence[Frame]) -> Dict[str, np.ndarray]:
    """Uncalibrated spreads and true errors: per atom (raw sigma_F, |dF|) and per frame (sigma_E, dE)."""
    index = {el: k for k, el in enumerate(model.elements)}
    saved = _identity_calibration(model)
    dtype = model.calibration.dtype
    try:
        rows: Dict[str, List[np.ndarray]] = {"raw_force": [], "force_error": [], "raw_energy": [],
                                             "energy_error": [], "natoms": []}
        for f in frames:
            species = np.array([index[s] for s in f.symbols], dtype=np.int64)
            out, unc = evaluate_structure(model, species, f.positions, f.cell, f.pbc, dtype, virial=False)
            rows["raw_force"].append(unc["force_std"].detach().double().numpy())
            rows["force_error"].append(np.linalg.norm(out["forces"].detach().double().numpy() - f.forces, axis=1))
            rows["raw_energy"].append(np.array([float(unc["total_energy_std"])]))
            rows["energy_error"].append(np.array([float(out["energy"].sum()) - f.energy]))
            rows["natoms"].append(np.array([f.natoms]))
    finally:
        with torch.no_grad():
            model.calibration.copy_(saved)
    return {k: np.concatenate(v) for k, v in rows.items()}


# Below this many calibration atoms the exponent is too noisy to fit (it can collapse to b = 0, which
# gives every atom the same sigma_F); only the scale is fit then.  b >= 0.25 keeps the ranking.
MIN_ATOMS_FOR_EXPONENT = 200
# eV/A: the smallest force floor c.  DFT forces are converged to about this at best, so smaller errors
# carry no information; on mlearn Si and Ge, 3 of the 6 Elastic test frames (12 % of the test atoms)
# have forces that vanish by symmetry and model errors of 1e-8.
FORCE_RESOLUTION = 1e-3


def fit_force_sigma(raw: np.ndarray, err: np.ndarray) -> tuple[float, float, float]:
    """Maximum-likelihood (a, b, c) of sigma^2 = (a raw^b)^2 + c^2 for 3-d Gaussian errors of RMS norm
    sigma, with c >= FORCE_RESOLUTION and b <= 1.

    b <= 1: the spread may be rescaled and compressed, never stretched super-linearly, because a
    validation split samples large spreads thinly and b > 1 extrapolates the error/spread ratio
    without bound: a 13-frame split of mostly Elastic atoms fit b = 1.98, and on MD at twice its
    training temperature that model's sigma_F was 7x its RMS error (docs/uncertainty.md)."""
    from scipy.optimize import minimize

    log_raw = np.log(np.maximum(raw, 1e-12))
    e2 = err ** 2

    def nll(theta: np.ndarray) -> float:
        log_a, b, log_c = theta
        log_s2 = np.logaddexp(2 * (log_a + b * log_raw), 2 * log_c)      # no overflow on wild steps
        return float(np.mean(log_s2 + e2 * np.exp(np.minimum(-log_s2, 700.0))))

    def power_law(b: float) -> float:
        # the optimal a of the floor-free fit has a closed form: a^2 = mean(e^2 / raw^(2b))
        return 0.5 * math.log(np.mean(e2 * np.exp(-2 * b * log_raw)))

    c_min = math.log(FORCE_RESOLUTION)
    if len(raw) < MIN_ATOMS_FOR_EXPONENT:
        return math.exp(power_law(1.0)), 1.0, FORCE_RESOLUTION
    c_max = math.log(max(FORCE_RESOLUTION, math.sqrt(e2.mean())))
    bounds = [(-30.0, 30.0), (0.25, 1.0), (c_min, c_max)]
    starts = [np.array([power_law(b), b, c]) for b in (0.5, 1.0) for c in (c_min, 0.5 * (c_min + c_max))]
    best = min((minimize(nll, x0, method="L-BFGS-B", bounds=bounds) for x0 in starts), key=lambda r: r.fun)
    log_a, b, log_c = best.x
    return math.exp(log_a), float(b), math.exp(log_c)


def energy_scale(raw: np.ndarray, err: np.ndarray, coverage: float) -> float:
    """Scale s of sigma_E = s * raw such that +-z sigma_E (z: the normal quantile of `coverage`) covers
    the split-conformal share of the frames' total-energy errors.

    There is one error per frame, about 20 of them in a 10 % validation split, so a Gaussian fit (the
    RMS of |err| / raw, the former rule) is set by the worst frame: on mlearn Si one validation
    frame at 3.9 sigma made every other interval about twice too wide (docs/experiments.md)."""
    return conformal_quantile(np.abs(err) / np.maximum(raw, 1e-12), coverage) / normal_half_width(coverage)


def normal_half_width(coverage: float) -> float:
    """z such that +-z standard deviations hold `coverage` of a normal distribution (1.645 at 90 %)."""
    return NormalDist().inv_cdf(0.5 + coverage / 2)


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """Split-conformal quantile: the ceil((n+1) coverage)-th smallest score."""
    n = len(scores)
    k = min(n, int(math.ceil((n + 1) * coverage)))
    return float(np.sort(scores)[k - 1])


def calibrate_model(model, frames: Sequence[Frame], coverage: float = 0.9) -> Dict[str, float]:
    """Fit the calibration on `frames`, store it in `model.calibration`, return it (for metadata)."""
    raw = raw_errors(model, frames)
    a, b, c = fit_force_sigma(raw["raw_force"], raw["force_error"])
    sigma_f = np.hypot(a * np.maximum(raw["raw_force"], 1e-12) ** b, c)
    q = conformal_quantile(raw["force_error"] / sigma_f, coverage)
    s_energy = energy_scale(raw["raw_energy"], raw["energy_error"], coverage)
    calibration = {"force_scale": a, "force_exponent": b, "energy_scale": s_energy, "force_quantile": q,
                   "force_floor": c, "coverage": coverage, "n_atoms": int(len(raw["raw_force"])), "n_frames": len(frames),
                   "method": "ML fit of sigma_F = sqrt((a raw^b)^2 + c^2) + split-conformal interval; "
                             "split-conformal sigma_E scale"}
    apply_calibration(model, calibration)
    return calibration


def apply_calibration(model, calibration: Dict[str, float]) -> None:
    """Store a calibration (as calibrate_model returns it) in `model.calibration`."""
    keys = ("force_scale", "force_exponent", "energy_scale", "force_quantile", "force_floor")
    values = [calibration.get(k, 0.0) for k in keys]      # no floor in calibrations fit before it
    with torch.no_grad():
        model.calibration.copy_(torch.tensor(values, dtype=model.calibration.dtype))
