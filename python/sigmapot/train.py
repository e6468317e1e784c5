"""Training an ensemble on DFT frames: fit statistics, optimise all members at once, checkpoint, calibrate.

Run directory layout (all files written atomically, write-then-rename):
  config.yaml       the validated configuration
  checkpoint.pt     last finished epoch (model, EMA, optimiser, scheduler, stage, counters) for --resume
  best.pt           EMA weights at the best validation epoch of stage 1
  final.pt          calibrated final weights (best.pt, or stage 2's last EMA weights) + model config:
                    what `sigmapot export` reads
  model.pt          exported TorchScript file (float64)
  metrics.csv       one row per epoch
With `ensemble_runs` R > 1, checkpoint.pt, best.pt and metrics.csv are per run, in RUN/part0 .. part{R-1}.
"""
from __future__ import annotations

import collections
import copy
import csv
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml

from .config import ModelConfig, TrainConfig, load_train_config
from .data import (Batch, DataError, Frame, Graph, check_config_types, check_duplicates, collate, read_frames,
                   reorder_shear, summarize, to_graph)
from .model import SigmaModel, edge_forces


# ---------------------------------------------------------------------------------------- helpers
def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, fsync, then rename: a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"could not write '{path}' ({exc.strerror or exc}); the previous "
                                     "version of that file is intact: free disk space and run again "
                                     "with --resume") from exc
        raise
    os.replace(tmp, path)


def predict(model: SigmaModel, batch: Batch, create_graph: bool) -> Dict[str, torch.Tensor]:
    """Per-member frame energies (M, B), forces (M, N, 3) and stresses (M, B, 3, 3) of a batch."""
    M = model.ensemble_size
    vec = batch.vec.unsqueeze(0).expand(M, -1, -1).clone().requires_grad_(True)
    n = batch.species.shape[0]
    atom_e = model.atomic_energies(batch.species, batch.center, batch.neighbor, vec, n)
    frame_e = torch.zeros(M, batch.n_frames, dtype=atom_e.dtype).index_add(1, batch.frame_of_atom, atom_e)
    (grad,) = torch.autograd.grad(frame_e.sum(), vec, create_graph=create_graph)
    forces = edge_forces(grad, batch.center, batch.neighbor, n)
    edge_vir = -(batch.vec.unsqueeze(-1) * grad.unsqueeze(-2))                     # (M, E, 3, 3)
    virial = torch.zeros(M, batch.n_frames, 3, 3, dtype=atom_e.dtype).index_add(1, batch.frame_of_edge, edge_vir)
    stress = -virial / batch.volume.clamp(min=1e-12).view(1, -1, 1, 1)
    return {"energy": frame_e, "forces": forces, "stress": stress}


def member_losses(pred: Dict[str, torch.Tensor], batch: Batch, cfg: TrainConfig,
                  energy_weight: float, energy_loss: str = "mse") -> torch.Tensor:
    """(M,) weighted loss per member: MSE (or, with energy_loss "l1", mean absolute error) of energy per
    atom, MSE of force components and of virial per atom, each frame's terms scaled by its weight.

    The virial term is averaged over all frames of the batch, zero for frames without a stress, so that
    `stress_weight` weighs each stressed frame the same however few of them a batch holds.
    """
    w = batch.weight
    de = (pred["energy"] - batch.energy) / batch.natoms
    loss = energy_weight * (w * (de.abs() if energy_loss == "l1" else de.square())).mean(1)
    df2 = (pred["forces"] - batch.forces).square() * w[batch.frame_of_atom].view(1, -1, 1)
    loss = loss + cfg.force_weight * df2.mean((1, 2))
    if cfg.stress_weight > 0 and bool(batch.has_stress.any()):
        scale = (batch.volume / batch.natoms).view(1, -1, 1, 1)          # stress -> virial per atom
        ds2 = (((pred["stress"] - batch.stress) * scale).square() * w.view(1, -1, 1, 1))[:, batch.has_stress]
        loss = loss + cfg.stress_weight * ds2.sum((1, 2, 3)) / (9 * batch.n_frames)
    return loss


