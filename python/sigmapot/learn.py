"""Uncertainty-driven active learning: `sigmapot learn CONFIG.yaml`.

Each iteration k trains model k on every label so far (from scratch for k = 0, then fine-tuned from
model k-1), evaluates it on the fixed test set, runs MD with it (ASE or LAMMPS), and, unless a stop
criterion holds, picks a batch of sampled snapshots whose largest calibrated sigma_F passes
`threshold` (most uncertain first, then farthest-point sampling on the model's atom descriptors) and
labels them with the reference calculator for iteration k + 1.

Stop criteria, checked after the MD of an iteration: every MD run went its full length with no sampled
atom above `threshold` ("converged"); the labels used reached `label_budget`; `max_iterations` ran.

Output directory (every file written atomically, write-then-rename):
  config.yaml                 the validated configuration
  initial.extxyz, test.extxyz labelled initial frames and test set (relabelled once if `relabel`)
  iter_NNN/train/             the training run (model.pt, final.pt, metrics.csv, ...)
  iter_NNN/md.json            MD statistics; iter_NNN/selected.extxyz the chosen snapshots
  iter_NNN/labels.extxyz      their labels, written after every reference call
  iter_NNN/state.json         the iteration's record; its presence marks the iteration finished
  learning_curve.csv / .png   one row per iteration
A rerun with the same config continues where the last one stopped: finished iterations are read back,
a killed training resumes from its checkpoint, and no frame is labelled twice.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml
from ase import Atoms

from .config import ConfigError, TrainConfig, _build, read_yaml_mapping
from .reference import ReferenceConfig

ENGINES = ("ase", "lammps")
SELECTIONS = ("uncertainty", "random")
# set by the loop itself in each iteration's training config
LOOP_TRAINING_KEYS = ("train", "validation", "validation_fraction", "output", "init", "max_frames")
# keys that may change when a stopped loop is rerun (they only affect what has not run yet)
RESUMABLE_KEYS = ("label_budget", "max_iterations", "md.mpi_ranks", "training.threads")


@dataclass
class MDConfig:
    engine: str = "ase"
    structures: List[str] = field(default_factory=list)
    supercell: List[int] = field(default_factory=lambda: [1, 1, 1])
    temperatures: List[float] = field(default_factory=lambda: [300.0])
    pressures: List[Optional[float]] = field(default_factory=lambda: [None])   # bar; null: constant volume
    strains: List[float] = field(default_factory=lambda: [0.0])                # isotropic linear strain
    steps: int = 1000
    timestep_fs: float = 1.0
    sample_every: int = 20
    mpi_ranks: int = 1

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"md.engine must be one of {ENGINES}, got '{self.engine}'")
        if not self.structures:
            raise ConfigError("md.structures is empty: name at least one file of starting structures")
        for spec in self.structures:
            _check_spec(spec, "md.structures")
        if len(self.supercell) != 3 or any(int(n) < 1 for n in self.supercell):
            raise ConfigError(f"md.supercell must be three positive integers, got {self.supercell}")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise ConfigError(f"md.temperatures must be a non-empty list of positive K, got {self.temperatures}")
        if not self.pressures:
            raise ConfigError("md.pressures is empty: use [null] for constant volume")
        if not self.strains or any(s <= -1 for s in self.strains):
            raise ConfigError(f"md.strains must be a non-empty list of numbers > -1, got {self.strains}")
        for name in ("steps", "timestep_fs", "sample_every", "mpi_ranks"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"md.{name} must be > 0, got {getattr(self, name)}")
        if self.sample_every > self.steps:
            raise ConfigError(f"md.sample_every ({self.sample_every}) must not exceed md.steps ({self.steps})")
        if self.mpi_ranks > 1 and self.engine != "lammps":
            raise ConfigError("md.mpi_ranks > 1 needs md.engine: lammps (the ASE engine runs in one "
                              "process: set md.mpi_ranks to 1, or --mpi-ranks 1 with --engine ase)")


@dataclass
class LearnConfig:
    initial: List[str] = field(default_factory=list)
    test: str = ""
    output: str = "learn"
    relabel: bool = False
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    md: MDConfig = field(default_factory=MDConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    finetune_epochs: Optional[int] = None
    finetune_learning_rate: Optional[float] = None
    threshold: float = 0.0
    halt_threshold: Optional[float] = None
    labels_per_iteration: int = 8
    label_budget: int = 100
    max_iterations: int = 20
    selection: str = "uncertainty"
    validation_fraction: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if not self.initial:
            raise ConfigError("'initial' is empty: name the file(s) of the starting training structures")
        for spec in self.initial:
            _check_spec(spec, "initial")
        if not self.test:
            raise ConfigError("'test' is missing: name a file of test structures (errors are tracked on it)")
        _check_spec(self.test, "test")
        if not self.reference.calculator:
            raise ConfigError("reference.calculator is missing (e.g. 'si-tersoff' or "
                              "'ase.calculators.vasp:Vasp')")
        self.reference.validate()
        self.md.validate()
        bad = [k for k in LOOP_TRAINING_KEYS if getattr(self.training, k) != getattr(TrainConfig(), k)]
        if bad:
            raise ConfigError(f"training.{bad[0]} is set by the loop itself; remove it (the validation "
                              "share of the labels is the top-level 'validation_fraction')")
        # TrainConfig.validate also checks that its data files exist; the loop writes those later,
        # so everything else is checked here with this file standing in for them
        dataclasses.replace(self.training, train=[__file__]).validate()
        if not self.threshold > 0:
            raise ConfigError(f"threshold (sigma_F, eV/A) must be > 0, got {self.threshold}")
        if self.halt_threshold is not None and self.halt_threshold < self.threshold:
            raise ConfigError(f"halt_threshold ({self.halt_threshold}) must be >= threshold ({self.threshold})")
        for name in ("labels_per_iteration", "label_budget", "max_iterations"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.finetune_epochs is not None and self.finetune_epochs <= 0:
            raise ConfigError(f"finetune_epochs must be > 0, got {self.finetune_epochs}")
        if self.finetune_learning_rate is not None and self.finetune_learning_rate <= 0:
            raise ConfigError(f"finetune_learning_rate must be > 0, got {self.finetune_learning_rate}")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection must be one of {SELECTIONS}, got '{self.selection}'")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}")

    @property
    def halt(self) -> float:
        """MD stops once sigma_F passes this: later snapshots are off the trusted region anyway."""
        return self.halt_threshold if self.halt_threshold is not None else 2.0 * self.threshold


def _check_spec(spec: str, where: str) -> None:
    path, _ = split_spec(spec)
    if not Path(path).is_file():
        raise ConfigError(f"{where}: file '{path}' does not exist (paths are relative to the directory "
                          "you run sigmapot in; 'file@index' picks frames, e.g. 'data.extxyz@0:10')")


def split_spec(spec: str) -> tuple:
    """'file@index' (ASE index syntax: '3', '0:10', '-1') -> (file, index); plain 'file' -> every frame."""
    if "@" in spec and not Path(spec).is_file():
        path, index = spec.rsplit("@", 1)
        return path, index
    return spec, ":"


def read_structures(spec: str) -> List[Atoms]:
    import ase.io

    path, index = split_spec(spec)
    try:
        images = ase.io.read(path, index=index, parallel=False)   # see data.read_frames
    except Exception as exc:
        raise ConfigError(f"cannot read structures '{spec}' with ASE: {type(exc).__name__}: {exc}") from None
    images = images if isinstance(images, list) else [images]
    if not images:
        raise ConfigError(f"'{spec}' selects no frames")
    return images


def _mapping(value: Any, where: str) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"'{where}' must be a mapping")
    return value


def load_learn_config(path: Optional[str], overrides: Dict[str, Any]) -> LearnConfig:
    """Read a YAML config (safe loader), apply overrides ('md.engine' style dotted keys), validate."""
    data = read_yaml_mapping(path) if path is not None else {}
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    where = path or "command line"
    data = dict(data)
    for name, cls in (("md", MDConfig), ("reference", ReferenceConfig), ("training", TrainConfig)):
        if name in data:
            section = dict(_mapping(data[name], name))
            if name == "md" and isinstance(section.get("structures"), str):
                section["structures"] = [section["structures"]]
            data[name] = _build(cls, section, f"{where}: {name}")
    if isinstance(data.get("initial"), str):
        data["initial"] = [data["initial"]]
    config = _build(LearnConfig, data, where)
    config.validate()
    return config


# ---------------------------------------------------------------------------------------- files
def write_frames_atomic(path: Path, frames: Sequence[Atoms]) -> None:
    import ase.io

    tmp = path.with_name(path.name + ".tmp")
    ase.io.write(str(tmp), list(frames), format="extxyz")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_frames_file(path: Path) -> List[Atoms]:
    import ase.io

    return ase.io.read(str(path), index=":", parallel=False) if path.is_file() and path.stat().st_size else []


class Labeller:
    """Labels frames with the reference calculator, built on first use (a resumed loop may need none)."""

    def __init__(self, cfg: ReferenceConfig):
        self.cfg = cfg
        self.calc = None

    def label_into(self, frames: Sequence[Atoms], path: Path) -> List[Atoms]:
        """Labels of `frames`, persisted to `path` after every call; labels already there are reused."""
        from .reference import label, make_reference

        done = read_frames_file(path)
        for atoms in frames[len(done):]:
            if self.calc is None:
                self.calc = make_reference(self.cfg)
            done.append(label(atoms, self.calc))
            write_frames_atomic(path, done)
        return done


def _prepare_output(cfg: LearnConfig) -> Path:
    """Create the output directory, or check that a rerun uses the config of the stopped loop."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    saved_path = out / "config.yaml"
    current = dataclasses.asdict(cfg)
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text())
        changed = sorted(k for k in set(_flatten(saved)) | set(_flatten(current))
                         if _flatten(saved).get(k) != _flatten(current).get(k) and k not in RESUMABLE_KEYS)
        if changed:
            raise ConfigError(f"'{out}' holds a loop run with another config (differs in {changed}); "
                              f"restore those keys to continue it, or set another 'output'")
    tmp = saved_path.with_name("config.yaml.tmp")
    tmp.write_text(yaml.safe_dump(current, sort_keys=False))
    os.replace(tmp, saved_path)
    return out


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _labelled_set(specs: Sequence[str], path: Path, relabel: bool, labeller: Labeller, what: str) -> List[Atoms]:
    """Frames of `specs`, labelled by the reference if `relabel`, persisted to `path`."""
    frames = [a for spec in specs for a in read_structures(spec)]
    if relabel:
        return labeller.label_into(frames, path)
    for k, atoms in enumerate(frames):
        results = atoms.calc.results if atoms.calc is not None else {}
        if "energy" not in results or "forces" not in results:
            raise ConfigError(f"{what} frame {k} has no energy and forces; set 'relabel: true' to label "
                              "the structures with the reference calculator")
    if not path.is_file():
        write_frames_atomic(path, frames)
    return read_frames_file(path)


