"""Training, resume, calibration and the command line, on a few frames of the real Si DFT data."""
from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sigmapot.calibrate import calibrate_model
from sigmapot.config import ConfigError, ModelConfig, load_train_config
from sigmapot.data import DataError, collate, read_frames, to_graph
from sigmapot.model import SigmaModel
from sigmapot.train import (feature_statistics, fit_statistics, frame_weights, load_run, make_optimizer,
                            member_losses, merge_members, model_config_of, predict, train)

SMALL = {"epochs": 3, "batch_size": 4, "max_frames": 24, "threads": 1, "model.num_channels": 6,
         "model.hidden": [16, 16], "model.cutoff": 4.0, "validation_fraction": 0.25}


def config(si_data, out, **extra):
    overrides = {"train": [str(si_data / "train.extxyz")], "output": str(out), **SMALL, **extra}
    return load_train_config(None, overrides)


def rows(run):
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def assert_same_weights(run_a, run_b):
    a, _ = load_run(run_a)
    b, _ = load_run(run_b)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=0, msg=name)


def test_short_training_lowers_the_loss_and_exports(si_data, tmp_path):
    run = train(config(si_data, tmp_path / "run", epochs=4), progress=False)
    r = rows(run)
    assert len(r) == 4
    assert float(r[-1]["val_score"]) < float(r[0]["val_score"])
    assert float(r[-1]["train_loss"]) < float(r[0]["train_loss"])
    assert (run / "model.pt").is_file() and (run / "final.pt").is_file()


def test_resume_continues_to_the_same_model(si_data, tmp_path):
    full = train(config(si_data, tmp_path / "full", epochs=4), progress=False)
    part = tmp_path / "part"
    train(config(si_data, part, epochs=2), progress=False)
    resumed = train(config(si_data, part, epochs=4), resume=True, progress=False)
    assert [row["epoch"] for row in rows(resumed)] == ["1", "2", "3", "4"]
    assert_same_weights(full, resumed)


def test_stage2_restarts_from_the_best_weights_and_ends_on_its_last_ones(si_data, tmp_path):
    run = train(config(si_data, tmp_path / "run", epochs=2, stage2_epochs=2, stage2_learning_rate=3e-4,
                       stage2_energy_weight=50.0), progress=False)
    r = rows(run)
    assert [(row["epoch"], row["stage"]) for row in r] == [("1", "1"), ("2", "1"), ("3", "2"), ("4", "2")]
    assert float(r[2]["lr"]) == pytest.approx(3e-4)
    final = torch.load(run / "final.pt", weights_only=True)["state"]
    last = torch.load(run / "checkpoint.pt", weights_only=True)["ema"]
    best = torch.load(run / "best.pt", weights_only=True)
    weights = [name for name in final if name != "calibration"]       # calibration is fit afterwards
    for name in weights:
        torch.testing.assert_close(final[name], last[name], atol=0, rtol=0, msg=name)
    assert any(not torch.equal(value, best[name]) for name, value in final.items() if value.is_floating_point())


def test_l1_energy_term_is_the_mean_absolute_error_per_atom(si_data, tmp_path):
    cfg = config(si_data, tmp_path / "unused", stress_weight=1.0)
    model = SigmaModel(ModelConfig(elements=["Si"], num_channels=4, hidden=[8], cutoff=4.0), seed=0)
    batch = collate([to_graph(f, model.elements, model.cutoff)
                     for f in read_frames(si_data / "train.extxyz")[:3]])
    pred = predict(model, batch, create_graph=False)
    de = (pred["energy"] - batch.energy) / batch.natoms
    without_energy = member_losses(pred, batch, cfg, 0.0)
    torch.testing.assert_close(member_losses(pred, batch, cfg, 2.0, "l1"), without_energy + 2.0 * de.abs().mean(1))
    torch.testing.assert_close(member_losses(pred, batch, cfg, 2.0), without_energy + 2.0 * de.square().mean(1))