def make_optimizer(model: SigmaModel, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay on the readout network's weights only.

    The radial weights and channel mixes define the descriptor (the mixes start at the identity, which a
    decay towards zero would pull away from), so only the readout is decayed. The full recipe leaves it at
    0: at 0.005 it slowed the force fit (docs/experiments.md, "Readout 32×32"); a narrower readout
    is what stopped the late force overfitting.
    """
    readout = [p for name, p in model.named_parameters() if name.startswith("mlp.")]
    others = [p for name, p in model.named_parameters() if not name.startswith("mlp.")]
    return torch.optim.AdamW([{"params": readout, "weight_decay": weight_decay},
                              {"params": others, "weight_decay": 0.0}], lr=learning_rate)


def batches(graphs: Sequence[Graph], size: int, seed: Optional[int]) -> List[Batch]:
    order = np.arange(len(graphs))
    if seed is not None:
        np.random.default_rng(seed).shuffle(order)
    return [collate([graphs[k] for k in order[s:s + size]]) for s in range(0, len(order), size)]


@torch.no_grad()
def fit_statistics(model: SigmaModel, graphs: Sequence[Graph]) -> None:
    """Reference energies (least squares), energy scale (force RMS), neighbour count, feature statistics
    (over every atom of `graphs`)."""
    Z = model.num_elements
    counts = np.zeros((len(graphs), Z))
    for k, g in enumerate(graphs):
        counts[k] = np.bincount(g.species.numpy(), minlength=Z)
    energies = np.array([float(g.energy) for g in graphs])
    e0, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    model.reference_energy.copy_(torch.from_numpy(e0))
    forces = torch.cat([g.forces for g in graphs])
    model.energy_scale.fill_(float(forces.square().mean().sqrt().clamp(min=1e-3)))
    n_edges = sum(g.center.numel() for g in graphs)
    n_atoms = sum(g.natoms for g in graphs)
    model.avg_num_neighbors.fill_(max(n_edges / n_atoms, 1.0))
    mean, std = feature_statistics(model, graphs)
    model.feature_mean.copy_(mean)
    model.feature_std.copy_(std.clamp(min=1e-6))


@torch.no_grad()
def feature_statistics(model: SigmaModel, graphs: Sequence[Graph], chunk: int = 32) -> Tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """Mean and standard deviation (unbiased) of the raw descriptors over every atom of `graphs`, each
    (Md, 1, F).  Chunks of `chunk` frames are merged by the pairwise update of Chan et al., so memory is
    that of one chunk whatever the data size and the result does not depend on the order of the frames
    (to round-off).  Resets the model's feature statistics to the identity."""
    model.feature_mean.zero_()
    model.feature_std.fill_(1.0)
    count, mean, m2 = 0, torch.zeros_like(model.feature_mean), torch.zeros_like(model.feature_mean)
    for start in range(0, len(graphs), chunk):
        b = collate(list(graphs[start:start + chunk]))
        x = model.descriptors(b.species, b.center, b.neighbor, b.vec.unsqueeze(0), b.species.shape[0])
        n = x.shape[1]
        chunk_mean = x.mean(1, keepdim=True)
        delta = chunk_mean - mean
        m2 += (x - chunk_mean).square().sum(1, keepdim=True) + delta.square() * (count * n / (count + n))
        mean += delta * (n / (count + n))
        count += n
    return mean, (m2 / max(count - 1, 1)).sqrt()


@torch.no_grad()
def evaluate_graphs(model: SigmaModel, graphs: Sequence[Graph], batch_size: int = 8) -> Dict[str, float]:
    """Mean-model errors: energy MAE/RMSE (eV/atom), force MAE/RMSE (eV/A over components)."""
    de, df = [], []
    for batch in batches(graphs, batch_size, None):
        with torch.enable_grad():
            pred = predict(model, batch, create_graph=False)
        de.append(((pred["energy"].mean(0) - batch.energy) / batch.natoms).detach())
        df.append((pred["forces"].mean(0) - batch.forces).detach().flatten())
    de_t, df_t = torch.cat(de), torch.cat(df)
    return {"energy_mae": float(de_t.abs().mean()), "energy_rmse": float(de_t.square().mean().sqrt()),
            "force_mae": float(df_t.abs().mean()), "force_rmse": float(df_t.square().mean().sqrt())}


class EMA:
    """Exponential moving average of the parameters (used for validation, early stopping and export)."""

    def __init__(self, model: SigmaModel, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: SigmaModel) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)