def is_validation(n: int, fraction: float) -> bool:
    """Label number n (0-based, in labelling order) goes to validation: a fixed share, label 0 first."""
    return math.ceil((n + 1) * fraction) > math.ceil(n * fraction)


# ---------------------------------------------------------------------------------------- steps
def _train_iteration(cfg: LearnConfig, it: Path, labels: List[Atoms], previous: Optional[Path]) -> Path:
    """Train (k = 0) or fine-tune (k > 0) on all labels; resumes a killed training from its checkpoint."""
    from .train import has_checkpoint, train

    run = it / "train"
    if (run / "final.pt").is_file() and (run / "model.pt").is_file():
        return run / "model.pt"
    it.mkdir(parents=True, exist_ok=True)
    val = [a for n, a in enumerate(labels) if is_validation(n, cfg.validation_fraction)]
    trn = [a for n, a in enumerate(labels) if not is_validation(n, cfg.validation_fraction)]
    if not trn:
        raise ConfigError(f"{len(labels)} initial frame(s) leave none for training after the validation "
                          f"share ({cfg.validation_fraction}); give more initial frames")
    write_frames_atomic(it / "train.extxyz", trn)
    write_frames_atomic(it / "validation.extxyz", val)
    tcfg = dataclasses.replace(cfg.training, train=[str(it / "train.extxyz")],
                               validation=str(it / "validation.extxyz"), output=str(run))
    if previous is not None:
        # fine-tuning continues every member of the previous (possibly merged) model in one run
        tcfg = dataclasses.replace(tcfg, init=str(previous), ensemble_runs=1,
                                   epochs=cfg.finetune_epochs or tcfg.epochs,
                                   learning_rate=cfg.finetune_learning_rate or tcfg.learning_rate)
    tcfg.validate()
    train(tcfg, resume=has_checkpoint(run, tcfg.ensemble_runs), progress=False)
    return run / "model.pt"