def test_feature_statistics_cover_every_frame_in_any_order(si_data):
    """The descriptor statistics are those of every training atom (not of the first frames of the file),
    merged chunk by chunk: the same in any frame order and for any chunk size."""
    frames = read_frames(si_data / "train.extxyz")[:70]    # 57 Vacancy, 12 Surface, 1 AIMD-NVT frame
    model = SigmaModel(ModelConfig(elements=["Si"], num_channels=4, hidden=[8], cutoff=4.0), seed=0)
    graphs = [to_graph(f, model.elements, model.cutoff) for f in frames]
    fit_statistics(model, graphs)
    fitted_mean, fitted_std = model.feature_mean.clone(), model.feature_std.clone()
    every = collate(graphs)
    with torch.no_grad():
        model.feature_mean.zero_()
        model.feature_std.fill_(1.0)
        x = model.descriptors(every.species, every.center, every.neighbor, every.vec.unsqueeze(0),
                              every.species.shape[0])
    torch.testing.assert_close(fitted_mean, x.mean(1, keepdim=True), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fitted_std, x.std(1, keepdim=True).clamp(min=1e-6), atol=1e-10, rtol=1e-10)
    for order, chunk in ((graphs[::-1], 32), (graphs, 5), (graphs, 1000)):
        mean, std = feature_statistics(model, order, chunk=chunk)
        torch.testing.assert_close(mean, x.mean(1, keepdim=True), atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(std, x.std(1, keepdim=True), atol=1e-10, rtol=1e-10)


def test_frame_weights_balance_config_types_and_scale_every_loss_term(si_data):
    frames = read_frames(si_data / "train.extxyz")
    types = [f.config_type for f in frames]
    w = np.array(frame_weights(frames, "balanced"))
    assert w.mean() == pytest.approx(1.0)
    totals = {t: w[[k for k, x in enumerate(types) if x == t]].sum() for t in set(types)}
    assert len(totals) == 4 and np.allclose(list(totals.values()), len(frames) / 4)   # each type the same
    named = np.array(frame_weights(frames, {"Surface": 3.0}))
    assert named.mean() == pytest.approx(1.0)
    assert {round(x / named[types.index("AIMD-NVT")], 12) for x, t in zip(named, types) if t == "Surface"} == {3.0}
    assert frame_weights(frames, None) == [1.0] * len(frames)
    with pytest.raises(DataError, match=r"\['Surfaces'\].*training config_types are \['AIMD-NVT'"):
        frame_weights(frames, {"Surfaces": 2.0})

    cfg = config(si_data, "unused", stress_weight=1.0)
    model = SigmaModel(ModelConfig(elements=["Si"], num_channels=4, hidden=[8], cutoff=4.0), seed=0)
    graphs = [to_graph(f, model.elements, model.cutoff) for f in frames[:3]]
    batch = collate(graphs)
    pred = predict(model, batch, create_graph=False)
    plain = member_losses(pred, batch, cfg, 2.0)
    # a common weight scales every term; a frame at weight 0 leaves the loss, whatever its labels
    torch.testing.assert_close(member_losses(pred, collate([dataclasses.replace(g, weight=2.5) for g in graphs]),
                                             cfg, 2.0), 2.5 * plain)
    zero = dataclasses.replace(graphs[1], weight=0.0)
    moved = dataclasses.replace(zero, energy=zero.energy + 7.0, forces=zero.forces + 1.0, stress=zero.stress + 0.1)
    loss = member_losses(pred, collate([graphs[0], zero, graphs[2]]), cfg, 2.0)
    torch.testing.assert_close(member_losses(pred, collate([graphs[0], moved, graphs[2]]), cfg, 2.0), loss)
    assert not torch.allclose(loss, plain)


def test_config_type_weights_reach_training_and_the_model_metadata(si_data, tmp_path):
    from ase.io import read, write

    images = read(si_data / "train.extxyz", ":")
    mixed = tmp_path / "mixed.extxyz"      # 4 Surface, 12 AIMD-NVT frames
    write(mixed, [a for a in images if a.info["config_type"] == "Surface"][:4]
          + [a for a in images if a.info["config_type"] == "AIMD-NVT"][:12])
    run = train(config(si_data, tmp_path / "run", epochs=1, config_type_weights="balanced", train=[str(mixed)]),
                progress=False)
    _, meta = load_run(run)
    weights = meta["training"]["config_type_weights"]
    counts = meta["training_data"]["train"]["config_types"]
    assert set(weights) == set(counts) and len(set(weights.values())) > 1
    assert np.allclose([weights[t] * n for t, n in counts.items()], sum(counts.values()) / len(counts), rtol=1e-5)
    out = subprocess.run([sys.executable, "-m", "sigmapot.cli", "info", str(run / "model.pt")], capture_output=True,
                         text=True, check=True, env=_env()).stdout
    assert f"frame weights    AIMD-NVT {weights['AIMD-NVT']:.3g}, Surface {weights['Surface']:.3g}" in out


def test_stage2_energy_loss_applies_to_stage2_only(si_data, tmp_path):
    common = dict(epochs=2, stage2_epochs=1, stage2_energy_weight=50.0)
    mse = rows(train(config(si_data, tmp_path / "mse", **common), progress=False))
    l1 = rows(train(config(si_data, tmp_path / "l1", stage2_energy_loss="l1", **common), progress=False))
    assert [r["train_loss"] for r in l1[:2]] == [r["train_loss"] for r in mse[:2]]
    assert l1[2]["train_loss"] != mse[2]["train_loss"]
    with pytest.raises(ConfigError, match="stage2_energy_loss must be 'mse' or 'l1'"):
        config(si_data, tmp_path / "bad", stage2_energy_loss="huber").validate()


def test_time_budget_ends_stage1_early_and_still_runs_stage2(si_data, tmp_path):
    # a budget spent after the first epoch: stage 1 stops there, stage 2 starts and stops after one epoch
    run = train(config(si_data, tmp_path / "run", epochs=5, stage2_epochs=3, time_budget_min=1e-4),
                progress=False)
    assert [(row["epoch"], row["stage"]) for row in rows(run)] == [("1", "1"), ("2", "2")]


@pytest.mark.parametrize("budget_min", [None, 30.0], ids=["epochs", "time-budget"])
def test_progress_bar_counts_epochs_or_the_time_budget(si_data, tmp_path, capsys, budget_min):
    # with a budget the bar's end is the budget (a 5-min run must not show a 20-min epoch-count ETA)
    train(config(si_data, tmp_path / "run", epochs=2, time_budget_min=budget_min), progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    if budget_min is None:
        assert "2/2" in bar and "budget" not in bar
    else:
        assert "of 30:00 budget, epoch 2/2, stage=1" in bar
        assert bar.split("%")[0].split()[-1] == "0"      # 2 short epochs spend ~0 % of 30 min


@pytest.mark.parametrize("killed_at", [2, 3], ids=["entering-stage-2", "inside-stage-2"])
def test_resume_across_and_inside_stage2_gives_the_uninterrupted_model(si_data, tmp_path, monkeypatch,
                                                                     killed_at):
    import sigmapot.train as training

    two_stage = {"epochs": 2, "stage2_epochs": 2}
    full = train(config(si_data, tmp_path / "full", **two_stage), progress=False)
    original = training._Loop._train_epoch

    def killed(self, optimizer, energy_weight, epoch, *rest):
        if epoch == killed_at:
            raise KeyboardInterrupt("simulated kill")
        return original(self, optimizer, energy_weight, epoch, *rest)

    part = tmp_path / "part"
    monkeypatch.setattr(training._Loop, "_train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config(si_data, part, **two_stage), progress=False)
    # stage 2 checkpoints its start, so a resume never reruns stage 1 (which may have stopped early)
    assert torch.load(part / "checkpoint.pt", weights_only=True)["stage"] == 2
    monkeypatch.setattr(training._Loop, "_train_epoch", original)
    resumed = train(config(si_data, part, **two_stage), resume=True, progress=False)
    assert [row["epoch"] for row in rows(resumed)] == ["1", "2", "3", "4"]
    assert_same_weights(full, resumed)


def test_refit_trains_on_every_frame_and_keeps_the_holdout_calibration(si_data, tmp_path, monkeypatch):
    import sigmapot.train as training
    from sigmapot.export import load_exported, read_metadata

    recipe = {"epochs": 2, "stage2_epochs": 1, "lr_schedule": "cosine"}
    plain = train(config(si_data, tmp_path / "plain", **recipe), progress=False)
    run = train(config(si_data, tmp_path / "run", refit=True, **recipe), progress=False)
    assert_same_weights(plain, run / "holdout")          # the holdout pass is the run without refit
    holdout_model, holdout_meta = load_run(run / "holdout")
    model, meta = load_run(run)
    assert holdout_meta["training_data"]["train"]["frames"] == 18       # 24 frames, 6 held out
    assert meta["training_data"]["train"]["frames"] == 24
    assert meta["training_data"]["validation"] == holdout_meta["training_data"]["validation"]
    torch.testing.assert_close(model.calibration, holdout_model.calibration, atol=0, rtol=0)
    exported = read_metadata(load_exported(run / "model.pt"))
    assert exported["calibration"]["force_scale"] == holdout_meta["calibration"]["force_scale"]
    assert exported["training"]["refit"] is True
    assert all(row["val_score"] == "nan" for row in rows(run)) and len(rows(run)) == 3
    diff = [(a - b).abs().max() for a, b in zip(model.parameters(), holdout_model.parameters())]
    assert max(diff) > 1e-6                              # six more frames change the weights
    info = subprocess.run([sys.executable, "-m", "sigmapot.cli", "info", str(run / "model.pt")], check=True,
                          capture_output=True, text=True, env=_env()).stdout
    assert "24 frames" in info and "training + 6 validation frames" in info

    original = training._Loop._train_epoch

    def killed(self, optimizer, energy_weight, epoch, *rest):
        if self.run == tmp_path / "part" and epoch == 1:
            raise KeyboardInterrupt("simulated kill in the refit pass")
        return original(self, optimizer, energy_weight, epoch, *rest)

    monkeypatch.setattr(training._Loop, "_train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config(si_data, tmp_path / "part", refit=True, **recipe), progress=False)
    monkeypatch.setattr(training._Loop, "_train_epoch", original)
    finished = (tmp_path / "part" / "holdout" / "final.pt").stat().st_mtime_ns
    resumed = train(config(si_data, tmp_path / "part", refit=True, **recipe), resume=True, progress=False)
    assert (resumed / "holdout" / "final.pt").stat().st_mtime_ns == finished    # not trained again
    assert_same_weights(run, resumed)

    # 'sigmapot calibrate' fits the holdout run again on its 6 held-out frames and passes it on
    subprocess.run([sys.executable, "-m", "sigmapot.cli", "calibrate", str(run), "--coverage", "0.8"], check=True,
                   capture_output=True, text=True, env=_env())
    recal_holdout, recal_meta = load_run(run / "holdout")
    assert recal_meta["calibration"]["coverage"] == 0.8 and recal_meta["calibration"]["n_frames"] == 6
    assert recal_meta["calibration"]["force_quantile"] < holdout_meta["calibration"]["force_quantile"]
    assert read_metadata(load_exported(run / "model.pt"))["calibration"]["coverage"] == 0.8
    torch.testing.assert_close(load_run(run)[0].calibration, recal_holdout.calibration, atol=0, rtol=0)


def test_ensemble_runs_are_independent_runs_merged_into_one_model(si_data, tmp_path):
    run = train(config(si_data, tmp_path / "run", epochs=2, ensemble_runs=2), progress=False)
    plain = train(config(si_data, tmp_path / "plain", epochs=2, **{"model.ensemble_size": 2}), progress=False)
    model, meta = load_run(run)
    first, _ = load_run(plain)
    second = SigmaModel(dataclasses.replace(model_config_of(first)))
    second.load_state_dict(torch.load(run / "part1" / "best.pt", weights_only=True))
    assert model.ensemble_size == 4 and meta["training"]["ensemble_runs"] == 2
    assert meta["training"]["epochs_run"] == [2, 2] and "validation_errors" in meta["training"]
    # run 0 is the plain 2-member run with the same seed; run 1 has its own initial weights
    assert (second.radial_weight - first.radial_weight).abs().max() > 1e-3
    frames = read_frames(si_data / "test.extxyz")[:3]
    batch = collate([to_graph(f, model.elements, model.cutoff) for f in frames])
    merged = predict(model, batch, create_graph=False)
    parts = [predict(m, batch, create_graph=False) for m in (first, second)]
    for key in ("energy", "forces"):
        torch.testing.assert_close(merged[key], torch.cat([p[key] for p in parts]), atol=1e-10, rtol=0)
    info = subprocess.run([sys.executable, "-m", "sigmapot.cli", "info", str(run / "model.pt")], check=True,
                          capture_output=True, text=True, env=_env()).stdout
    assert "2 independent runs of 2 members (seeds 0, 1)" in info


def test_merge_refuses_ensembles_fit_to_other_frames(si_data, tmp_path):
    a, _ = load_run(train(config(si_data, tmp_path / "a", epochs=1, **{"model.ensemble_size": 2}),
                          progress=False))
    b, _ = load_run(train(config(si_data, tmp_path / "b", epochs=1, max_frames=20,
                                 **{"model.ensemble_size": 2}), progress=False))
    with pytest.raises(ValueError, match="cannot merge ensembles whose 'reference_energy' differ"):
        merge_members([a, b])


def test_resume_inside_the_second_ensemble_run_gives_the_uninterrupted_model(si_data, tmp_path, monkeypatch):
    import sigmapot.train as training

    full = train(config(si_data, tmp_path / "full", ensemble_runs=2), progress=False)
    original = training._Loop._train_epoch

    def killed(self, optimizer, energy_weight, epoch, *rest):
        if self.run.name == "part1" and epoch == 1:
            raise KeyboardInterrupt("simulated kill")
        return original(self, optimizer, energy_weight, epoch, *rest)

    monkeypatch.setattr(training._Loop, "_train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(config(si_data, tmp_path / "part", ensemble_runs=2), progress=False)
    monkeypatch.setattr(training._Loop, "_train_epoch", original)
    resumed = train(config(si_data, tmp_path / "part", ensemble_runs=2), resume=True, progress=False)
    assert [row["epoch"] for row in rows(resumed / "part1")] == ["1", "2", "3"]
    assert_same_weights(full, resumed)


def test_calibration_brings_coverage_to_nominal_on_held_out_frames(si_data, tmp_path):
    run = train(config(si_data, tmp_path / "run", epochs=3, max_frames=40), progress=False)
    model, _ = load_run(run)
    frames = read_frames(si_data / "test.extxyz")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(frames))
    calib, held_out = [frames[k] for k in order[:12]], [frames[k] for k in order[12:]]
    from sigmapot.calibrate import raw_errors
    cal = calibrate_model(model, calib, coverage=0.9)
    raw = raw_errors(model, held_out)
    sigma = np.hypot(cal["force_scale"] * raw["raw_force"] ** cal["force_exponent"], cal["force_floor"])
    covered = np.mean(raw["force_error"] <= cal["force_quantile"] * sigma)
    uncalibrated = np.mean(raw["force_error"] <= raw["raw_force"])
    assert abs(covered - 0.9) < 0.06, (covered, uncalibrated)
    # sigma_F is the RMS error norm it claims: mean(|dF|^2 / sigma_F^2) = 1 (fit on calib, checked here)
    z2 = np.mean(raw["force_error"] ** 2 / sigma ** 2)
    assert 0.7 < z2 < 1.4, z2


def test_energy_scale_is_split_conformal_and_not_set_by_one_frame():
    from sigmapot.calibrate import energy_scale, normal_half_width

    rng = np.random.default_rng(1)
    raw = rng.uniform(0.5, 2.0, 21)
    err = raw * rng.normal(size=21)
    err[3] = 12.0 * raw[3]                           # one frame far outside the others (mlearn Si had 3.9 sigma)
    s = energy_scale(raw, err, 0.9)
    z90 = 1.6448536269514722
    assert normal_half_width(0.9) == pytest.approx(z90, abs=1e-12)
    inside = np.abs(err) <= z90 * s * raw
    assert inside.sum() == 20 and not inside[3]      # ceil(22 * 0.9) = 20 of 21 frames, the outlier outside
    err[3] = 100.0 * raw[3]
    assert energy_scale(raw, err, 0.9) == s          # the outlier's size does not move the scale
    rms = np.sqrt(np.mean((err / raw) ** 2))         # the Gaussian fit it replaced would grow with it
    assert rms > 10 * s
    assert energy_scale(raw, err, 0.5) < s


def test_config_errors_are_clear(tmp_path, si_data):
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_train_config(None, {"train": [str(si_data / "train.extxyz")], "epoch": 3})
    with pytest.raises(ConfigError, match="stage2_epochs must be a whole number"):
        load_train_config(None, {"train": [str(si_data / "train.extxyz")], "stage2_epochs": -1})
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(None, {"train": [str(tmp_path / "nope.extxyz")]})
    with pytest.raises(ConfigError, match="refit needs lr_schedule: cosine"):
        load_train_config(None, {"train": [str(si_data / "train.extxyz")], "refit": True})
    for weights in ("heavy", {"Surface": -1.0}):
        with pytest.raises(ConfigError, match="config_type_weights must be 'balanced' or map"):
            load_train_config(None, {"train": [str(si_data / "train.extxyz")], "config_type_weights": weights})
    for runs, extra in ((3, {}), (4, {}), (2, {"model.shared_descriptor": True})):
        with pytest.raises(ConfigError, match="ensemble_runs"):
            load_train_config(None, {"train": [str(si_data / "train.extxyz")], "ensemble_runs": runs, **extra})
    bad = tmp_path / "noforces.extxyz"
    bad.write_text("1\nLattice=\"5 0 0 0 5 0 0 0 5\" Properties=species:S:1:pos:R:3 energy=-1.0 pbc=\"T T T\"\n"
                   "Si 0 0 0\n")
    with pytest.raises(DataError, match="lacks forces"):
        read_frames(bad)


def test_cli_train_export_info_evaluate(si_data, tmp_path):
    cli = [sys.executable, "-m", "sigmapot.cli"]
    run = tmp_path / "run"
    subprocess.run(cli + ["train", "--data", str(si_data / "train.extxyz"), "-o", str(run), "--epochs", "1",
                          "--stage2-epochs", "1", "--channels", "4", "--cutoff", "4.0", "--threads", "1",
                          "--quiet"], check=True, timeout=600, env=_env())
    assert [row["stage"] for row in rows(run)] == ["1", "2"]
    # keep the CLI test fast: the config file limits frames
    exported = tmp_path / "m32.pt"
    subprocess.run(cli + ["export", str(run), "-o", str(exported), "--dtype", "float32"], check=True,
                   timeout=120, env=_env())
    info = subprocess.run(cli + ["info", str(exported)], check=True, capture_output=True, text=True,
                          env=_env()).stdout
    assert "float32" in info and "['Si']" in info and "calibration" in info
    ev = subprocess.run(cli + ["evaluate", str(exported), str(si_data / "test.extxyz"), "--plots",
                               str(tmp_path / "plots"), "--json", str(tmp_path / "r.json")],
                        check=True, capture_output=True, text=True, env=_env()).stdout
    assert "energy MAE" in ev and "Spearman" in ev and "largest energy errors" in ev
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["per_frame"]) == report["all"]["frames"] and "energy_interval_observed_coverage" in report["all"]
    # per config_type coverage, weighted by atoms, adds up to the overall one
    groups = report["per_config_type"].values()
    pooled = sum(g["force_interval_coverage"] * g["atoms"] for g in groups) / report["all"]["atoms"]
    assert pooled == pytest.approx(report["all"]["interval_observed_coverage"], abs=1e-12)
    assert "intervals cover" in ev and "90 % range over resampled frames" in ev
    lo, hi = report["all"]["interval_observed_coverage_range"]
    assert lo <= report["all"]["interval_observed_coverage"] <= hi
    assert (tmp_path / "plots" / "parity.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "calibration.png").stat().st_size > 1000
    bad = subprocess.run(cli + ["info", str(tmp_path / "missing.pt")], capture_output=True, text=True,
                         env=_env())
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    bad = subprocess.run(cli + ["calibrate", str(tmp_path / "plots")], capture_output=True, text=True, env=_env())
    assert bad.returncode == 2 and "finished 'sigmapot train' run" in bad.stderr


def _env():
    import os
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_finetune_from_exported_model_and_shallow_ensemble(si_data, tmp_path):
    base = train(config(si_data, tmp_path / "base", epochs=2, **{"model.shared_descriptor": True}),
                 progress=False)
    tuned = train(config(si_data, tmp_path / "tuned", epochs=2, init=str(base / "model.pt")), progress=False)
    model, meta = load_run(tuned)
    assert model.shared_descriptor and model.radial_weight.shape[0] == 1
    # warm start: the first fine-tuning epoch starts from the trained weights, not from scratch
    assert float(rows(tuned)[0]["val_score"]) < float(rows(base)[0]["val_score"])
    assert meta["training"]["epochs_run"] == 2


def test_force_sigma_fit_recovers_scale_exponent_and_floor():
    from sigmapot.calibrate import FORCE_RESOLUTION, MIN_ATOMS_FOR_EXPONENT, fit_force_sigma
    rng = np.random.default_rng(0)
    raw = np.exp(rng.uniform(np.log(1e-3), np.log(0.5), 8000))
    unit = np.linalg.norm(rng.normal(size=(8000, 3)), axis=1) / np.sqrt(3)
    a, b, c = fit_force_sigma(raw, unit * np.hypot(0.8 * raw ** 0.6, 0.02))
    assert abs(b - 0.6) < 0.05 and abs(a - 0.8) < 0.08 and abs(c - 0.02) < 0.004, (a, b, c)
    # no floor in the data: the fit sigma follows the power law to the smallest spread
    a, b, c = fit_force_sigma(raw, unit * 0.8 * raw ** 0.6)
    assert abs(b - 0.6) < 0.05 and c >= FORCE_RESOLUTION, (a, b, c)
    assert np.allclose(np.hypot(a * raw ** b, c), 0.8 * raw ** 0.6, rtol=0.08), (a, b, c)
    few = MIN_ATOMS_FOR_EXPONENT - 1
    assert fit_force_sigma(raw[:few], unit[:few] * raw[:few])[1:] == (1.0, FORCE_RESOLUTION)


def test_force_sigma_fit_never_stretches_the_spread_super_linearly():
    """Errors growing as raw^2 fit b = 1 (the bound), not 2: sigma_F never outgrows the spread."""
    from sigmapot.calibrate import fit_force_sigma
    rng = np.random.default_rng(1)
    raw = np.exp(rng.uniform(np.log(1e-3), np.log(0.5), 8000))
    unit = np.linalg.norm(rng.normal(size=(8000, 3)), axis=1) / np.sqrt(3)
    a, b, c = fit_force_sigma(raw, unit * 4.0 * raw ** 2)
    assert b == pytest.approx(1.0), (a, b, c)


def test_force_floor_covers_sites_whose_force_vanishes_by_symmetry(sige_model):
    """Round-off spreads (1e-9) get an interval of at least q * FORCE_RESOLUTION, and old 4-value
    calibrations load with no floor."""
    from sigmapot.calibrate import FORCE_RESOLUTION
    model = copy.deepcopy(sige_model)
    members = torch.zeros(4, 3, 3, dtype=torch.float64)
    members[:, :, 0] = 1e-9 * torch.arange(4.0, dtype=torch.float64)[:, None]
    with torch.no_grad():
        model.calibration.copy_(torch.tensor([1.0, 1.2, 1.0, 1.6, FORCE_RESOLUTION], dtype=torch.float64))
    unc = model.uncertainty(torch.zeros(4, 3, dtype=torch.float64), members, torch.zeros(4, dtype=torch.float64))
    assert torch.all(unc["force_interval"] >= 1.6 * FORCE_RESOLUTION)
    state = {k: v for k, v in model.state_dict().items()}
    state["calibration"] = torch.tensor([1.0, 1.2, 1.0, 1.6], dtype=torch.float64)
    model.load_state_dict(state)
    assert model.calibration.tolist() == [1.0, 1.2, 1.0, 1.6, 0.0]


def test_stress_config_types_keep_stress_only_for_the_listed_groups(si_data):
    from sigmapot.train import select_stress

    frames = read_frames(si_data / "train.extxyz")
    kept = select_stress(frames, ["Elastic", "Surface"])
    assert len(kept) == len(frames)
    assert all((f.stress is not None) == (f.config_type in ("Elastic", "Surface")) for f in kept)
    assert all(f.stress is not None for f in frames)  # the caller's frames are not modified
    assert select_stress(frames, None) == frames
    with pytest.raises(DataError, match=r"\['Elastc'\].*config_types with stresses: \['AIMD-NVT', 'Elastic'"):
        select_stress(frames, ["Elastc"])


def test_shear_order_check_names_a_swapped_shear_order():
    from sigmapot.data import Frame, voigt
    from sigmapot.evaluate import EV_A3_TO_GPA, shear_order_check

    rng = np.random.default_rng(0)
    frames, preds = {"right": [], "swapped": [], "few": []}, {"right": [], "swapped": [], "few": []}
    for k in range(23):
        s = rng.normal(scale=2.0 / EV_A3_TO_GPA, size=(3, 3))
        s = s + s.T
        pred = voigt(s) + rng.normal(scale=0.02 / EV_A3_TO_GPA, size=6)
        label = s.copy()
        group = "few" if k >= 20 else "swapped" if k % 2 else "right"
        if group != "right":  # yz and xz written in each other's place
            label[1, 2], label[0, 2] = s[0, 2], s[1, 2]
            label[2, 1], label[2, 0] = s[0, 2], s[1, 2]
        frames[group].append(Frame(symbols=["Si"], positions=np.zeros((1, 3)), cell=np.eye(3) * 5,
                                   pbc=np.ones(3, bool), energy=0.0, forces=np.zeros((1, 3)), stress=label,
                                   config_type=group, source="x"))
        preds[group].append({"stress": pred})
    check = {group: shear_order_check(frames[group], preds[group]) for group in frames}
    assert check["swapped"]["suspect"] and check["swapped"]["best_other_order"] == "xz yz xy"
    assert check["swapped"]["best_other_shear_mae_GPa"] < 0.05 < check["swapped"]["shear_mae_GPa"]
    assert not check["right"]["suspect"] and check["right"]["shear_mae_GPa"] < 0.05
    # the same slip in 3 frames is reported in the numbers but not flagged (MIN_FRAMES_STRESS_CHECK = 5)
    assert check["few"]["best_other_order"] == "xz yz xy" and not check["few"]["suspect"]


def test_reorder_shear_undoes_the_order_the_check_names():
    """Every shear permutation written by a 'conversion' is flagged by shear_order_check, and reading the
    labels in the order it names (stress_shear_order) gives back the true stresses."""
    from ase.stress import voigt_6_to_full_3x3_stress
    from sigmapot.config import TrainConfig
    from sigmapot.data import Frame, reorder_shear, voigt
    from sigmapot.evaluate import EV_A3_TO_GPA, shear_order_check

    rng = np.random.default_rng(1)
    true = [(lambda a: a + a.T)(rng.normal(scale=2.0 / EV_A3_TO_GPA, size=(3, 3))) for _ in range(8)]
    preds = [{"stress": voigt(s)} for s in true]
    for written in itertools.permutations(range(3)):          # column k of the file holds component written[k]
        frames = []
        for s in true:
            v = voigt(s)
            v[3:] = v[3:][list(written)]
            label = voigt_6_to_full_3x3_stress(v)
            frames.append(Frame(symbols=["Si"], positions=np.zeros((1, 3)), cell=np.eye(3) * 5,
                                pbc=np.ones(3, bool), energy=0.0, forces=np.zeros((1, 3)), stress=label,
                                config_type="AIMD", source="x"))
        check = shear_order_check(frames, preds)
        order = "yz xz xy" if written == (0, 1, 2) else check["best_other_order"]
        assert written == (0, 1, 2) or check["suspect"]
        fixed = reorder_shear(frames + [dataclasses.replace(frames[0], config_type="Elastic")], {"AIMD": order})
        for f, s in zip(fixed, true):
            np.testing.assert_allclose(f.stress, s, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(fixed[-1].stress, frames[0].stress)   # other groups untouched
    with pytest.raises(DataError, match=r"\['Vacancy'\].*config_types with stresses: \['AIMD'\]"):
        reorder_shear(frames, {"Vacancy": "xz yz xy"})
    with pytest.raises(ConfigError, match="stress_shear_order must map"):
        TrainConfig(train=[__file__], stress_shear_order={"AIMD": "xz xy"}).validate()


def test_weight_decay_shrinks_only_the_readout_weights():
    model = SigmaModel(ModelConfig(elements=["Si"], num_channels=4, hidden=[8]))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = make_optimizer(model, learning_rate=0.1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)          # a zero gradient leaves only the decoupled decay
    optimizer.step()
    assert any(name.startswith("mlp.") for name in before)
    for name, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if name.startswith("mlp.") else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, atol=1e-15, rtol=0, msg=name)


def test_stratified_split_holds_out_every_config_type(si_data):
    import collections
    from sigmapot.train import validation_indices

    frames = read_frames(si_data / "train.extxyz")
    frames[0] = dataclasses.replace(frames[0], config_type="Lonely")      # a type with one frame
    counts = collections.Counter(f.config_type for f in frames)
    val = validation_indices(frames, 0.1, "stratified", seed=3)
    assert len(set(val)) == len(val)
    held = collections.Counter(frames[k].config_type for k in val)
    for name, n in counts.items():
        expected = 0 if n < 2 else max(1, round(0.1 * n))
        assert held[name] == expected, (name, n, held[name])
        assert n - held[name] >= 1                                          # every type stays in training
    assert validation_indices(frames, 0.1, "stratified", seed=3) == val
    most = collections.Counter(frames[k].config_type for k in validation_indices(frames, 0.99, "stratified", 3))
    assert all(most[name] == n - 1 for name, n in counts.items())           # a high fraction keeps one each
    assert validation_indices(frames, 0.1, "stratified", seed=4) != val
    # the default split is the one every published run used: the first 10 % of a seeded permutation
    random = validation_indices(frames, 0.1, "random", seed=0)
    assert random == np.random.default_rng(0).permutation(len(frames))[:round(0.1 * len(frames))].tolist()
    assert len(validation_indices(frames[:2], 0.9, "random", seed=0)) == 1   # one frame stays to train on
    with pytest.raises(ConfigError, match="validation_split must be 'random' or 'stratified'"):
        load_train_config(None, {"train": [str(si_data / "train.extxyz")], "validation_split": "by_type"})


def test_frame_metrics_and_energy_interval_coverage():
    from sigmapot.data import Frame
    from sigmapot.evaluate import energy_uncertainty_metrics, frame_metrics

    frames, preds = [], []
    for k, (err, sig) in enumerate([(0.5, 1.0), (-1.0, 2.0), (4.5, 3.0), (-8.0, 4.0)]):  # meV/atom
        n = 2 + k
        frames.append(Frame(symbols=["Si"] * n, positions=np.zeros((n, 3)), cell=np.eye(3) * 5,
                            pbc=np.ones(3, bool), energy=-5.0 * n, forces=np.zeros((n, 3)), stress=None,
                            config_type="odd" if k % 2 else "even", source="x"))
        preds.append({"energy": -5.0 * n + err * n / 1000, "energy_std": sig * n / 1000,
                      "forces": np.full((n, 3), 0.1 * k), "forces_std": np.arange(n, dtype=float)})
    rows = frame_metrics(frames, preds)
    assert [r["index"] for r in rows] == [0, 1, 2, 3] and rows[1]["config_type"] == "odd"
    assert [round(r["energy_error_meV_atom"], 9) for r in rows] == [0.5, -1.0, 4.5, -8.0]  # per atom, signed
    assert [round(r["energy_sigma_meV_atom"], 9) for r in rows] == [1.0, 2.0, 3.0, 4.0]
    assert rows[2]["force_mae"] == pytest.approx(0.2) and rows[3]["max_force_sigma"] == 4.0
    # |dE|/sigma = 0.5, 0.5, 1.5, 2: the 90 % interval (1.645 sigma) holds 3 of 4, the 50 % one (0.674) 2
    assert energy_uncertainty_metrics(rows, 0.9)["energy_interval_observed_coverage"] == 0.75
    quality = energy_uncertainty_metrics(rows, 0.5)
    assert quality["energy_interval_observed_coverage"] == 0.5
    assert quality["energy_sigma_spearman"] == pytest.approx(1.0)  # errors grow with sigma
    assert energy_uncertainty_metrics(rows[:2], 0.9)["energy_sigma_spearman"] is None  # no rank of 2 frames


def test_coverage_range_resamples_whole_frames():
    """The bootstrap range of a coverage: as wide as the frames allow, not as narrow as the atom count."""
    from sigmapot.evaluate import coverage_range

    # 22 of 25 frames covered (energies): the binomial spread, sqrt(0.88 * 0.12 / 25) = 0.065
    frames = [np.array([k >= 3]) for k in range(25)]
    lo, hi = coverage_range(frames)
    assert lo < 0.88 < hi and 0.15 < hi - lo < 0.3
    assert coverage_range(frames) == [lo, hi]                                  # deterministic
    # the same share over 60 atoms per frame: covered frame by frame (shared errors) the range is as wide
    # as for the frames alone; covered atom by atom at random, far narrower
    by_frame = [np.full(60, bool(f[0])) for f in frames]
    rng = np.random.default_rng(1)
    by_atom = [rng.random(60) < 0.88 for _ in frames]
    wide, narrow = coverage_range(by_frame), coverage_range(by_atom)
    assert wide[1] - wide[0] == pytest.approx(hi - lo, abs=1e-12)
    assert narrow[1] - narrow[0] < 0.4 * (wide[1] - wide[0])
    assert coverage_range([np.ones(5, bool)] * 4) == [1.0, 1.0]
