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


def speed_rows(name: str, ranks: str) -> list:
    """The LAMMPS speed ratios of one lammps_speed result file, as min / median / max over its runs; the
    target is judged on the median."""
    speed, out = load(name), []
    if not speed:
        return out
    for n, r in speed["results"].items():
        for key, ratio in r["spread"]["ratio_to_snap"].items():
            if key.endswith("_mean"):
                met = ratio["median"] <= TARGET_MEAN_OVER_SNAP if "float32" in key else None
                out.append((f"LAMMPS mean-force step / SNAP, {n} atoms, {ranks}, {key[9:-5]}",
                            f"≤ {TARGET_MEAN_OVER_SNAP}" if met is not None else "–", ratio, met))
        for dtype, ratio in r["spread"]["uncertainty_over_mean"].items():
            met = ratio["median"] <= TARGET_UNCERTAINTY_OVER_MEAN if dtype == "float32" else None
            out.append((f"LAMMPS uncertainty step / mean-force step, {n} atoms, {ranks}, {dtype}",
                        f"≤ {TARGET_UNCERTAINTY_OVER_MEAN}" if met is not None else "–", ratio, met))
    return out


def rows() -> list:
    out = speed_rows("lammps_speed", "1 rank") + speed_rows("lammps_speed_2ranks", "2 ranks")
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


def measured(value) -> str:
    """A number, or min / median / max of a spread over runs."""
    if isinstance(value, dict):
        return f"{value['min']:.3f} / {value['median']:.3f} / {value['max']:.3f}"
    return f"{value:.3f}"


def main() -> None:
    table = ["LAMMPS ratios: min / median / max over the runs of lammps_speed.py (the target is judged on the "
             "median).", "", "| quantity | target | measured | met |", "|---|---|---|---|"]
    results = rows()
    for name, target, value, met in results:
        table.append(f"| {name} | {target} | {measured(value)} | {'' if met is None else ('yes' if met else '**no**')} |")
    write_results("performance", {"rows": results}, table,
                  "Performance against the targets (from the JSON files beside this one)")


if __name__ == "__main__":
    main()