# ---------------------------------------------------------------------------------------- training
def split_frames(cfg: TrainConfig) -> Tuple[List[Frame], List[Frame]]:
    frames: List[Frame] = []
    for path in cfg.train:
        frames.extend(read_frames(path))
    if cfg.max_frames is not None:
        frames = frames[: cfg.max_frames]
    if cfg.validation:
        val = read_frames(cfg.validation)
        check_duplicates(frames, val)
        return frames, val
    check_duplicates(frames)
    if len(frames) < 2:
        raise DataError("need at least 2 frames to carve out a validation set; give more data or a "
                        "'validation' file")
    val = set(validation_indices(frames, cfg.validation_fraction, cfg.validation_split, cfg.seed))
    return ([f for k, f in enumerate(frames) if k not in val], [f for k, f in enumerate(frames) if k in val])


def validation_indices(frames: Sequence[Frame], fraction: float, split: str, seed: int) -> List[int]:
    """Frames to hold out: a random `fraction` of all, or ("stratified") of each config_type, so that every
    type with 2 or more frames gives at least one (a random 10 % of Si's 214 mlearn frames may hold one
    or none of its 12 Surface frames); `_held_out_count` keeps one frame of each to train on."""
    rng = np.random.default_rng(seed)
    if split == "random":
        return rng.permutation(len(frames))[:_held_out_count(len(frames), fraction)].tolist()
    groups: Dict[str, List[int]] = {}
    for k, f in enumerate(frames):
        groups.setdefault(f.config_type, []).append(k)
    val: List[int] = []
    for name in sorted(groups):
        members = groups[name]
        val.extend(members[k] for k in rng.permutation(len(members))[:_held_out_count(len(members), fraction)])
    if not val:
        raise DataError("a stratified split needs a config_type with 2 or more frames; use "
                        "validation_split: random or give a 'validation' file")
    return val


def _held_out_count(n: int, fraction: float) -> int:
    """round(fraction * n), at least one frame and at most n - 1: one always stays to train on."""
    return min(n - 1, max(1, int(round(fraction * n))))


def select_stress(frames: Sequence[Frame], config_types: Optional[List[str]]) -> List[Frame]:
    """The frames with their stress kept only for the listed config_types (all when None)."""
    if config_types is None:
        return list(frames)
    check_config_types("stress_config_types", config_types, frames, with_stress=True)
    return [f if f.config_type in config_types else dataclasses.replace(f, stress=None) for f in frames]


def frame_weights(frames: Sequence[Frame], config_type_weights) -> List[float]:
    """Loss weight of each frame from its config_type ("balanced": the inverse of the type's frame count;
    a mapping: its value, 1 for types not named), rescaled to a mean of 1 over `frames`."""
    if config_type_weights is None:
        return [1.0] * len(frames)
    if config_type_weights == "balanced":
        counts = collections.Counter(f.config_type for f in frames)
        raw = [1.0 / counts[f.config_type] for f in frames]
    else:
        check_config_types("config_type_weights", config_type_weights, frames, with_stress=False)
        raw = [float(config_type_weights.get(f.config_type, 1.0)) for f in frames]
    mean = sum(raw) / len(raw)
    return [r / mean for r in raw]