def md_conditions(md: MDConfig) -> List[Dict[str, Any]]:
    """Every (structure, temperature, pressure, strain) combination, each one MD run per iteration."""
    structures = [(f"{spec}#{k}", atoms) for spec in md.structures
                  for k, atoms in enumerate(read_structures(spec))]
    return [{"structure": name, "atoms": atoms, "temperature": t, "pressure": p, "strain": s}
            for (name, atoms), t, p, s in itertools.product(structures, md.temperatures, md.pressures,
                                                           md.strains)]


def _explore(cfg: LearnConfig, it: Path, k: int, model: Path) -> tuple:
    """Run every MD condition with the model; returns (sampled snapshots, per-run statistics)."""
    from .md import run_ase, run_lammps

    md = cfg.md
    frames: List[Atoms] = []
    runs = []
    for j, cond in enumerate(md_conditions(md)):
        atoms = cond["atoms"].repeat([int(n) for n in md.supercell])
        atoms.set_cell(atoms.cell * (1.0 + cond["strain"]), scale_atoms=True)
        seed = cfg.seed * 1_000_003 + 1000 * k + j
        common = dict(temperature=cond["temperature"], pressure=cond["pressure"], steps=md.steps,
                      timestep_fs=md.timestep_fs, sample_every=md.sample_every, halt=cfg.halt, seed=seed)
        if md.engine == "ase":
            traj = run_ase(str(model), atoms, **common)
        else:
            traj = run_lammps(str(model), atoms, workdir=it / "md" / f"run_{j:03d}",
                              mpi_ranks=md.mpi_ranks, **common)
        for s, snap in enumerate(traj.frames):
            snap.info.update(config_type="active_learning", al_iteration=k, al_run=j,
                             al_step=(s + 1) * md.sample_every)
        frames.extend(traj.frames)
        sig = traj.max_sigma
        runs.append({key: cond[key] for key in ("structure", "temperature", "pressure", "strain")}
                    | {"steps_run": traj.steps_run, "halted": traj.halted, "snapshots": len(sig),
                       "above_threshold": int(sum(x > cfg.threshold for x in sig)),
                       "max_sigma_f": max(sig, default=0.0)})
    return frames, runs


