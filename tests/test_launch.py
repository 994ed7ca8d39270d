"""Several processes on one study: the launcher's RANK/WORLD_SIZE pick the shard, and two
processes started by `accelerate launch` finish the tiny profile with verified tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.errors import ReproError
from repro.stages.launch import launched_device, launched_shard


def test_rank_and_world_size_choose_the_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_shard(None) is None and launched_shard("1/3") == "1/3"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert launched_shard(None) == "3/4"
    with pytest.raises(ReproError, match="both split the runs"):
        launched_shard("0/2")
    monkeypatch.setenv("RANK", "three")
    with pytest.raises(ReproError, match="RANK='three' is not an integer"):
        launched_shard(None)


def test_local_rank_chooses_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_device(None, "cuda") == "cuda:1"
    assert launched_device("cuda:0", "cuda") == "cuda:0"  # an explicit --device wins
    assert launched_device(None, "cpu") is None  # a CPU study stays on the CPU
    monkeypatch.delenv("LOCAL_RANK")
    assert launched_device(None, "cuda") is None


@pytest.mark.slow
def test_accelerate_launch_two_processes_verifies(tmp_path: Path) -> None:
    """`accelerate launch --multi_gpu` is accelerate's torchrun launcher; on a machine without
    GPUs it starts the processes all the same and each runs on the study's device (the CPU)."""
    out = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    # two processes on two cores, each told to use one thread and the default ATen kernels:
    # repro's pins must still give the blessed run's numbers (verified below)
    env.update(OMP_NUM_THREADS="1", ATEN_CPU_CAPABILITY="default")
    res = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "repro", "all",
         "--profile", "tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=1800, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("verification PASS") >= 1, res.stdout + res.stderr[-2000:]
    assert json.loads((out / "verification.json").read_text())["ok"] is True
    # Each stage ran once: the two processes split the variants and shared the dense runs.
    manifests = list(out.rglob("manifest.json"))
    assert len(manifests) == len({m.parent for m in manifests})
    # the first process to finish left the study to the other, with exit code 0 (a launcher
    # stops every process when one exits otherwise)
    assert "the last process to finish completes the study" in res.stderr