def build_model(cfg: TrainConfig, train_frames: Sequence[Frame]) -> SigmaModel:
    model_cfg = dataclasses.replace(cfg.model)
    present = sorted({s for f in train_frames for s in f.symbols})
    if not model_cfg.elements:
        model_cfg.elements = present
    model_cfg.validate()
    return SigmaModel(model_cfg, seed=cfg.seed)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train (stage 1, then the optional stage 2), calibrate and export; returns the run directory.

    With `refit`, the run first trains and calibrates in RUN/holdout/ exactly as without it, then trains
    the same recipe again, from the same seed, on the training and validation frames together, and
    exports that model with the holdout model's calibration: the final model sees every frame, and the
    calibration still rests on frames its estimator (the holdout ensemble) did not see.
    """
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    run = Path(cfg.output)
    train_frames, val_frames = split_frames(cfg)
    if not cfg.refit:
        return _train_pass(cfg, run, train_frames, val_frames, resume, progress)
    holdout = run / "holdout"
    if not (resume and (holdout / "final.pt").is_file()):    # killed in the refit pass: keep the holdout run
        _train_pass(cfg, holdout, train_frames, val_frames, resume, progress)
        resume = False
    return _train_pass(cfg, run, train_frames + val_frames, [], resume and has_checkpoint(run, cfg.ensemble_runs),
                       progress, holdout=load_run(holdout)[1])


def _train_pass(cfg: TrainConfig, run: Path, train_frames: List[Frame], val_frames: List[Frame], resume: bool,
                progress: bool, holdout: Optional[Dict] = None) -> Path:
    """One model: trained on `train_frames` and calibrated on `val_frames`, or, for a refit without
    validation frames, given the metadata of the holdout run, whose calibration it takes.

    With `ensemble_runs` R > 1 the members are trained as R independent runs in RUN/part0.. (seeds seed,
    seed + 1, ..., so their own initial weights and batch order) and merged before calibration."""
    from .calibrate import apply_calibration, calibrate_model

    run.mkdir(parents=True, exist_ok=True)
    R = cfg.ensemble_runs
    if resume and not has_checkpoint(run, R):
        raise FileNotFoundError(f"--resume: no checkpoint at '{part_dir(run, 0, R) / 'checkpoint.pt'}'; "
                                "start without --resume")

    train_frames = select_stress(reorder_shear(train_frames, cfg.stress_shear_order), cfg.stress_config_types)
    summary = {"train": summarize(train_frames),
               "validation": summarize(val_frames) if holdout is None else holdout["training_data"]["validation"]}
    with open(run / "config.yaml", "w") as fh:
        yaml.safe_dump(dataclasses.asdict(cfg), fh, sort_keys=False)
    part_cfgs = [cfg] if R == 1 else [dataclasses.replace(
        cfg, seed=cfg.seed + k, model=dataclasses.replace(cfg.model, ensemble_size=cfg.model.ensemble_size // R),
        time_budget_min=None if cfg.time_budget_min is None else cfg.time_budget_min / R) for k in range(R)]
    models = [load_for_finetuning(cfg.init) if cfg.init else build_model(c, train_frames) for c in part_cfgs]
    elements, cutoff = models[0].elements, models[0].cutoff       # the same for every run
    train_symbols = {s for f in train_frames for s in f.symbols}
    unknown = sorted({s for f in val_frames for s in f.symbols} - set(elements))
    if unknown or not train_symbols <= set(elements):
        raise DataError(f"validation or training data has element(s) "
                        f"{sorted((train_symbols | set(unknown)) - set(elements))} that the model "
                        f"({elements}) lacks; add them to model.elements")
    weights = frame_weights(train_frames, cfg.config_type_weights)
    # neighbour lists once for all runs
    train_graphs = [dataclasses.replace(to_graph(f, elements, cutoff), weight=w)
                    for f, w in zip(train_frames, weights)]
    val_graphs = [to_graph(f, elements, cutoff) for f in val_frames]
    parts, epochs, elapsed = [], [], 0.0
    for k, (part_cfg, model) in enumerate(zip(part_cfgs, models)):
        directory = part_dir(run, k, R)
        directory.mkdir(exist_ok=True)
        final, loop = _fit_members(part_cfg, directory, model, train_graphs, val_graphs,
                                   resume and (directory / "checkpoint.pt").is_file(), progress,
                                   desc="train" if R == 1 else f"train {k + 1}/{R}")
        parts.append(final)
        epochs.append(loop.epoch)
        elapsed += loop.elapsed
    final = parts[0] if R == 1 else merge_members(parts)

    if holdout is None:
        calibrated = calibrate_model(final, val_frames, coverage=cfg.coverage)
    else:
        calibrated = dict(holdout["calibration"], source="holdout run (holdout/), trained without the "
                                                         "validation frames")
        apply_calibration(final, calibrated)
    training = {"epochs_run": epochs[0] if R == 1 else epochs, "wall_time_s": round(elapsed, 1),
                "seed": cfg.seed, "refit": holdout is not None,
                "config_type_weights": {f.config_type: round(w, 6) for f, w in zip(train_frames, weights)}}
    if R > 1:
        training["ensemble_runs"] = R
    if val_graphs:   # the exported ensemble's own errors (metrics.csv logs each run's members only)
        training["validation_errors"] = {k: round(v, 8) for k, v in evaluate_graphs(final, val_graphs).items()}
    _save_run(run, final, {"training_data": summary, "calibration": calibrated, "training": training})
    return run


def _save_run(run: Path, final: SigmaModel, meta: Dict) -> None:
    """A finished run's final.pt and exported model.pt."""
    save_atomic({"model_config": dataclasses.asdict(model_config_of(final)), "state": final.state_dict(),
                 "metadata": meta}, run / "final.pt")
    from .export import export_model
    export_model(final, run / "model.pt", metadata=meta)