def atom_features(model, frames: Sequence[Atoms]) -> List[np.ndarray]:
    """Per-atom descriptors (n, M' F) of each frame: every member's invariant features side by side."""
    import torch

    from .neighbors import neighbor_list

    index = {el: k for k, el in enumerate(model.elements)}
    out = []
    with torch.no_grad():
        for a in frames:
            i, j, vec = neighbor_list(a.positions, a.cell.array, a.pbc, model.cutoff)
            x = model.descriptors(torch.tensor([index[s] for s in a.get_chemical_symbols()]),
                                  torch.from_numpy(i), torch.from_numpy(j),
                                  torch.from_numpy(vec).unsqueeze(0), len(a))
            out.append(x.permute(1, 0, 2).reshape(len(a), -1).numpy())
    return out


def select_diverse(feats: List[np.ndarray], sigma: np.ndarray, known: np.ndarray, n: int) -> List[int]:
    """Most uncertain candidate first, then farthest-point sampling: next is the candidate whose most
    novel atom lies farthest (descriptor distance) from every atom of the training set and the batch."""
    from scipy.spatial.distance import cdist

    dmin = [cdist(f, known).min(1) if len(known) else np.full(len(f), np.inf) for f in feats]
    chosen: List[int] = []
    while len(chosen) < min(n, len(feats)):
        if chosen:
            novelty = np.array([d.max() for d in dmin])
            novelty[chosen] = -np.inf
            pick = int(np.argmax(novelty))
        else:
            pick = int(np.argmax(sigma))
        chosen.append(pick)
        dmin = [np.minimum(d, cdist(f, feats[pick]).min(1)) for d, f in zip(dmin, feats)]
    return chosen


