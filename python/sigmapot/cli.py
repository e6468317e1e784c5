"""Command line: sigmapot train | calibrate | export | info | evaluate | learn | plugin-path."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _train(args: argparse.Namespace) -> None:
    from .config import load_train_config
    from .train import train

    overrides = {"train": args.data, "validation": args.validation,
                 "validation_fraction": args.validation_fraction,
                 "validation_split": args.validation_split, "output": args.output,
                 "epochs": args.epochs, "time_budget_min": args.time_budget, "batch_size": args.batch_size,
                 "learning_rate": args.lr, "seed": args.seed, "threads": args.threads, "init": args.init,
                 "energy_weight": args.energy_weight, "force_weight": args.force_weight,
                 "stress_weight": args.stress_weight, "stage2_epochs": args.stage2_epochs,
                 "refit": args.refit,
                 "model.cutoff": args.cutoff, "model.ensemble_size": args.ensemble_size,
                 "model.num_channels": args.channels,
                 "model.elements": args.elements}
    config = load_train_config(args.config, overrides)
    run = train(config, resume=args.resume, progress=not args.quiet)
    print(f"run directory: {run}\nexported model: {run / 'model.pt'}")


def _calibrate(args: argparse.Namespace) -> None:
    from .train import recalibrate

    cal = recalibrate(args.run_dir, coverage=args.coverage)
    print(f"calibrated on {cal['n_frames']} held-out frames ({cal['n_atoms']} atoms): sigma_F = "
          f"sqrt(({cal['force_scale']:.4g} raw^{cal['force_exponent']:.3g})^2 + {cal['force_floor']:.3g}^2), "
          f"{cal['coverage']:.0%} interval = {cal['force_quantile']:.3g} sigma_F, sigma_E scale "
          f"{cal['energy_scale']:.3g}; rewrote {args.run_dir}/final.pt and model.pt")


def _export(args: argparse.Namespace) -> None:
    import torch

    from .export import export_model
    from .train import load_run

    model, meta = load_run(args.run_dir)
    path = export_model(model, args.output, dtype=getattr(torch, args.dtype), metadata=meta)
    print(f"wrote {path}")


def _info(args: argparse.Namespace) -> None:
    from .export import load_exported, read_metadata

    meta = read_metadata(load_exported(args.model))
    if args.json:
        print(json.dumps(meta, indent=2))
        return
    print(f"sigmapot model {args.model}")
    for key in ("format_version", "package_version", "elements", "cutoff", "ensemble_size", "dtype", "units",
                "compiled_operators"):
        print(f"  {key:16s} {meta.get(key)}")
    cal = meta.get("calibration")
    if cal:
        print(f"  calibration      sigma_F = sqrt(({cal['force_scale']:.4g} raw^{cal['force_exponent']:.3g})^2 + "
              f"{cal.get('force_floor', 0.0):.3g}^2), "
              f"interval {cal['coverage']:.0%} = {cal['force_quantile']:.3g} sigma_F, "
              f"sigma_E scale {cal['energy_scale']:.3g} ({cal['n_atoms']} atoms)")
    data = meta.get("training_data", {}).get("train")
    if data:
        print(f"  training data    {data['frames']} frames, {data['atoms']} atoms, sha256 {data['sha256'][:16]}")
    weights = meta.get("training", {}).get("config_type_weights", {})
    if len(set(weights.values())) > 1:
        print("  frame weights    " + ", ".join(f"{t} {w:.3g}" for t, w in sorted(weights.items())))
    runs = meta.get("training", {}).get("ensemble_runs", 1)
    if runs > 1:
        seed = meta["training"]["seed"]
        print(f"  ensemble runs    {runs} independent runs of {meta['ensemble_size'] // runs} members "
              f"(seeds {', '.join(str(seed + k) for k in range(runs))}), merged")
    if meta.get("training", {}).get("refit"):
        held = meta["training_data"]["validation"]["frames"]
        print(f"  refit            trained on the training + {held} validation frames; calibration from "
              f"the holdout run trained without them")


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate

    report = evaluate(args.model, args.data, plots=args.plots, json_path=args.json, dtype=args.dtype)
    a = report["all"]
    print(f"{a['frames']} frames, {a['atoms']} atoms")
    print(f"energy MAE {a['energy_mae_meV_atom']:.2f} meV/atom  RMSE {a['energy_rmse_meV_atom']:.2f}")
    print(f"force  MAE {a['force_mae']:.4f} eV/A     RMSE {a['force_rmse']:.4f}")
    if "stress_mae_GPa" in a:
        print(f"stress MAE {a['stress_mae_GPa']:.3f} GPa")

    def span(r: list) -> str:
        return f"(90 % range over resampled frames {r[0]:.1%}-{r[1]:.1%})"

    print(f"uncertainty: Spearman(sigma_F, |dF|) {a['force_sigma_spearman']:.3f}, "
          f"{a['interval_nominal_coverage']:.0%} interval covers {a['interval_observed_coverage']:.1%} "
          f"{span(a['interval_observed_coverage_range'])}, miscalibration area {a['miscalibration_area']:.3f}")
    rank = a["energy_sigma_spearman"]
    print(f"energy uncertainty (per frame): Spearman(sigma_E, |dE|) "
          f"{'n/a (under 3 frames)' if rank is None else f'{rank:.3f}'}, "
          f"{a['interval_nominal_coverage']:.0%} interval covers {a['energy_interval_observed_coverage']:.1%} "
          f"{span(a['energy_interval_observed_coverage_range'])}")
    for ct, m in report["per_config_type"].items():
        print(f"  {ct:12s} E {m['energy_mae_meV_atom']:7.2f} meV/atom  F {m['force_mae']:.4f} eV/A "
              f"({m['frames']} frames); intervals cover {m['force_interval_coverage']:.1%} of atoms, "
              f"{m['energy_interval_coverage']:.0%} of frames")
    print("largest energy errors (frame, config_type, dE and sigma_E in meV/atom):")
    for r in sorted(report["per_frame"], key=lambda r: -abs(r["energy_error_meV_atom"]))[:3]:
        print(f"  {r['index']:5d} {r['config_type']:12s} {r['energy_error_meV_atom']:+8.2f} "
              f"{r['energy_sigma_meV_atom']:8.2f}")
    for ct, c in report["stress_convention"].items():
        if c["suspect"]:
            print(f"warning: {ct}: the labelled shear stresses (ASE order yz xz xy) match the model "
                  f"{c['shear_mae_GPa'] / c['best_other_shear_mae_GPa']:.1f}x better read as "
                  f"({c['best_other_order']}): MAE {c['shear_mae_GPa']:.3f} -> "
                  f"{c['best_other_shear_mae_GPa']:.3f} GPa in {c['frames']} frames. Check the Voigt order "
                  f"of that data's conversion; to train on it, read it in that order (stress_shear_order: "
                  f"{{{ct}: {c['best_other_order']}}}) or leave it out of the stress loss (stress_config_types)")


def _plugin_path(args: argparse.Namespace) -> None:
    from .lammps import plugin_path

    print(plugin_path())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sigmapot", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an ensemble on DFT data, calibrate it and export it")
    t.add_argument("config", nargs="?", help="YAML config (flags below override its keys)")
    t.add_argument("--data", nargs="+", help="training data files (anything ASE reads)")
    t.add_argument("--validation", help="validation file (default: carve a fraction out of the data)")
    t.add_argument("--validation-fraction", type=float)
    t.add_argument("--validation-split", choices=["random", "stratified"],
                   help="carve the validation set at random (default) or the same share of each config_type")
    t.add_argument("-o", "--output", help="run directory")
    t.add_argument("--epochs", type=int)
    t.add_argument("--time-budget", type=float, help="stop after this many minutes")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    t.add_argument("--cutoff", type=float)
    t.add_argument("--ensemble-size", type=int)
    t.add_argument("--channels", type=int)
    t.add_argument("--elements", nargs="+")
    t.add_argument("--energy-weight", type=float)
    t.add_argument("--force-weight", type=float)
    t.add_argument("--stress-weight", type=float)
    t.add_argument("--stage2-epochs", type=int,
                   help="epochs of stage 2 (from the best weights, higher energy weight; 0: none)")
    t.add_argument("--refit", action="store_true", default=None,
                   help="train again on training + validation frames, keep the first run's calibration")
    t.add_argument("--init", help="fine-tune from a run directory, final.pt or exported model")
    t.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    c = sub.add_parser("calibrate", help="fit a finished run's calibration again on its held-out frames "
                                         "(with this version's method) and export it")
    c.add_argument("run_dir")
    c.add_argument("--coverage", type=float, help="interval coverage (default: the run's)")
    c.set_defaults(func=_calibrate)

    e = sub.add_parser("export", help="write one TorchScript file from a finished run")
    e.add_argument("run_dir")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    e.set_defaults(func=_export)

    i = sub.add_parser("info", help="print an exported model's metadata")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)

    v = sub.add_parser("evaluate", help="errors and uncertainty quality on labelled data")
    v.add_argument("model")
    v.add_argument("data")
    v.add_argument("--plots", help="directory for parity and calibration PNGs")
    v.add_argument("--json", help="write the full report as JSON")
    v.add_argument("--dtype", choices=["float64", "float32"],
                   help="run the model in this precision (default: the file's)")
    v.set_defaults(func=_evaluate)

    pp = sub.add_parser("plugin-path", help="print the path of the LAMMPS plugin library")
    pp.set_defaults(func=_plugin_path)

    from .learn import add_learn_parser
    add_learn_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError
    from .data import DataError
    from .export import ModelFileError

    try:
        args.func(args)
    except (ConfigError, DataError, ModelFileError, FileNotFoundError) as exc:
        print(f"sigmapot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