def recalibrate(run_dir: str | Path, coverage: Optional[float] = None) -> Dict:
    """Fit a finished run's calibration again, with this version's method, on the frames it held out
    (the split is read back from its config.yaml); a refit run takes its holdout run's new calibration.
    Rewrites final.pt and model.pt and returns the calibration."""
    from .calibrate import apply_calibration, calibrate_model

    run = Path(run_dir)
    source = run / "holdout" if (run / "holdout" / "final.pt").is_file() else run
    model, meta = load_run(source)
    cfg = load_train_config(str(source / "config.yaml"), {})
    val_frames = split_frames(cfg)[1]
    if not val_frames:
        raise ValueError(f"'{source}' trained on every frame and has no holdout run to calibrate on")
    calibrated = calibrate_model(model, val_frames, coverage=coverage or cfg.coverage)
    _save_run(source, model, dict(meta, calibration=calibrated))
    if source != run:
        final, meta = load_run(run)
        calibrated = dict(calibrated, source=meta["calibration"].get("source", "holdout run (holdout/)"))
        apply_calibration(final, calibrated)
        _save_run(run, final, dict(meta, calibration=calibrated))
    return calibrated


def part_dir(run: Path, k: int, runs: int) -> Path:
    """Where part k of an ensemble trained as `runs` independent runs keeps its checkpoints and metrics."""
    return run if runs == 1 else run / f"part{k}"


def has_checkpoint(run: Path, runs: int) -> bool:
    """Whether a pass in `run` trained as `runs` ensemble runs has a checkpoint to resume from."""
    return any((part_dir(run, k, runs) / "checkpoint.pt").is_file() for k in range(runs))