MAX_KNOWN_ATOMS = 20000


def _select(cfg: LearnConfig, k: int, run: Path, frames: List[Atoms], labels: List[Atoms], n: int) -> List[Atoms]:
    rng = np.random.default_rng(cfg.seed * 7919 + k)
    if cfg.selection == "random":
        return [frames[i] for i in sorted(rng.choice(len(frames), size=min(n, len(frames)), replace=False))]
    from .train import load_run

    candidates = [a for a in frames if a.arrays["sigma_f"].max() > cfg.threshold]
    if not candidates:
        return []
    model = load_run(run)[0]
    known = np.concatenate(atom_features(model, labels))
    if len(known) > MAX_KNOWN_ATOMS:
        known = known[np.sort(rng.choice(len(known), MAX_KNOWN_ATOMS, replace=False))]
    sigma = np.array([a.arrays["sigma_f"].max() for a in candidates])
    chosen = select_diverse(atom_features(model, candidates), sigma, known, n)
    return [candidates[i] for i in chosen]


# ---------------------------------------------------------------------------------------- loop
def learn(cfg: LearnConfig, progress: bool = True) -> Path:
    """Run (or continue) the loop; returns the output directory."""
    import torch

    from .evaluate import evaluate

    torch.set_num_threads(cfg.training.threads or os.cpu_count() or 1)
    out = _prepare_output(cfg)
    labeller = Labeller(cfg.reference)
    labels = _labelled_set(cfg.initial, out / "initial.extxyz", cfg.relabel, labeller, "initial")
    _labelled_set([cfg.test], out / "test.extxyz", cfg.relabel, labeller, "test")
    records: List[Dict[str, Any]] = []
    for k in range(cfg.max_iterations):
        it = out / f"iter_{k:03d}"
        if (it / "state.json").is_file():
            record = json.loads((it / "state.json").read_text())
            records.append(record)
            if record["stop"]:
                break
            labels = labels + read_frames_file(it / "labels.extxyz")
            continue
        t0 = time.time()
        previous = out / f"iter_{k - 1:03d}" / "train" if k > 0 else None
        model = _train_iteration(cfg, it, labels, previous)
        t_train = time.time() - t0
        test = evaluate(str(model), str(out / "test.extxyz"))["all"]

        t1 = time.time()
        if (it / "md.json").is_file():  # MD and selection of a killed iteration are reused as they were
            md = json.loads((it / "md.json").read_text())
            selected = read_frames_file(it / "selected.extxyz")
        else:
            frames, runs = _explore(cfg, it, k, model)
            sig = [a.arrays["sigma_f"] for a in frames]
            completed = all(r["steps_run"] == cfg.md.steps and not r["halted"] for r in runs)
            above = sum(r["above_threshold"] for r in runs)
            stop = ("converged" if completed and above == 0 else
                    "label_budget" if len(labels) >= cfg.label_budget else
                    "max_iterations" if k + 1 >= cfg.max_iterations else None)
            selected = [] if stop else _select(cfg, k, it / "train", frames, labels,
                                               min(cfg.labels_per_iteration, cfg.label_budget - len(labels)))
            md = {"stop": stop, "runs": runs, "snapshots": len(frames), "above_threshold": above,
                  "max_sigma_f": float(max((s.max() for s in sig), default=0.0)),
                  "mean_sigma_f": float(np.concatenate(sig).mean()) if sig else 0.0,
                  "seconds": round(time.time() - t1, 2)}
            write_frames_atomic(it / "selected.extxyz", selected)
            write_json_atomic(it / "md.json", md)
        t2 = time.time()
        new = labeller.label_into(selected, it / "labels.extxyz")
        record = {"iteration": k, "labels_used": len(labels), "new_labels": len(new),
                  "test": {key: test[key] for key in ("energy_mae_meV_atom", "energy_rmse_meV_atom",
                                                      "force_mae", "force_rmse", "force_sigma_spearman",
                                                      "interval_observed_coverage")},
                  "threshold": cfg.threshold, "halt_threshold": cfg.halt,
                  "max_sigma_f": md["max_sigma_f"], "mean_sigma_f": md["mean_sigma_f"],
                  "selected_max_sigma_f": [float(a.arrays["sigma_f"].max()) for a in selected],
                  "md": md["runs"], "stop": md["stop"],
                  "seconds": {"train": round(t_train, 2), "md_and_selection": md["seconds"],
                              "label": round(time.time() - t2, 2), "total": round(time.time() - t0, 2)}}
        write_json_atomic(it / "state.json", record)
        records.append(record)
        write_learning_curve(out, records)
        if progress:
            print(f"iteration {k}: {len(labels)} labels, test force MAE {test['force_mae']:.4f} eV/A, "
                  f"MD max sigma_F {md['max_sigma_f']:.3f} (threshold {cfg.threshold}), "
                  f"+{len(new)} labels" + (f", stop: {md['stop']}" if md["stop"] else ""), flush=True)
        labels = labels + new
        if md["stop"]:
            break
    write_learning_curve(out, records)
    return out


