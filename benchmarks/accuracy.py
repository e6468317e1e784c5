"""Accuracy benchmark (issue: core): train the default recipe on mlearn Si/Ge, evaluate on the test split.

Writes benchmarks/results/accuracy_<element>.json (+ the run's metrics.csv) and appends a markdown table to
benchmarks/results/accuracy.md.  Validation is carved out of train.extxyz only; test.extxyz is never
seen during training, early stopping or calibration.

Usage: python benchmarks/accuracy.py [--elements Si Ge] [--config examples/configs/full.yaml]
                                     [--time-budget MIN] [--threads N] [--ensemble-size M]
                                     [--stress-config-types T ...] [--stress-shear-order T=ORDER ...]
                                     [--resume]

With the recipe's `refit: true` each element trains twice (a holdout pass, then every frame); the
reported training time is both passes', the saved metrics.csv the holdout pass's validation curve.

The mlearn AIMD-NVT and Vacancy frames carry shear stresses in another order than their labels say (yz
and xz exchanged; `sigmapot evaluate` flags it, docs/accuracy.md), so by default every frame's stress
enters the loss with those two groups' shear components read in the order that fits
(`stress_shear_order`, as the recipe does). `--stress-config-types Elastic Surface
--stress-shear-order none` trains on the groups labelled right only (an earlier recipe). The
stress-convention check of the trained model on the training file (as labelled) is saved with the results.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from sigmapot.config import load_train_config
from sigmapot.evaluate import evaluate
from sigmapot.train import load_run, part_dir, train

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mlearn"
PUBLISHED = {"Si": {"MTP": (2.21, 0.06), "GAP": (2.91, 0.07), "qSNAP": (3.81, 0.116), "SNAP": (6.44, 0.133)},
             "Ge": {"MTP": (1.79, 0.05), "GAP": (2.06, 0.05), "qSNAP": (6.45, 0.133), "SNAP": (6.59, 0.188)}}
TARGET = {"Si": (2.2, 0.06), "Ge": (1.8, 0.05)}
# The groups of the mlearn files whose shear stresses are labelled (yz xz xy) but fit as (xz yz xy).
MLEARN_SHEAR_ORDER = ("AIMD-NVT=xz,yz,xy", "Vacancy=xz,yz,xy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", nargs="+", default=["Si", "Ge"])
    p.add_argument("--config", default=str(REPO / "examples" / "configs" / "full.yaml"))
    p.add_argument("--time-budget", type=float, help="minutes per element (default: the config's)")
    p.add_argument("--threads", type=int)
    p.add_argument("--ensemble-size", type=int, help="members (default: the config's)")
    p.add_argument("--stress-config-types", nargs="+", default=["all"],
                   help="config_types whose stresses enter the loss ('all': every frame)")
    p.add_argument("--stress-shear-order", nargs="+", default=list(MLEARN_SHEAR_ORDER),
                   help="CONFIG_TYPE=ORDER: read that group's labelled shear stresses in ORDER ('none': as "
                        "labelled)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--resume", action="store_true", help="continue the runs under OUT/runs (after a kill)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stress_types = None if args.stress_config_types == ["all"] else args.stress_config_types
    shear_order = {} if args.stress_shear_order == ["none"] else \
        {k: v.replace(",", " ") for k, v in (a.split("=", 1) for a in args.stress_shear_order)}
    for el in args.elements:
        cfg = load_train_config(args.config, {"train": [str(DATA / el / "train.extxyz")],
                                              "output": str(out / "runs" / f"accuracy_{el}"),
                                              "time_budget_min": args.time_budget, "threads": args.threads,
                                              "model.ensemble_size": args.ensemble_size,
                                              "stress_config_types": stress_types,
                                              "stress_shear_order": shear_order})
        run = train(cfg, resume=args.resume, progress=True)
        # the training loops' own clocks: a resumed run counts the time before the kill, a refit both passes
        passes = [run / "holdout", run] if cfg.refit else [run]
        wall = sum(load_run(r)[1]["training"]["wall_time_s"] for r in passes)
        report = evaluate(str(run / "model.pt"), str(DATA / el / "test.extxyz"),
                          plots=str(out / f"accuracy_{el}_plots"))
        # the exported (holdout-pass) ensemble's own final validation errors, eV/atom and eV/A
        report["validation_errors"] = load_run(passes[0])[1]["training"].get("validation_errors")
        report.update({"element": el, "train_wall_time_min": wall / 60, "config": args.config,
                       "command": f"python benchmarks/accuracy.py --elements {el} --config {args.config}"
                                  + (f" --time-budget {args.time_budget}" if args.time_budget else "")
                                  + (f" --ensemble-size {args.ensemble_size}" if args.ensemble_size else "")
                                  + f" --stress-config-types {' '.join(args.stress_config_types)}"
                                  + f" --stress-shear-order {' '.join(args.stress_shear_order)}",
                       "published": PUBLISHED[el], "target": TARGET[el]})
        train_check = evaluate(str(run / "model.pt"), str(DATA / el / "train.extxyz"))
        report["train_stress_convention"] = train_check["stress_convention"]
        (out / f"accuracy_{el}.json").write_text(json.dumps(report, indent=2))
        # the validation curve, read by training_speed.py (a refit pass has none: its holdout run's);
        # an ensemble trained as several runs has one per run (_part1.. after the first)
        for k in range(cfg.ensemble_runs):
            suffix = f"_part{k}" if k else ""
            shutil.copy(part_dir(passes[0], k, cfg.ensemble_runs) / "metrics.csv",
                        out / f"accuracy_{el}_metrics{suffix}.csv")
            if cfg.refit:
                shutil.copy(part_dir(run, k, cfg.ensemble_runs) / "metrics.csv",
                            out / f"accuracy_{el}_refit_metrics{suffix}.csv")
        lines = markdown(report, wall / 60, stress_types, shear_order)
        with open(out / "accuracy.md", "a") as fh:
            fh.write("\n".join(lines) + "\n")
        print("\n".join(lines))


def markdown(report: dict, wall_min: float, stress_types: list[str] | None,
             shear_order: dict[str, str]) -> list[str]:
    """The accuracy.md section of one element's run, trained with these stress_config_types (None: all)
    and stress_shear_order."""
    el, a = report["element"], report["all"]
    in_loss = {ct: ("no" if stress_types is not None and ct not in stress_types else
                    f"read as ({shear_order[ct]})" if ct in shear_order else "yes")
               for ct in report["train_stress_convention"]}
    lines = [f"\n## {el}: trained {wall_min:.1f} min ({report['command']})\n",
             "| model | energy MAE (meV/atom) | force MAE (eV/Å) |", "|---|---|---|",
             f"| **sigmapot** | **{a['energy_mae_meV_atom']:.2f}** | **{a['force_mae']:.4f}** |"]
    lines += [f"| {name} (published) | {e} | {f} |" for name, (e, f) in PUBLISHED[el].items()]
    lines += ["", "| config_type | frames | energy MAE | force MAE |", "|---|---|---|---|"]
    lines += [f"| {ct} | {m['frames']} | {m['energy_mae_meV_atom']:.2f} | {m['force_mae']:.4f} |"
              for ct, m in report["per_config_type"].items()]
    lines += ["", f"Uncertainty: Spearman(σ_F, |ΔF|) = {a['force_sigma_spearman']:.3f}; "
                  f"{a['interval_nominal_coverage']:.0%} interval covers {a['interval_observed_coverage']:.1%} "
                  f"of test atoms; miscalibration area {a['miscalibration_area']:.3f}; stress MAE "
                  f"{a.get('stress_mae_GPa', float('nan')):.3f} GPa.",
              "", "Shear stresses of the training file against this model, as labelled and in the best "
                  "other order (GPa MAE):", "",
              "| config_type | in stress loss | as labelled | best other order | suspect |",
              "|---|---|---|---|---|"]
    lines += [f"| {ct} | {in_loss[ct]} | "
              f"{c['shear_mae_GPa']:.3f} | {c['best_other_shear_mae_GPa']:.3f} ({c['best_other_order']}) | "
              f"{'**yes**' if c['suspect'] else 'no'} |"
              for ct, c in report["train_stress_convention"].items()]
    return lines


if __name__ == "__main__":
    main()