def _fit_members(cfg: TrainConfig, run: Path, model: SigmaModel, train_graphs: List[Graph],
                 val_graphs: List[Graph], resume: bool, progress: bool, desc: str) -> Tuple[SigmaModel, "_Loop"]:
    """Train `model`, one ensemble of cfg.model.ensemble_size members (stage 1, optional stage 2), in `run`;
    returns its final, uncalibrated weights and the finished loop (epochs, elapsed time)."""
    torch.manual_seed(cfg.seed)
    ckpt_path = run / "checkpoint.pt"
    if not cfg.init:
        fit_statistics(model, train_graphs)

    ema = EMA(model, cfg.ema_decay)
    state = torch.load(ckpt_path, weights_only=True) if resume else None
    metrics_path = run / "metrics.csv"
    if state is None or not metrics_path.is_file():
        with open(metrics_path, "w", newline="") as fh:
            csv.writer(fh).writerow(METRICS_FIELDS)
    else:
        _truncate_metrics(metrics_path, state["epoch"])
    loop = _Loop(cfg, run, model, ema, train_graphs, val_graphs, progress, desc)
    if state is None or state.get("stage", 1) == 1:
        loop.stage(1, start=0, epochs=cfg.epochs, learning_rate=cfg.learning_rate,
                   energy_weight=cfg.energy_weight, energy_loss="mse", state=state)
        state = None
    if cfg.stage2_epochs:
        loop.stage(2, start=loop.epoch, epochs=cfg.stage2_epochs, learning_rate=cfg.stage2_lr(),
                   energy_weight=cfg.stage2_weight(), energy_loss=cfg.stage2_energy_loss, state=state)
    final = copy.deepcopy(ema.model)                  # stage 2 ends on its last (annealed) EMA weights
    if not cfg.stage2_epochs:
        final.load_state_dict(torch.load(run / "best.pt", weights_only=True))
    loop.close()
    return final, loop


# a refit pass trains on every frame: its metrics.csv logs no validation errors
NO_VALIDATION = {"energy_mae": math.nan, "energy_rmse": math.nan, "force_mae": math.nan, "force_rmse": math.nan}
METRICS_FIELDS = ["epoch", "lr", "train_loss", "val_energy_mae_meV_atom", "val_force_mae", "val_force_rmse",
                  "val_score", "elapsed_s", "stage"]


