"""Typed configuration, validated once at the edge (YAML file or command line); the rest trusts it."""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message says how to fix it."""


@dataclass
class ModelConfig:
    elements: List[str] = field(default_factory=list)
    cutoff: float = 5.0
    num_radial: int = 8
    num_channels: int = 16
    hidden: List[int] = field(default_factory=lambda: [32, 32])
    ensemble_size: int = 4
    envelope_p: int = 6
    shared_descriptor: bool = False

    def validate(self) -> None:
        from ase.data import atomic_numbers

        if not self.elements:
            raise ConfigError("model.elements is empty: name at least one chemical symbol")
        unknown = [e for e in self.elements if e not in atomic_numbers]
        if unknown:
            raise ConfigError(f"model.elements: {unknown} are not chemical symbols")
        if len(set(self.elements)) != len(self.elements):
            raise ConfigError(f"model.elements has duplicates: {self.elements}")
        _positive("model.cutoff", self.cutoff)
        for name in ("num_radial", "num_channels", "envelope_p"):
            _positive(f"model.{name}", getattr(self, name))
        if self.ensemble_size < 2:
            raise ConfigError("model.ensemble_size must be >= 2 (the spread of the members is the uncertainty)")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ConfigError(f"model.hidden must be a non-empty list of positive widths, got {self.hidden}")


@dataclass
class TrainConfig:
    train: List[str] = field(default_factory=list)
    validation: Optional[str] = None
    validation_fraction: float = 0.1
    # "random", or "stratified": the fraction taken from each config_type, at least one frame of every
    # type with 2 or more frames, so rare types are seen by selection and calibration too
    validation_split: str = "random"
    output: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 200
    time_budget_min: Optional[float] = None
    batch_size: int = 4
    learning_rate: float = 5e-3
    min_learning_rate: float = 1e-5
    lr_schedule: str = "plateau"  # "plateau" (halve when validation stalls) or "cosine" (over `epochs`)
    weight_decay: float = 0.0     # AdamW decay of the readout weights (train.make_optimizer)
    energy_weight: float = 1.0
    force_weight: float = 10.0
    stress_weight: float = 0.0
    # Only frames of these config_types enter the stress loss (None: every frame with a stress), e.g.
    # to leave out a group whose stress was written in another convention (`sigmapot evaluate` checks).
    stress_config_types: Optional[List[str]] = None
    # Read the labelled shear stresses of these config_types in another order, e.g. {AIMD-NVT: xz yz xy}
    # (yz and xz exchanged): the order `sigmapot evaluate` names for a flagged group (data.reorder_shear).
    stress_shear_order: Dict[str, str] = field(default_factory=dict)
    # Weight of each frame in the loss by its config_type: "balanced" (every config_type present carries
    # the same total weight, so a rare group such as a dozen surface slabs is not drowned by hundreds of
    # bulk frames) or a mapping {config_type: weight} (types not named: 1).  Rescaled to a mean of 1 over
    # the training frames, so energy_weight / force_weight / stress_weight keep their meaning.
    config_type_weights: Optional[Union[str, Dict[str, float]]] = None
    # Stage 2 (off when 0): this many more epochs from stage 1's best weights, with a fresh optimiser, a
    # cosine learning rate from stage2_learning_rate (default learning_rate / 5) and the energy weight
    # raised to stage2_energy_weight (default 10 x energy_weight); the run ends on its last EMA weights.
    stage2_epochs: int = 0
    stage2_energy_weight: Optional[float] = None
    stage2_learning_rate: Optional[float] = None
    # "mse" or "l1": the stage-2 energy term as a squared or an absolute error of the energy per atom
    # (l1 matches the MAE the benchmark reports; measured in docs/experiments.md).  The
    # logged val_score keeps its squared form, stage2_energy_weight x RMSE_E^2 + force term.
    stage2_energy_loss: str = "mse"
    # After the run, train the same recipe again on the training + validation frames and export that model
    # with the first run's calibration (train.train; the first run is kept in RUN/holdout/).  Each of the
    # two passes gets time_budget_min.
    refit: bool = False
    # Train the ensemble as this many independent runs of ensemble_size / ensemble_runs members each (seeds
    # seed, seed + 1, ...: their own initial weights and batch order; same frames and validation split),
    # merged into one model before calibration.  Members of one run share every batch, members of
    # different runs do not.  Each run gets time_budget_min / ensemble_runs.  Off (1) in the full recipe:
    # mixed on validation (docs/experiments.md).
    ensemble_runs: int = 1
    patience: int = 50
    ema_decay: float = 0.99
    seed: int = 0
    threads: Optional[int] = None
    coverage: float = 0.9
    init: Optional[str] = None
    max_frames: Optional[int] = None

    def stage2_weight(self) -> float:
        return 10.0 * self.energy_weight if self.stage2_energy_weight is None else self.stage2_energy_weight

    def stage2_lr(self) -> float:
        return self.learning_rate / 5 if self.stage2_learning_rate is None else self.stage2_learning_rate

    def validate(self) -> None:
        if not self.train:
            raise ConfigError("'train' is empty: give at least one data file (extxyz or anything ASE reads)")
        for path in self.train + ([self.validation] if self.validation else []):
            if not Path(path).is_file():
                raise ConfigError(f"data file '{path}' does not exist (paths are relative to the "
                                  "directory you run sigmapot in)")
        if not 0.0 < self.validation_fraction < 1.0 and self.validation is None:
            raise ConfigError("validation_fraction must lie in (0, 1) when no validation file is given")
        for name in ("epochs", "batch_size", "patience"):
            _positive(name, getattr(self, name))
        for name in ("learning_rate", "min_learning_rate"):
            _positive(name, getattr(self, name))
        if not isinstance(self.stage2_epochs, int) or self.stage2_epochs < 0:
            raise ConfigError(f"stage2_epochs must be a whole number >= 0 (0: no stage 2), "
                              f"got {self.stage2_epochs}")
        if self.stage2_learning_rate is not None:
            _positive("stage2_learning_rate", self.stage2_learning_rate)
        if self.stage2_energy_weight is not None and self.stage2_energy_weight < 0:
            raise ConfigError(f"stage2_energy_weight must be >= 0, got {self.stage2_energy_weight}")
        for name in ("energy_weight", "force_weight", "stress_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.validation_split not in ("random", "stratified"):
            raise ConfigError(f"validation_split must be 'random' or 'stratified', got '{self.validation_split}'")
        if self.stage2_energy_loss not in ("mse", "l1"):
            raise ConfigError(f"stage2_energy_loss must be 'mse' or 'l1', got '{self.stage2_energy_loss}'")
        if self.lr_schedule not in ("plateau", "cosine"):
            raise ConfigError(f"lr_schedule must be 'plateau' or 'cosine', got '{self.lr_schedule}'")
        if self.refit and self.lr_schedule != "cosine":
            raise ConfigError("refit needs lr_schedule: cosine (the refit pass has no validation frames, and "
                              "the plateau schedule follows the validation score)")
        if self.stress_config_types is not None and not isinstance(self.stress_config_types, list):
            raise ConfigError("stress_config_types must be a list of config_type names, e.g. [Elastic]")
        from .data import shear_orders

        orders = sorted(shear_orders())
        if not isinstance(self.stress_shear_order, dict) or any(
                v not in orders for v in self.stress_shear_order.values()):
            raise ConfigError(f"stress_shear_order must map config_type names to one of {orders} (where the "
                              f"labelled columns hold yz, xz, xy), e.g. {{AIMD-NVT: xz yz xy}}; got "
                              f"{self.stress_shear_order!r}")
        cw = self.config_type_weights
        if cw is not None and cw != "balanced" and not (isinstance(cw, dict) and all(
                isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in cw.values())):
            raise ConfigError(f"config_type_weights must be 'balanced' or map config_type names to positive "
                              f"weights, e.g. {{Surface: 3.0}}; got {cw!r}")
        if not isinstance(self.ensemble_runs, int) or self.ensemble_runs < 1 \
                or self.model.ensemble_size % self.ensemble_runs \
                or self.model.ensemble_size // self.ensemble_runs < 2:
            raise ConfigError(f"ensemble_runs must be a whole number >= 1 that divides model.ensemble_size "
                              f"({self.model.ensemble_size}) into runs of 2 or more members, got "
                              f"{self.ensemble_runs!r}")
        if self.ensemble_runs > 1 and (self.model.shared_descriptor or self.init):
            raise ConfigError("ensemble_runs > 1 trains independent deep ensembles from scratch: it cannot "
                              "be combined with model.shared_descriptor or init (--init)")
        if not 0.0 < self.coverage < 1.0:
            raise ConfigError(f"coverage must lie in (0, 1), got {self.coverage}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.model.elements:
            self.model.validate()


def _positive(name: str, value: Any) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def _build(cls, data: Dict[str, Any], where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, list(names), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {sorted(names)}"
            raise ConfigError(f"unknown key '{key}' in {where}{hint}")
        if key == "model":
            if not isinstance(value, dict):
                raise ConfigError(f"'model' in {where} must be a mapping")
            value = _build(ModelConfig, value, f"{where}: model")
        elif key == "train" and isinstance(value, str):
            value = [value]
        kwargs[key] = value
    return cls(**kwargs)


def read_yaml_mapping(path: str) -> Dict[str, Any]:
    """A YAML file of keys to values, read with the safe loader; clear errors otherwise."""
    if not Path(path).is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        with open(path) as fh:
            loaded = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not plain YAML (tags that construct Python "
                          f"objects are refused): {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
    return loaded


def load_train_config(path: Optional[str], overrides: Dict[str, Any]) -> TrainConfig:
    """Read a YAML config (safe loader), apply command-line overrides (dotted keys for the model)."""
    data = read_yaml_mapping(path) if path is not None else {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key.startswith("model."):
            data.setdefault("model", {})[key[len("model."):]] = value
        else:
            data[key] = value
    config = _build(TrainConfig, data, path or "command line")
    config.validate()
    return config
