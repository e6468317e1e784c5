"""Collect the performance benchmarks' JSON results into one table against the targets.

    python benchmarks/performance.py     (after lammps_speed, scaling, memory, ase_speed, training_speed)
Writes benchmarks/results/performance.md.
"""
from __future__ import annotations

import json

from common import RESULTS, write_results
from lammps_speed import TARGET_MEAN_OVER_SNAP, TARGET_UNCERTAINTY_OVER_MEAN


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def rows() -> list:
    out = []
    speed = load("lammps_speed")
    if speed:
        for n, r in speed["results"].items():   # medians over the runs (lammps_speed.md: min and max)
            for key, ratio in r["ratio_to_snap"].items():
                if key.endswith("_mean"):
                    met = ratio <= TARGET_MEAN_OVER_SNAP if "float32" in key else None
                    out.append((f"LAMMPS mean-force step / SNAP, {n} atoms, {key[9:-5]}",
                                f"≤ {TARGET_MEAN_OVER_SNAP}" if met is not None else "–", ratio, met))
            for dtype, ratio in r["uncertainty_over_mean"].items():
                met = ratio <= TARGET_UNCERTAINTY_OVER_MEAN if dtype == "float32" else None
                out.append((f"LAMMPS uncertainty step / mean-force step, {n} atoms, {dtype}",
                            f"≤ {TARGET_UNCERTAINTY_OVER_MEAN}" if met is not None else "–", ratio, met))
    scaling = load("scaling")
    if scaling:
        r = scaling["results"]["sigmapot"]
        out.append(("2-rank strong-scaling efficiency, 16k atoms", "≥ 0.9", r["strong_efficiency"],
                    r["strong_efficiency"] >= 0.9))
        out.append(("2-rank weak-scaling efficiency, 8k atoms/rank", "–", r["weak_efficiency"], None))
        if "snap" in scaling["results"]:
            out.append(("(reference) SNAP strong-scaling efficiency, 16k atoms", "–",
                        scaling["results"]["snap"]["strong_efficiency"], None))
    memory = load("memory")
    if memory:
        big = max(memory["results"], key=lambda r: r["atoms"])
        out.append((f"peak memory, kB per atom at {big['atoms']} atoms", "≤ 4", big["kb_per_atom"],
                    big["kb_per_atom"] <= 4))
    ase = load("ase_speed")
    if ase:
        for mode, ratio in ase["ase_over_lammps_at_2000"].items():
            out.append((f"ASE / LAMMPS cost per atom, 2000 atoms, {mode} calls", "≤ 2", ratio, ratio <= 2))
    training = load("training_speed")
    if training:
        out.append(("training structures per second (full recipe, Si)", "–", training["structures_per_second"], None))
    return out


def main() -> None:
    table = ["| quantity | target | measured | met |", "|---|---|---|---|"]
    results = rows()
    for name, target, value, met in results:
        table.append(f"| {name} | {target} | {value:.3f} | {'' if met is None else ('yes' if met else '**no**')} |")
    write_results("performance", {"rows": results}, table,
                  "Performance against the targets (from the JSON files beside this one)")


if __name__ == "__main__":
    main()