class _Loop:
    """The epoch loop shared by both stages: optimise, average (EMA), validate, checkpoint, log.

    Stage 1 trains from the fitted statistics and keeps the EMA weights of the best validation score in
    best.pt.  Stage 2 (optional) restarts from those weights with a fresh optimiser, a lower learning rate
    and a larger energy weight, and ends on its last EMA weights: validation forces drift up late in
    stage 1 while energies still improve, and a force-dominated score would stop stage 2 at its start.
    """

    def __init__(self, cfg: TrainConfig, run: Path, model: SigmaModel, ema: EMA, train_graphs: List[Graph],
                 val_graphs: List[Graph], progress: bool, desc: str = "train"):
        from tqdm import tqdm

        self.cfg, self.run, self.model, self.ema = cfg, run, model, ema
        self.train_graphs, self.val_graphs = train_graphs, val_graphs
        self.epoch, self.elapsed = 0, 0.0
        self.total_epochs = cfg.epochs + cfg.stage2_epochs
        # With a time budget the bar runs on time, so its end is the budget, not an epoch-count ETA.
        self.budget = None if cfg.time_budget_min is None else 60.0 * cfg.time_budget_min
        if self.budget is None:
            self.bar = tqdm(total=self.total_epochs, disable=not progress, desc=desc, unit="epoch")
        else:
            # tqdm puts ", " before a postfix: the status goes in the description field instead
            self.bar = tqdm(total=self.budget, disable=not progress,
                            bar_format=desc + ": {percentage:3.0f}%|{bar}| {desc}")

    def close(self) -> None:
        self.bar.close()

    def stage(self, number: int, start: int, epochs: int, learning_rate: float, energy_weight: float,
              energy_loss: str, state: Optional[Dict]) -> None:
        cfg, model, ema = self.cfg, self.model, self.ema
        if number == 2 and state is None:                     # entering stage 2: from the best weights
            ema.model.load_state_dict(torch.load(self.run / "best.pt", weights_only=True))
            model.load_state_dict(ema.model.state_dict())
        optimizer = make_optimizer(model, learning_rate, cfg.weight_decay)
        plateau = cfg.lr_schedule == "plateau" and number == 1    # stage 2 is always a cosine
        if plateau:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                                   patience=max(2, cfg.patience // 5))
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs,
                                                                   eta_min=cfg.min_learning_rate)
        best, since_best = math.inf, 0
        if state is not None:
            model.load_state_dict(state["model"])
            ema.model.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, best, since_best = state.get("stage_start", 0), state["best"], state["since_best"]
            self.epoch, self.elapsed = state["epoch"], state["elapsed"]
        elif number == 2:                 # so that a kill before stage 2's first epoch resumes here
            self._checkpoint(optimizer, scheduler, number, start, best, since_best)
        self._show_progress()
        budget = math.inf if self.budget is None else self.budget
        t0 = time.time() - self.elapsed
        for epoch in range(self.epoch, start + epochs):
            loss = self._train_epoch(optimizer, energy_weight, epoch, energy_loss)
            val = evaluate_graphs(ema.model, self.val_graphs) if self.val_graphs else NO_VALIDATION
            score = energy_weight * val["energy_rmse"] ** 2 + cfg.force_weight * val["force_rmse"] ** 2
            lr = optimizer.param_groups[0]["lr"]
            if plateau:
                scheduler.step(score)
            else:
                scheduler.step()
            if score < best or not self.val_graphs:      # a refit has no validation: keep the last
                best, since_best = score, 0
                if number == 1:
                    save_atomic(ema.model.state_dict(), self.run / "best.pt")
            else:
                since_best += 1
            self.epoch, self.elapsed = epoch + 1, time.time() - t0
            with open(self.run / "metrics.csv", "a", newline="") as fh:
                csv.writer(fh).writerow([self.epoch, lr, loss, 1000 * val["energy_mae"], val["force_mae"],
                                         val["force_rmse"], score, round(self.elapsed, 2), number])
            self._checkpoint(optimizer, scheduler, number, start, best, since_best)
            self._show_progress(f"epoch {self.epoch}/{self.total_epochs}, stage={number}, loss={loss:.3g}, "
                                f"E_meV={1000 * val['energy_mae']:.2f}, F={val['force_mae']:.4f}, lr={lr:.1e}")
            lr_spent = plateau and optimizer.param_groups[0]["lr"] < cfg.min_learning_rate
            if number == 1 and (since_best >= cfg.patience or lr_spent):
                break
            # stage 1 leaves stage 2 its share of the budget, at the mean epoch time so far
            reserve = cfg.stage2_epochs * self.elapsed / self.epoch if number == 1 else 0.0
            if self.elapsed + reserve > budget:
                break

    def _show_progress(self, status: str = "") -> None:
        if self.budget is None:
            self.bar.n = self.epoch
            self.bar.set_postfix_str(status)
        else:
            self.bar.n = min(self.elapsed, self.budget)
            fmt = self.bar.format_interval
            spent = f"{fmt(self.elapsed)} of {fmt(self.budget)} budget"
            self.bar.set_description_str(f"{spent}, {status}" if status else spent)

    def _checkpoint(self, optimizer, scheduler, number: int, start: int, best: float, since_best: int) -> None:
        save_atomic({"model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "stage": number, "stage_start": start, "epoch": self.epoch, "best": best,
                     "since_best": since_best, "elapsed": self.elapsed}, self.run / "checkpoint.pt")

    def _train_epoch(self, optimizer: torch.optim.Optimizer, energy_weight: float, epoch: int,
                     energy_loss: str) -> float:
        """One pass over the shuffled training frames; returns the mean loss per member."""
        model = self.model
        model.train()
        total, n_batches = 0.0, 0
        for batch in batches(self.train_graphs, self.cfg.batch_size, seed=self.cfg.seed * 100003 + epoch):
            optimizer.zero_grad(set_to_none=True)
            loss = member_losses(predict(model, batch, create_graph=True), batch, self.cfg,
                                 energy_weight, energy_loss).sum()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch}; lower "
                                         "learning_rate or check the data for outliers")
            loss.backward()
            optimizer.step()
            self.ema.update(model)
            total += float(loss.detach()) / model.ensemble_size
            n_batches += 1
        return total / n_batches


