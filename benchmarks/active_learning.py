"""Teacher-student benchmark of `sigmapot learn`: uncertainty-driven vs random selection.

The teacher (the "DFT" of this benchmark) is the Tersoff Si potential through ASE's LAMMPSlib. Both
loops start from the same 10 labelled structures (64-atom diamond cells, slightly rattled and strained),
run the same MD conditions with their current model, and label `--per-iteration` snapshots per
iteration: the uncertainty loop those whose calibrated sigma_F passes the threshold (most uncertain first,
then farthest-point sampling on descriptors), the random loop a uniform draw from all sampled snapshots
of the same MD runs. Test set: teacher MD snapshots (Langevin, 300-1500 K, -3..+3 % strain), the same for
every run. Curves are averaged over seeds (initial structures, weights, MD velocities all change).

    python benchmarks/active_learning.py [--budget 58] [--jobs 2] [--out runs/bench_active_learning]

Writes OUT/summary.json (curves, labels needed to reach --target) and OUT/learning_curves.png, and
copies both to benchmarks/results/active_learning.{json,png}.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml

TEMPERATURES = [300.0, 900.0, 1500.0]
STRAINS = [-0.03, 0.03]
A0 = 5.432  # Tersoff Si lattice constant, A


def initial_structures(seed: int):
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(10):
        atoms = bulk("Si", "diamond", a=A0 * (1 + rng.uniform(-0.01, 0.01)), cubic=True) * (2, 2, 2)
        atoms.positions += rng.normal(scale=0.04, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def teacher_test_set(path: Path, per_condition: int) -> None:
    """Snapshots of teacher MD at every (temperature, strain): the distribution the student must learn."""
    import ase.io
    from ase import units
    from ase.build import bulk
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    from sigmapot.reference import classical_si, label

    teacher = classical_si("tersoff", "Si.tersoff")
    frames = []
    for k, (t, s) in enumerate([(t, s) for t in TEMPERATURES for s in STRAINS]):
        atoms = bulk("Si", "diamond", a=A0 * (1 + s), cubic=True) * (2, 2, 2)
        atoms.calc = teacher
        rng = np.random.default_rng(1000 + k)
        thermalize_momenta(atoms, temperature_K=t, rng=rng)
        dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=t, friction=0.01 / units.fs, fixcm=False, rng=rng)
        dyn.run(100)
        for _ in range(per_condition):
            dyn.run(40)
            frames.append(label(atoms, teacher))
    ase.io.write(str(path), frames)


def loop_config(out: Path, selection: str, seed: int, args) -> Path:
    import ase.io
    from ase.build import bulk

    run = out / f"{selection}_seed{seed}"
    run.mkdir(parents=True, exist_ok=True)
    ase.io.write(str(run / "initial_structures.extxyz"), initial_structures(seed))
    ase.io.write(str(out / "start.extxyz"), bulk("Si", "diamond", a=A0, cubic=True) * (2, 2, 2))
    cfg = {
        "initial": str(run / "initial_structures.extxyz"), "test": str(out / "test.extxyz"),
        "output": str(run / "loop"), "relabel": True, "reference": {"calculator": "si-tersoff"},
        "md": {"engine": "ase", "structures": [str(out / "start.extxyz")], "temperatures": TEMPERATURES,
               "strains": STRAINS, "steps": args.md_steps, "sample_every": 10, "timestep_fs": 1.0},
        "training": {"model": {"num_channels": 6, "hidden": [32, 32], "cutoff": 4.0, "ensemble_size": 4},
                     "epochs": args.epochs, "batch_size": 4, "learning_rate": 0.005, "energy_weight": 1.0,
                     "force_weight": 10.0, "lr_schedule": "cosine", "threads": 1, "seed": seed},
        "finetune_epochs": args.finetune_epochs, "finetune_learning_rate": 0.003,
        "threshold": args.threshold, "halt_threshold": 10 * args.threshold,
        "labels_per_iteration": args.per_iteration, "label_budget": args.budget,
        "max_iterations": 100, "selection": selection, "validation_fraction": 0.2, "seed": seed,
    }
    path = run / "learn.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_one(config: str) -> list:
    import torch

    from sigmapot.learn import learn, load_learn_config

    torch.set_num_threads(1)
    out = learn(load_learn_config(config, {}), progress=False)
    return [json.loads(p.read_text()) for p in sorted(out.glob("iter_*/state.json"))]


def labels_to_reach(labels, errors, target):
    """First label count at which the (linearly interpolated) curve reaches `target`; None if never."""
    for k in range(len(errors)):
        if errors[k] <= target:
            if k == 0:
                return float(labels[0])
            f = (errors[k - 1] - target) / (errors[k - 1] - errors[k])
            return float(labels[k - 1] + f * (labels[k] - labels[k - 1]))
    return None


def mean_curve(records_per_seed, budget, step):
    """Test force MAE vs labels, each seed's curve held at its last value past its last iteration."""
    grid = np.arange(10, budget + 1, step)
    curves = []
    for records in records_per_seed:
        labels = [r["labels_used"] for r in records]
        errors = [r["test"]["force_mae"] for r in records]
        curves.append(np.interp(grid, labels, errors))
    return grid, np.mean(curves, 0), np.std(curves, 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="loops run at once (one core each)")
    p.add_argument("--out", default="runs/bench_active_learning")
    p.add_argument("--budget", type=int, default=58, help="label budget per loop, initial 10 included")
    p.add_argument("--target", type=float, default=None,
                   help="test force MAE (eV/A) to reach; default: what random selection reaches at the "
                        "full budget")
    args = p.parse_args(argv)
    # 4 labels per iteration, 100 MD steps per condition, 80 + 30 fine-tune epochs: 52 min with --jobs 2
    for key, value in dict(per_iteration=4, md_steps=100, epochs=80, finetune_epochs=30, threshold=0.1).items():
        setattr(args, key, value)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not (out / "test.extxyz").is_file():
        teacher_test_set(out / "test.extxyz", per_condition=5)
    configs = {(sel, seed): str(loop_config(out, sel, seed, args))
               for sel in ("uncertainty", "random") for seed in args.seeds}
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futures = {key: pool.submit(run_one, cfg) for key, cfg in configs.items()}
        results = {key: f.result() for key, f in futures.items()}

    summary = {"settings": {k: getattr(args, k) for k in ("seeds", "budget", "per_iteration",
                                                            "md_steps", "epochs", "finetune_epochs",
                                                            "threshold")},
               "runs": {f"{sel}_seed{seed}": [{"labels": r["labels_used"], "force_mae": r["test"]["force_mae"],
                                               "max_sigma_f": r["max_sigma_f"], "stop": r["stop"]}
                                              for r in recs] for (sel, seed), recs in results.items()}}
    curves = {}
    for sel in ("uncertainty", "random"):
        grid, mean, std = mean_curve([results[(sel, s)] for s in args.seeds], args.budget, args.per_iteration)
        curves[sel] = {"labels": grid.tolist(), "force_mae_mean": mean.tolist(), "force_mae_std": std.tolist()}
    target = args.target if args.target is not None else curves["random"]["force_mae_mean"][-1]
    needed = {sel: labels_to_reach(c["labels"], c["force_mae_mean"], target) for sel, c in curves.items()}
    summary.update(curves=curves, target_force_mae=target, labels_to_target=needed,
                   reduction=(needed["random"] / needed["uncertainty"]
                              if needed["random"] and needed["uncertainty"] else None),
                   wall_time_s=round(time.time() - t0, 1))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for sel, c in curves.items():
        m, s = np.array(c["force_mae_mean"]), np.array(c["force_mae_std"])
        ax.plot(c["labels"], m, "o-", label=f"{sel} selection")
        ax.fill_between(c["labels"], m - s, m + s, alpha=0.2)
    ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:.3f} eV/Å")
    ax.set(xlabel="labelled structures", ylabel="test force MAE (eV/Å)",
           title=f"Si, Tersoff teacher, mean of {len(args.seeds)} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    for sel, c in curves.items():
        print(f"{sel:12s} " + "  ".join(f"{n}:{e:.4f}" for n, e in zip(c["labels"], c["force_mae_mean"])))
    print(f"target {target:.4f} eV/A: labels needed {needed}, reduction {summary['reduction']}")
    results = Path(__file__).resolve().parent / "results"
    shutil.copyfile(out / "summary.json", results / "active_learning.json")
    shutil.copyfile(out / "learning_curves.png", results / "active_learning.png")
    print(f"wall time {summary['wall_time_s']} s; {out / 'summary.json'}, {results / 'active_learning.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
