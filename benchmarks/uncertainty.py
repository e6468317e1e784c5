"""Uncertainty on new data: interval coverage on the test sets, out-of-distribution detection and
temperature extrapolation (mlearn Si and Ge).

Parts (each writes its section of benchmarks/results/uncertainty.json; the markdown tables and the
reliability plot are rebuilt from the JSON after every part):

- coverage: share of test atoms inside the calibrated 90 % force interval and of test frames inside the
  90 % energy interval, per element and per config_type, for exported models given as NAME=MODEL:ELEMENT.
- ood: for each config_type in --left-out, train the recipe on train.extxyz without that group and
  score how well per-atom sigma_F separates the left-out atoms (its frames of train.extxyz and
  test.extxyz, never trained on) from the in-distribution test atoms: AUROC per atom and per frame
  (largest sigma_F of the frame).
- temperature: train without the AIMD-NVT and Vacancy frames above MAX_TEMPERATURE (per element), then
  take the frames at HOT (1.5-2.5x) that temperature (from both files): Spearman(sigma_F, |dF|) per atom, the
  interval coverage and the rise of sigma_F and error over the in-temperature test frames.

The ood and temperature runs use --config (default: the quickstart recipe, 5 min per run; the full
recipe would take 100 min per run) with one torch thread.

Usage: python benchmarks/uncertainty.py coverage --models Si=run/model.pt:Si ...
       python benchmarks/uncertainty.py ood [--elements Si Ge] [--left-out Surface Vacancy AIMD-NVT]
       python benchmarks/uncertainty.py temperature [--elements Si Ge]
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from common import REPO, RESULTS
from sigmapot.evaluate import spearman

DATA = REPO.parent / "shared" / "data" / "mlearn"
QUICKSTART = REPO / "examples" / "configs" / "si_quickstart.yaml"
OUT_JSON = RESULTS / "uncertainty.json"
# Highest AIMD temperature trained on in the temperature part: the data's next-but-one temperatures
# above it are 1518 K (1.8x, Si) and 1816 / 2422 K (1.7x / 2.2x, Ge).
MAX_TEMPERATURE = {"Si": 843.0, "Ge": 1089.0}
HOT = (1.5, 2.5)          # the tested frames' temperatures, as multiples of MAX_TEMPERATURE
TARGETS = {"force_coverage": (0.87, 0.93), "energy_coverage": (0.85, 0.95), "auroc": 0.9, "spearman": 0.6}


def temperature(atoms) -> float | None:
    """The AIMD temperature of an mlearn frame, read from its description ('... at 843 K')."""
    found = re.search(r"at (\d+(?:\.\d+)?) K", str(atoms.info.get("mlearn_description", "")))
    return float(found.group(1)) if found else None


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a positive (out-of-distribution) score exceeds a negative one (ties count half)."""
    from scipy.stats import mannwhitneyu
    return float(mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def predict(model: Path, atoms_list: Sequence) -> List[Dict[str, np.ndarray]]:
    """Calibrated predictions of an exported model (the ASE calculator, as users run it)."""
    from sigmapot.calculator import SigmaCalculator
    calc, out = SigmaCalculator(str(model)), []
    for atoms in atoms_list:
        calc.calculate(atoms.copy(), ["energy", "forces"])
        out.append(dict(calc.results))
    return out


def force_rows(labels: Sequence, preds: Sequence[Dict]) -> Dict[str, np.ndarray]:
    """Per atom: calibrated sigma_F, interval half-width, |dF| against the labelled forces (ASE Atoms or
    (n, 3) arrays, one per frame); and the frame each atom belongs to."""
    forces = [f if isinstance(f, np.ndarray) else f.get_forces() for f in labels]
    return {"sigma": np.concatenate([p["forces_std"] for p in preds]),
            "half": np.concatenate([p["forces_interval"] for p in preds]),
            "error": np.concatenate([np.linalg.norm(p["forces"] - f, axis=1) for f, p in zip(forces, preds)]),
            "frame": np.concatenate([[k] * len(f) for k, f in enumerate(forces)])}


class DescriptorDistance:
    """A novelty score beside sigma_F, for comparison only (it is not in the model): the Mahalanobis
    distance of an atom's last hidden layer (`SigmaModel.last_hidden`, per member, averaged over the
    members) from the training atoms of its run, over the largest distance of a training atom (so > 1
    means farther out than any atom trained on).  Feature-space distances of this kind are what
    GP- and MaxVol-type extrapolation grades build on."""

    RIDGE = 1e-6                 # of the mean variance, added to the covariance's diagonal

    def __init__(self, run: Path, train_atoms: Sequence):
        from sigmapot.train import load_run
        self.model = load_run(run)[0]
        h = self.features(train_atoms)
        self.mean = h.mean(1, keepdims=True)
        cov = np.stack([np.cov(m, rowvar=False) for m in (h - self.mean)])
        ridge = self.RIDGE * np.trace(cov, axis1=1, axis2=2)[:, None, None] / cov.shape[-1]
        self.precision = np.linalg.inv(cov + ridge * np.eye(cov.shape[-1]))
        self.scale = 1.0
        self.scale = float(self(train_atoms).max())

    def features(self, atoms_list: Sequence) -> np.ndarray:
        """(M, atoms, H) over the frames in order."""
        import torch

        from sigmapot.neighbors import neighbor_list
        model, index = self.model, {el: k for k, el in enumerate(self.model.elements)}
        out = []
        with torch.no_grad():
            for a in atoms_list:
                i, j, vec = neighbor_list(a.positions, a.cell.array, a.pbc, model.cutoff)
                species = torch.tensor([index[s] for s in a.get_chemical_symbols()])
                x = model.descriptors(species, torch.from_numpy(i), torch.from_numpy(j),
                                      torch.from_numpy(vec).unsqueeze(0), len(a))
                out.append(model.last_hidden(species, x).numpy())
        return np.concatenate(out, axis=1)

    def __call__(self, atoms_list: Sequence) -> np.ndarray:
        d = self.features(atoms_list) - self.mean
        return np.sqrt(np.einsum("mnf,mfg,mng->mn", d, self.precision, d).mean(0)) / self.scale


def frame_max(values: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The largest value of each frame's atoms."""
    return np.array([values[frame == k].max() for k in range(frame.max() + 1)])


def train_on(atoms_list: Sequence, run: Path, config: str, seed: int) -> Path:
    """Train the recipe in `config` on these frames (written to RUN/train.extxyz); the exported model."""
    from ase.io import write

    from sigmapot.config import load_train_config
    from sigmapot.train import train

    if (run / "model.pt").is_file():             # finished before: evaluate it again
        return run / "model.pt"
    run.mkdir(parents=True, exist_ok=True)
    write(run / "train.extxyz", list(atoms_list))
    cfg = load_train_config(config, {"train": [str(run / "train.extxyz")], "output": str(run),
                                     "threads": 1, "seed": seed})
    present = {a.info["config_type"] for a in atoms_list}     # the recipe may name the left-out group
    if cfg.stress_config_types:
        cfg.stress_config_types = [ct for ct in cfg.stress_config_types if ct in present]
    cfg.stress_shear_order = {ct: o for ct, o in cfg.stress_shear_order.items() if ct in present}
    return train(cfg, progress=False) / "model.pt"


def read(element: str, split: str) -> list:
    from ase.io import read as ase_read
    return ase_read(DATA / element / f"{split}.extxyz", ":")


def part_coverage(models: Sequence[str]) -> Dict:
    """NAME=MODEL:ELEMENT -> test coverage of the force and energy intervals, all and per config_type,
    measured by `sigmapot evaluate`'s own functions."""
    from sigmapot.calculator import SigmaCalculator
    from sigmapot.data import read_frames
    from sigmapot.evaluate import (energy_uncertainty_metrics, frame_metrics, interval_coverage, predict_frames,
                                   uncertainty_metrics)
    out = {}
    for spec in models:
        name, rest = spec.split("=", 1)
        model, element = rest.rsplit(":", 1)
        calc = SigmaCalculator(model)
        coverage = float(calc.metadata["calibration"]["coverage"])
        frames = read_frames(DATA / element / "test.extxyz")
        preds = predict_frames(calc, frames)
        groups = {ct: [k for k, f in enumerate(frames) if f.config_type == ct]
                  for ct in sorted({f.config_type for f in frames})}
        share = interval_coverage(frames, preds, coverage)
        force = uncertainty_metrics(frames, preds, coverage)
        energy = energy_uncertainty_metrics(frame_metrics(frames, preds), coverage)
        out[name] = {"model": model, "element": element, "atoms": sum(f.natoms for f in frames),
                     "frames": len(frames), "force_coverage": share["force_interval_coverage"],
                     "energy_coverage": share["energy_interval_coverage"],
                     # 90 % ranges of the coverages over resampled test frames (sigmapot.evaluate.coverage_range)
                     "force_coverage_range": force["interval_observed_coverage_range"],
                     "energy_coverage_range": energy["energy_interval_observed_coverage_range"],
                     "force_sigma_spearman": force["force_sigma_spearman"],
                     "per_config_type": {},
                     "reliability": _reliability(force_rows([f.forces for f in frames], preds))}
        for ct, idx in groups.items():
            group = interval_coverage([frames[k] for k in idx], [preds[k] for k in idx], coverage)
            out[name]["per_config_type"][ct] = {
                "atoms": sum(frames[k].natoms for k in idx), "force_coverage": group["force_interval_coverage"],
                "frames": len(idx), "energy_coverage": group["energy_interval_coverage"]}
        print(name, json.dumps({k: v for k, v in out[name].items() if k != "reliability"}, indent=1))
    return out


def _reliability(rows: Dict[str, np.ndarray]) -> Dict[str, list]:
    """Observed against nominal coverage of the central intervals of a Maxwell error with RMS sigma_F
    (the calibrated sigma), and the RMS error in 10 bins of sigma_F (equal counts) over the atoms above
    the floor (those at it, e.g. symmetric sites with errors of 1e-8, would set the axes)."""
    from scipy.stats import chi

    from sigmapot.calibrate import FORCE_RESOLUTION
    nominal = np.linspace(0.05, 0.95, 19)
    z = rows["error"] / np.maximum(rows["sigma"] / np.sqrt(3.0), 1e-12)
    order = np.argsort(rows["sigma"])
    bins = np.array_split(order[rows["sigma"][order] > 1.5 * FORCE_RESOLUTION], 10)
    return {"nominal": nominal.tolist(), "observed": [float(np.mean(z <= chi.ppf(p, 3))) for p in nominal],
            "bin_rms_sigma": [float(np.sqrt(np.mean(rows["sigma"][b] ** 2))) for b in bins],
            "bin_rms_error": [float(np.sqrt(np.mean(rows["error"][b] ** 2))) for b in bins]}


def coordination(atoms_list: Sequence, shell: float) -> np.ndarray:
    """Neighbours of each atom within `shell` (Å)."""
    from ase.neighborlist import neighbor_list
    return np.concatenate([np.bincount(neighbor_list("i", a, shell), minlength=len(a)) for a in atoms_list])


def first_shell(atoms_list: Sequence) -> tuple[float, int]:
    """First-shell radius (1.15 x the median nearest-neighbour distance) and the most common
    coordination within it, over these frames: the yardstick of 'odd' (e.g. surface or vacancy-side)
    atoms, with nothing element-specific."""
    from ase.neighborlist import neighbor_list
    nearest = []
    for a in atoms_list:
        i, d = neighbor_list("id", a, 4.0)
        shortest = np.full(len(a), np.inf)
        np.minimum.at(shortest, i, d)
        nearest.append(shortest)
    shell = 1.15 * float(np.median(np.concatenate(nearest)))
    return shell, int(np.bincount(coordination(atoms_list, shell)).argmax())


def part_ood(elements: Sequence[str], left_out: Sequence[str], config: str, work: Path, seed: int) -> Dict:
    out = {}
    for element in elements:
        train, test = read(element, "train"), read(element, "test")
        shell, typical = first_shell(train)
        for ct in left_out:
            model = train_on([a for a in train if a.info["config_type"] != ct], work / f"ood_{element}_{ct}",
                             config, seed)
            inside = [a for a in test if a.info["config_type"] != ct]
            outside = [a for a in train + test if a.info["config_type"] == ct]
            r_in, r_out = force_rows(inside, predict(model, inside)), force_rows(outside, predict(model, outside))
            distance = DescriptorDistance(model.parent, [a for a in train if a.info["config_type"] != ct])
            d_in, d_out = distance(inside), distance(outside)
            odd = coordination(outside, shell) != typical
            out[f"{element}/{ct}"] = {
                "element": element, "left_out": ct, "in_atoms": int(len(r_in["sigma"])),
                "out_atoms": int(len(r_out["sigma"])), "out_frames": len(outside),
                "auroc_atoms": auroc(r_out["sigma"], r_in["sigma"]),
                "auroc_frames": auroc(frame_max(r_out["sigma"], r_out["frame"]), frame_max(r_in["sigma"], r_in["frame"])),
                # the same for the descriptor distance (DescriptorDistance), and its share above 1
                "distance_auroc_atoms": auroc(d_out, d_in),
                "distance_auroc_frames": auroc(frame_max(d_out, r_out["frame"]), frame_max(d_in, r_in["frame"])),
                "distance_auroc_odd_atoms": auroc(d_out[odd], d_in) if odd.any() else None,
                "distance_above_1_out": float(np.mean(d_out > 1.0)),
                # the ceiling of any uncertainty that tracks the error: the AUROC of the true |dF|
                "auroc_atoms_of_error": auroc(r_out["error"], r_in["error"]),
                "odd_atoms": int(odd.sum()),
                "auroc_odd_atoms": auroc(r_out["sigma"][odd], r_in["sigma"]) if odd.any() else None,
                "auroc_odd_atoms_of_error": auroc(r_out["error"][odd], r_in["error"]) if odd.any() else None,
                "odd_rms_error": _rms(r_out["error"][odd]), "odd_rms_sigma": _rms(r_out["sigma"][odd]),
                "odd_force_coverage": float(np.mean(r_out["error"][odd] <= r_out["half"][odd])),
                "in_rms_error": _rms(r_in["error"]), "out_rms_error": _rms(r_out["error"]),
                "in_rms_sigma": _rms(r_in["sigma"]), "out_rms_sigma": _rms(r_out["sigma"]),
                "out_force_coverage": float(np.mean(r_out["error"] <= r_out["half"])),
                "out_sigma_spearman": spearman(r_out["sigma"], r_out["error"])}
            print(json.dumps(out[f"{element}/{ct}"]))
    return out


def part_temperature(elements: Sequence[str], config: str, work: Path, seed: int) -> Dict:
    out = {}
    for element in elements:
        t_max = MAX_TEMPERATURE[element]
        train, test = read(element, "train"), read(element, "test")
        hot = [a for a in train + test if (temperature(a) or 0) > t_max]
        model = train_on([a for a in train if (temperature(a) or 0) <= t_max], work / f"temperature_{element}",
                         config, seed)
        near = [a for a in test if temperature(a) is not None and temperature(a) <= t_max]
        r_near = force_rows(near, predict(model, near))
        far = [a for a in hot if HOT[0] * t_max <= temperature(a) <= HOT[1] * t_max]
        r = force_rows(far, predict(model, far))
        distance = DescriptorDistance(model.parent, [a for a in train if (temperature(a) or 0) <= t_max])
        d_far = distance(far)
        out[element] = {"element": element, "trained_up_to_K": t_max,
                        "tested_at_K": sorted({temperature(a) for a in far}), "frames": len(far),
                        "atoms": int(len(r["sigma"])), "sigma_spearman": spearman(r["sigma"], r["error"]),
                        "sigma_spearman_if_exact": spearman_ceiling(r["sigma"]),
                        "distance_spearman": spearman(d_far, r["error"]),
                        "distance_above_1": float(np.mean(d_far > 1.0)),
                        "force_coverage": float(np.mean(r["error"] <= r["half"])),
                        "rms_error": _rms(r["error"]), "rms_sigma": _rms(r["sigma"]),
                        "in_temperature_rms_error": _rms(r_near["error"]),
                        "in_temperature_rms_sigma": _rms(r_near["sigma"]),
                        "in_temperature_sigma_spearman": spearman(r_near["sigma"], r_near["error"]),
                        "in_temperature_sigma_spearman_if_exact": spearman_ceiling(r_near["sigma"])}
        print(json.dumps(out[element]))
    return out


def spearman_ceiling(sigma: np.ndarray, draws: int = 20) -> float:
    """Mean Spearman(sigma_F, |dF|) if sigma_F were exact: |dF| drawn from the Maxwell distribution of
    RMS sigma_F on each atom.  Where sigma_F varies little between atoms, the scatter of single errors
    keeps even a perfect sigma far below 1."""
    rng = np.random.default_rng(0)
    return float(np.mean([spearman(sigma, sigma / np.sqrt(3.0) * np.linalg.norm(
        rng.normal(size=(len(sigma), 3)), axis=1)) for _ in range(draws)]))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def write_report(results: Dict) -> None:
    """uncertainty.md (tables) and uncertainty.png (reliability plot) from the JSON."""
    lo, hi = TARGETS["force_coverage"]
    lines = ["# Uncertainty on new data (benchmarks/uncertainty.py)", ""]
    if results.get("coverage"):
        lines += ["## Coverage of the 90 % intervals on the test sets", "",
                  f"Target: force {lo:.0%}-{hi:.0%} of test atoms, energy "
                  f"{TARGETS['energy_coverage'][0]:.0%}-{TARGETS['energy_coverage'][1]:.0%} of test frames.", "",
                  "In brackets the 90 % range of each coverage over resampled test frames (bootstrap; "
                  "the atoms of a frame share its errors): a target inside it cannot be told apart from the "
                  "observed value on this test set.", "",
                  "| model | element | force interval covers | energy interval covers | Spearman(σ_F, \\|ΔF\\|) "
                  "| per config_type (force) |", "|---|---|---|---|---|---|"]

        def ranged(c: dict, key: str, digits: int) -> str:
            r = c.get(f"{key}_range")
            return f"{c[key]:.{digits}%}" + (f" [{r[0]:.0%}–{r[1]:.0%}]" if r else "")

        for name, c in results["coverage"].items():
            per = ", ".join(f"{ct} {v['force_coverage']:.1%}" for ct, v in c["per_config_type"].items())
            lines.append(f"| {name} | {c['element']} | {ranged(c, 'force_coverage', 1)} ({c['atoms']} atoms) | "
                         f"{ranged(c, 'energy_coverage', 0)} ({c['frames']} frames) | "
                         f"{c['force_sigma_spearman']:.3f} | {per} |")
    if results.get("ood"):
        lines += ["", "## Out-of-distribution detection (one config_type left out of training)", "",
                  f"Target: AUROC ≥ {TARGETS['auroc']} per atom. In brackets the AUROC of the true error "
                  "|ΔF| itself: the ceiling of an uncertainty that tracks the error. 'Odd' atoms have another "
                  "coordination than the training data's usual one within the first shell (surface and "
                  "vacancy-side atoms).", "",
                  "| element | left out | AUROC σ_F per atom | per frame (max σ_F) | odd atoms | AUROC σ_F, "
                  "odd atoms | RMS \\|ΔF\\| in / out / odd | RMS σ_F in / out / odd | 90 % interval covers "
                  "out / odd |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["ood"].values():
            odd = (f"{r['auroc_odd_atoms']:.3f} ({r['auroc_odd_atoms_of_error']:.3f})"
                   if r.get("auroc_odd_atoms") is not None else "-")
            lines.append(f"| {r['element']} | {r['left_out']} ({r['out_atoms']} atoms) | {r['auroc_atoms']:.3f} "
                         f"({r['auroc_atoms_of_error']:.3f}) | {r['auroc_frames']:.3f} | {r['odd_atoms']} | {odd} | "
                         f"{r['in_rms_error']:.3f} / {r['out_rms_error']:.3f} / {r['odd_rms_error']:.3f} | "
                         f"{r['in_rms_sigma']:.3f} / {r['out_rms_sigma']:.3f} / {r['odd_rms_sigma']:.3f} | "
                         f"{r['out_force_coverage']:.1%} / {r['odd_force_coverage']:.1%} |")
        lines += ["", "The descriptor distance (a Mahalanobis distance in the readout's last hidden layer from the "
                  "training atoms, 1 = the farthest training atom; not in the model) against σ_F, on the same "
                  "atoms:", "",
                  "| element | left out | AUROC per atom: σ_F / distance | per frame (max): σ_F / distance | "
                  "odd atoms: σ_F / distance | left-out atoms with distance > 1 |", "|---|---|---|---|---|---|"]
        for r in results["ood"].values():
            if "distance_auroc_atoms" not in r:
                continue
            odd = (f"{r['auroc_odd_atoms']:.3f} / {r['distance_auroc_odd_atoms']:.3f}"
                   if r.get("auroc_odd_atoms") is not None else "-")
            lines.append(f"| {r['element']} | {r['left_out']} | {r['auroc_atoms']:.3f} / "
                         f"{r['distance_auroc_atoms']:.3f} | {r['auroc_frames']:.3f} / "
                         f"{r['distance_auroc_frames']:.3f} | {odd} | {r['distance_above_1_out']:.1%} |")
    if results.get("temperature"):
        lines += ["", "## Temperature extrapolation", "",
                  f"Target: Spearman(σ_F, \\|ΔF\\|) ≥ {TARGETS['spearman']} on the hotter frames.", "",
                  "In brackets the Spearman an exact σ_F would reach (errors drawn from the Maxwell "
                  "distribution of RMS σ_F on each atom); 'trained T' is the test frames at the temperatures "
                  "trained on.", "",
                  "| element | trained up to | tested at | atoms | Spearman hot (if exact) | Spearman trained T "
                  "(if exact) | RMS \\|ΔF\\| (trained T → hot) | RMS σ_F (trained T → hot) | 90 % interval covers "
                  "(hot) | Spearman hot, descriptor distance |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["temperature"].values():
            lines.append(f"| {r['element']} | {r['trained_up_to_K']:.0f} K | "
                         f"{', '.join(f'{t:.0f}' for t in r['tested_at_K'])} K | {r['atoms']} | "
                         f"{r['sigma_spearman']:.3f} ({r['sigma_spearman_if_exact']:.3f}) | "
                         f"{r['in_temperature_sigma_spearman']:.3f} ({r['in_temperature_sigma_spearman_if_exact']:.3f}) | "
                         f"{r['in_temperature_rms_error']:.3f} → {r['rms_error']:.3f} | "
                         f"{r['in_temperature_rms_sigma']:.3f} → {r['rms_sigma']:.3f} | {r['force_coverage']:.1%} | "
                         + (f"{r['distance_spearman']:.3f} |" if "distance_spearman" in r else "- |"))
    if results.get("commands"):
        lines += ["", "Commands:", ""] + [f"    {c}" for c in results["commands"].values()]
    (RESULTS / "uncertainty.md").write_text("\n".join(lines) + "\n")
    if results.get("coverage"):
        _plot(results["coverage"])


def _plot(coverage: Dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, c in coverage.items():
        r = c["reliability"]
        axes[0].plot(r["nominal"], r["observed"], "o-", ms=3, label=name)
        axes[1].loglog(r["bin_rms_sigma"], r["bin_rms_error"], "o-", ms=4, label=name)
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].set(xlabel="nominal coverage", ylabel="observed coverage (test atoms)",
                title="force intervals (Maxwell with RMS σ_F)")
    lim = axes[1].get_xlim()
    axes[1].plot(lim, lim, "k--", lw=0.8)
    axes[1].set(xlabel="RMS σ_F in bin (eV/Å)", ylabel="RMS |ΔF| in bin (eV/Å)",
                title="RMS error vs σ_F (10 bins, above the floor)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "uncertainty.png", dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["coverage", "ood", "temperature", "report"])
    p.add_argument("--models", nargs="+", default=[], help="coverage: NAME=MODEL.pt:ELEMENT")
    p.add_argument("--elements", nargs="+", default=["Si", "Ge"])
    p.add_argument("--left-out", nargs="+", default=["Surface", "Vacancy", "AIMD-NVT"])
    p.add_argument("--config", default=str(QUICKSTART), help="training recipe of the ood/temperature runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(RESULTS / "runs" / "uncertainty"))
    args = p.parse_args()
    results = json.loads(OUT_JSON.read_text()) if OUT_JSON.is_file() else {}
    work = Path(args.work)
    if args.part == "coverage":
        results.setdefault("coverage", {}).update(part_coverage(args.models))
    elif args.part == "ood":
        results.setdefault("ood", {}).update(part_ood(args.elements, args.left_out, args.config, work, args.seed))
    elif args.part == "temperature":
        results.setdefault("temperature", {}).update(part_temperature(args.elements, args.config, work, args.seed))
    if args.part != "report":
        import sys
        results.setdefault("commands", {})[" ".join([args.part] + (args.models or args.elements))] = \
            "python benchmarks/uncertainty.py " + " ".join(sys.argv[1:])
    OUT_JSON.write_text(json.dumps(results, indent=2))
    write_report(results)


if __name__ == "__main__":
    main()