def _truncate_metrics(path: Path, epochs: int) -> None:
    """On resume drop rows of epochs that ran after the last checkpoint (killed mid-epoch)."""
    with open(path) as fh:
        rows = list(csv.reader(fh))
    keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= epochs]
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(keep)


def model_config_of(model: SigmaModel) -> ModelConfig:
    return ModelConfig(elements=list(model.elements), cutoff=model.cutoff, num_radial=model.num_radial,
                       num_channels=model.num_channels,
                       hidden=[layer.weight.shape[-1] for layer in model.mlp][:-1],
                       ensemble_size=model.ensemble_size, envelope_p=model.envelope_p,
                       shared_descriptor=model.shared_descriptor)


def merge_members(models: Sequence[SigmaModel]) -> SigmaModel:
    """One ensemble whose members are those of `models` in order (independent runs on the same training
    frames): the member-indexed parameters and feature statistics are joined, the data statistics
    (reference energies, energy scale, neighbour count) must agree."""
    config = model_config_of(models[0])
    config.ensemble_size = sum(m.ensemble_size for m in models)
    merged = SigmaModel(config)
    member_keys = {name for name, _ in merged.named_parameters()} | {"feature_mean", "feature_std"}
    states = [m.state_dict() for m in models]
    joined = {}
    for key, value in states[0].items():
        if key in member_keys:     # member axis: 1 for the (3, M, K, K) channel mixes, else 0
            joined[key] = torch.cat([s[key] for s in states], dim=1 if key == "channel_mix" else 0)
        elif all(torch.equal(s[key], value) for s in states):
            joined[key] = value
        else:
            raise ValueError(f"cannot merge ensembles whose '{key}' differ: train them on the same frames")
    merged.load_state_dict(joined)
    return merged


def load_run(run_dir: str | Path) -> Tuple[SigmaModel, Dict]:
    """The calibrated model of a finished run (final.pt) and its metadata."""
    path = Path(run_dir) / "final.pt"
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' not found: is '{run_dir}' a finished 'sigmapot train' run?")
    state = torch.load(path, weights_only=True)
    model = SigmaModel(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["state"])
    return model, state["metadata"]


def load_for_finetuning(source: str | Path) -> SigmaModel:
    """Start weights from a run directory, a checkpoint/final file, or an exported model file."""
    source = Path(source)
    if source.is_dir():
        return load_run(source)[0]
    if not source.is_file():
        raise FileNotFoundError(f"--init '{source}' is neither a run directory nor a file")
    from .export import ModelFileError, load_exported, read_metadata
    try:
        module = load_exported(source)
    except ModelFileError:
        state = torch.load(source, weights_only=True)
        if "model_config" not in state:
            raise ValueError(f"--init '{source}': not a run's final.pt nor an exported model") from None
        model = SigmaModel(ModelConfig(**state["model_config"]))
        model.load_state_dict(state["state"])
        return model
    meta = read_metadata(module)
    hp = meta["hyperparameters"]
    model = SigmaModel(ModelConfig(elements=meta["elements"], cutoff=meta["cutoff"],
                                   ensemble_size=meta["ensemble_size"], num_radial=hp["num_radial"],
                                   num_channels=hp["num_channels"], envelope_p=hp["envelope_p"],
                                   hidden=hp["hidden"],
                                   shared_descriptor=hp.get("shared_descriptor", False)))
    # a TorchScript module's state_dict also lists the constant (non-persistent) buffers
    constants = model._non_persistent_buffers_set
    model.load_state_dict({k: v.double() if v.is_floating_point() else v
                           for k, v in module.state_dict().items() if k not in constants})
    return model
