"""Export a trained model to one self-describing TorchScript file, and load such files safely.

The only place that turns a `SigmaModel` into an archive: a `torch.export`/AOTInductor path can sit
beside `export_model` later.  Loading never unpickles arbitrary objects: `torch.jit.load` reads a
TorchScript archive, and we check its `model_kind`/`format_version` before trusting it.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any, Dict

import torch

from . import __version__
from .model import FORMAT_VERSION, MIN_FORMAT_VERSION, SigmaModel
from .ops import load_ops, missing_ops_message

METADATA_FILE = "sigmapot.json"


class ModelFileError(ValueError):
    """The file is not a usable sigmapot model; the message says why and what to do."""


def export_model(model: SigmaModel, path: str | Path, dtype: torch.dtype = torch.float64,
                 metadata: Dict[str, Any] | None = None) -> Path:
    """Script `model` (a copy, cast to `dtype`) and save it with its metadata; returns the path."""
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
    # Frozen parameters: forces need gradients w.r.t. the edge vectors only, and parameters that
    # require grad make autograd record and keep every weight product (mean-force calls
    # 5-11 % slower in alternating runs, docs/experiments.md).
    exported = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
    exported.dtype_name = "float64" if dtype == torch.float64 else "float32"
    exported.use_ops = load_ops()
    if not exported.use_ops:
        warnings.warn(missing_ops_message() + "; exporting with the slower PyTorch path")
    meta = {
        "format_version": FORMAT_VERSION,
        "model_kind": "sigmapot",
        "package_version": __version__,
        "torch_version": torch.__version__,
        "elements": exported.elements,
        "cutoff": exported.cutoff,
        "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "virial": "eV"},
        "ensemble_size": exported.ensemble_size,
        "dtype": exported.dtype_name,
        "compiled_operators": exported.use_ops,
        "outputs": ["energy", "forces", "virial", "centroid_virial", "total_virial", "member_energy",
                    "member_forces", "energy_std", "force_std", "total_energy_std", "force_interval"],
        "hyperparameters": {"num_radial": exported.num_radial, "num_channels": exported.num_channels,
                            "envelope_p": exported.envelope_p,
                            "shared_descriptor": exported.shared_descriptor,
                            "hidden": [layer.weight.shape[-1] for layer in exported.mlp][:-1]},
    }
    meta.update(metadata or {})
    exported.metadata_json = json.dumps(meta, sort_keys=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # jit is deprecated for torch.export
        scripted = torch.jit.script(exported)
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: exported.metadata_json})
    tmp.replace(path)
    return path


def load_exported(path: str | Path, device: str = "cpu") -> torch.jit.ScriptModule:
    """Load an exported model, checking that it is one and that this version can run it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file '{path}' does not exist; export one with "
                             "'sigmapot export RUN_DIR -o model.pt'")
    load_ops()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError/ValueError subclasses for broken archives
        if "sigmapot::" in str(exc):
            raise ModelFileError(f"'{path}' calls {missing_ops_message()}") from None
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelFileError(f"'{path}' is not a TorchScript archive (truncated or not exported by "
                             f"'sigmapot export'): {reason}") from None
    if getattr(module, "model_kind", None) != "sigmapot":
        raise ModelFileError(f"'{path}' is a TorchScript file but not a sigmapot model; export one "
                             "with 'sigmapot export'")
    version = int(module.format_version)
    if version > FORMAT_VERSION:
        raise ModelFileError(f"'{path}' has format version {version}, newer than this sigmapot "
                             f"({__version__}, format {FORMAT_VERSION}) understands; upgrade sigmapot")
    if version < MIN_FORMAT_VERSION:
        raise ModelFileError(f"'{path}' has format version {version}, older than this sigmapot reads "
                             f"({MIN_FORMAT_VERSION}..{FORMAT_VERSION}); export it again from its run: sigmapot export RUN_DIR -o "
                             "model.pt")
    return module


def read_metadata(module: torch.jit.ScriptModule) -> Dict[str, Any]:
    return json.loads(module.metadata_json)