CURVE_FIELDS = ["iteration", "labels_used", "new_labels", "test_force_mae", "test_force_rmse",
                "test_energy_mae_meV_atom", "max_sigma_f", "mean_sigma_f", "threshold", "stop", "wall_s"]


def write_learning_curve(out: Path, records: Sequence[Dict[str, Any]]) -> None:
    """learning_curve.csv (one row per iteration) and learning_curve.png."""
    rows = [[r["iteration"], r["labels_used"], r["new_labels"], r["test"]["force_mae"],
             r["test"]["force_rmse"], r["test"]["energy_mae_meV_atom"], r["max_sigma_f"],
             r["mean_sigma_f"], r["threshold"], r["stop"] or "", r["seconds"]["total"]] for r in records]
    tmp = out / "learning_curve.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        csv.writer(fh).writerows([CURVE_FIELDS] + rows)
    os.replace(tmp, out / "learning_curve.csv")
    if not rows:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot([r[1] for r in rows], [r[3] for r in rows], "o-")
    axes[0].set(xlabel="labelled structures", ylabel="test force MAE (eV/Å)", yscale="log",
                title="learning curve")
    axes[1].plot([r[0] for r in rows], [r[6] for r in rows], "o-", label="max σ_F in MD")
    axes[1].plot([r[0] for r in rows], [r[7] for r in rows], "s-", label="mean σ_F in MD")
    axes[1].axhline(records[-1]["threshold"], color="k", ls="--", lw=0.8, label="threshold")
    axes[1].set(xlabel="iteration", ylabel="σ_F (eV/Å)", yscale="log", title="MD uncertainty")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png.tmp.png", dpi=110)
    plt.close(fig)
    os.replace(out / "learning_curve.png.tmp.png", out / "learning_curve.png")


# ---------------------------------------------------------------------------------------- CLI
def add_learn_parser(subparsers) -> None:
    p = subparsers.add_parser("learn", help="active learning: MD with the model, label the frames it is "
                                            "least sure of with a reference calculator, retrain, repeat")
    p.add_argument("config", help="YAML config (see examples/configs/learn.yaml)")
    p.add_argument("-o", "--output", help="loop directory; rerunning into it continues a stopped loop")
    p.add_argument("--label-budget", type=int)
    p.add_argument("--max-iterations", type=int)
    p.add_argument("--engine", choices=ENGINES, help="MD engine (md.engine)")
    p.add_argument("--mpi-ranks", type=int, help="MPI ranks of each LAMMPS MD run (md.mpi_ranks)")
    p.add_argument("--threads", type=int, help="torch threads (training.threads)")
    p.add_argument("--quiet", action="store_true", help="no line per iteration")
    p.set_defaults(func=run_learn)


def run_learn(args: argparse.Namespace) -> None:
    cfg = load_learn_config(args.config, {"output": args.output, "label_budget": args.label_budget,
                                          "max_iterations": args.max_iterations, "md.engine": args.engine,
                                          "md.mpi_ranks": args.mpi_ranks, "training.threads": args.threads})
    out = learn(cfg, progress=not args.quiet)
    last = json.loads(sorted(out.glob("iter_*/state.json"))[-1].read_text())
    model = out / f"iter_{last['iteration']:03d}" / "train" / "model.pt"
    print(f"loop directory: {out}\nlast model: {model}\nstopped: {last['stop']}; "
          f"learning curve: {out / 'learning_curve.png'}")
