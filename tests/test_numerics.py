"""The pinned CPU numerics: set before the first kernel, recorded, and the same bits whatever
the environment asks for (threads, ATen capability, MKL and oneDNN dispatch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from repro.errors import ReproError
from repro.science.numerics import comparable, mode

# A little of everything the pipeline's arithmetic uses: GEMMs (MKL, oneDNN), vectorised
# exp/log and reductions (ATen), a softmax, in float32; its bytes' sha256 is printed.
WORK = """
import hashlib, json, torch
from repro.science.numerics import pin_cpu
record = pin_cpu()
g = torch.Generator().manual_seed(0)
x, w = torch.randn(1031, 97, generator=g), torch.randn(97, 515, generator=g)
y = torch.nn.functional.linear(x, w.T.contiguous()) @ torch.randn(515, 33, generator=g)
z = torch.log_softmax(torch.exp(-y.abs()) * y, dim=-1).sum(0) + y.sum(0) * 1e-3
print(json.dumps({"numerics": record,
                  "sha": hashlib.sha256(z.numpy().tobytes()).hexdigest()}))
"""


def _work(**env: str) -> dict:
    full = {k: v for k, v in os.environ.items()
            if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "REPRO_NUMERICS",
                         "OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", WORK], env={**full, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


SETTINGS = [{}, {"OMP_NUM_THREADS": "1"}, {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO"},
            {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "ALL"},
            # how idle OpenMP threads wait (repro.cli makes them sleep): no bit may move
            {"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "ACTIVE"}]


def test_pinned_runs_give_the_same_bits_whatever_the_environment_asks() -> None:
    got = [_work(**env) for env in SETTINGS]
    assert len({g["sha"] for g in got}) == 1, [g["sha"][:12] for g in got]
    for g in got:
        n = g["numerics"]
        assert (n["mode"], n["threads"], n["cpu_capability"], n["mkl_cbwr"]) == (
            "pinned", 2, "AVX2", "COMPATIBLE")
    assert [g["numerics"]["omp_wait_policy"] for g in got[-3:]] == [None, "PASSIVE", "ACTIVE"]


def test_native_mode_leaves_the_machine_its_choice() -> None:
    n = _work(REPRO_NUMERICS="native", OMP_NUM_THREADS="1", ATEN_CPU_CAPABILITY="default")
    assert (n["numerics"]["mode"], n["numerics"]["threads"]) == ("native", 1)
    assert n["numerics"]["cpu_capability"] == "DEFAULT"


def test_pinning_after_a_kernel_ran_fails_loudly() -> None:
    code = ("import torch; torch.ones(3).exp(); "
            "from repro.science.numerics import pin_cpu; pin_cpu()")
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "before repro.science.numerics.pin_cpu() ran" in done.stderr


def test_mode_and_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRO_NUMERICS", "fast")
    with pytest.raises(ReproError, match="REPRO_NUMERICS='fast'"):
        mode()
    a = {"mode": "pinned", "threads": 2, "cpu_capability": "AVX2", "cpu": "A"}
    assert comparable(a, {**a, "cpu": "B"}) == []  # another CPU model is the point of pinning
    assert comparable(a, {**a, "threads": 1}) == ["threads: 2 vs 1"]
    # how threads wait changes no arithmetic: recorded, never a difference between runs
    assert comparable({**a, "omp_wait_policy": "PASSIVE"}, {**a, "omp_wait_policy": None}) == []


def test_without_the_pins_the_same_settings_change_the_bits() -> None:
    """The negative control of the pinned test: unpinned, ATen's capability and MKL's branch
    each change the result, so the equality above is the pins' doing."""
    native = dict(REPRO_NUMERICS="native")
    base = _work(**native)["sha"]
    assert _work(**native, ATEN_CPU_CAPABILITY="default")["sha"] != base
    assert _work(**native, MKL_CBWR="COMPATIBLE")["sha"] != base


# A `repro` process: the CLI's politeness, then torch, then one parallel region, then half a
# second of serial Python during which OpenMP's worker has nothing to do. Prints how much CPU
# the process's other threads burnt meanwhile (utime + stime of /proc/self/task/*/stat).
IDLE = """
import contextlib, io, json, os, sys, time
from repro.cli import main
before_torch = "torch" in sys.modules
with contextlib.redirect_stdout(io.StringIO()):
    main(["list", "--profile", "tiny"])
import torch
torch.set_num_threads(2)
x = torch.randn(256, 256)
for _ in range(20):
    x = torch.tanh(x @ x / 256)  # wakes the worker thread

def others():
    me, total = os.getpid(), 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != me:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")

start, t = others(), time.perf_counter()
while time.perf_counter() - t < 0.5:
    pass
print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"), "torch_early": before_torch,
                  "idle_cpu": others() - start}))
"""


def _idle(**env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", IDLE], env={**full, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_repro_process_sleeps_while_its_threads_wait() -> None:
    """The CLI sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP, so an idle worker thread
    burns no CPU. Negative control: asked to spin (ACTIVE, which the CLI leaves alone), the
    same worker burns CPU through the serial half second (even when it gets only a share of a
    core on a loaded machine)."""
    polite, spinning = _idle(), _idle(OMP_WAIT_POLICY="ACTIVE")
    assert polite["policy"] == "PASSIVE" and not polite["torch_early"]
    assert spinning["policy"] == "ACTIVE"
    assert polite["idle_cpu"] <= 0.03, polite
    assert spinning["idle_cpu"] >= 0.05 and spinning["idle_cpu"] > 3 * polite["idle_cpu"], (
        polite, spinning)
