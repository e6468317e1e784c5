"""Training faults: kill -9 mid-epoch then --resume gives the uninterrupted model; full disks lose nothing."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sigmapot.train import load_run, save_atomic

ARGS = ["--epochs", "4", "--channels", "6", "--cutoff", "4.0", "--threads", "1", "--quiet", "--seed", "3"]


def run_cli(si_data, out, extra=()):
    cfg = out.parent / "small.yaml"
    cfg.write_text("max_frames: 24\nbatch_size: 4\nvalidation_fraction: 0.25\nmodel:\n  hidden: [16, 16]\n")
    return [sys.executable, "-m", "sigmapot.cli", "train", str(cfg), "--data", str(si_data / "train.extxyz"),
            "-o", str(out), *ARGS, *extra]


def test_kill_9_mid_epoch_then_resume_equals_uninterrupted(si_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full" / "run"
    full.parent.mkdir()
    subprocess.run(run_cli(si_data, full), check=True, timeout=600, env=env)

    part = tmp_path / "part" / "run"
    part.parent.mkdir()
    proc = subprocess.Popen(run_cli(si_data, part), env=env)
    deadline = time.time() + 300
    while not (part / "checkpoint.pt").is_file() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (part / "checkpoint.pt").is_file() and not (part / "final.pt").is_file()
    epochs_done = torch.load(part / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= epochs_done < 4
    subprocess.run(run_cli(si_data, part, ["--resume"]), check=True, timeout=600, env=env)
    a, _ = load_run(full)
    b, _ = load_run(part)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=0, msg=name)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1}, path)

    def full_disk(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="previous version of that file is intact"):
        save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert list(tmp_path.iterdir()) == [path]
