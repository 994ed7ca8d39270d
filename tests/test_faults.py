"""Faults short of a kill: two writers, a full disk, GPU out-of-memory, a truncated manifest."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from repro.errors import ReproError
from repro.inputs import families
from repro.science.activations import read_chunks
from repro.stages.context import Context, ModelHolder
from repro.stages.locks import WRITERS, writer_lock
from repro.stages.pipeline import activations_stage, prune_stage, tokens_stage
from repro.stages.store import MANIFEST, read_manifest, run_stage
from repro.study.reader import load_study, profile_path
from repro.study.spec import Variant

ROOT = Path(__file__).resolve().parent.parent


# ---- one writer per stage, one per run -------------------------------------------------------

def test_second_writer_of_a_stage_waits_then_finds_it_done(tmp_path: Path) -> None:
    calls: list[str] = []

    def slow(tmp: Path) -> None:
        calls.append(threading.current_thread().name)
        time.sleep(1.0)
        (tmp / "out.txt").write_text("x")

    outcomes: dict[str, str] = {}

    def go(name: str) -> None:
        outcomes[name] = run_stage(tmp_path / "s", {"a": 1}, slow, provenance={}).status

    first = threading.Thread(target=go, args=("first",), name="first")
    first.start()
    time.sleep(0.3)
    go("second")
    first.join()
    assert calls == ["first"] and outcomes == {"first": "done", "second": "skipped"}


HOLDER = """
import sys, time
from pathlib import Path
from repro.stages.locks import writer_lock
with writer_lock(Path(sys.argv[1]), sys.argv[2:]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(out: Path, *runs: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), *runs],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_overlapping_writer_is_refused_and_a_killed_one_is_stale(tmp_path: Path) -> None:
    holder = _hold(tmp_path, "m/dense/0", "m/wanda/50")
    try:
        with pytest.raises(ReproError) as err, writer_lock(tmp_path, ["m/wanda/50"]):
            pass
        assert f"pid {holder.pid}" in str(err.value) and "m/wanda/50" in str(err.value)
        with writer_lock(tmp_path, ["m/magnitude/50"]):  # a disjoint shard writes alongside
            assert len(list((tmp_path / WRITERS).glob("*.json"))) == 2
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    said: list[str] = []
    with writer_lock(tmp_path, ["m/wanda/50"], log=said.append):
        pass
    assert len(said) == 1 and f"stale lock of a stopped run (pid {holder.pid}" in said[0]
    assert list((tmp_path / WRITERS).glob("*.json")) == []


def test_second_repro_all_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = _hold(out, "gemma-3-tiny/dense/0")
    try:
        res = subprocess.run([sys.executable, "-m", "repro", "all", "--profile", "tiny",
                              "--out", str(out), "--quiet"], capture_output=True, text=True,
                             timeout=300)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "is being written by another repro" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [WRITERS]  # nothing else was written


# ---- full disk -------------------------------------------------------------------------------

def test_full_disk_stops_in_one_line_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """With a 500 kB file-size limit the first large token stream cannot be written (EFBIG,
    as ENOSPC would be on a full disk): one line, exit 2, nothing half-written."""
    out = tmp_path / "run"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (500_000, 500_000))

    res = subprocess.run([sys.executable, "-m", "repro", "all", "--profile", "tiny", "--out",
                          str(out), "--quiet"], capture_output=True, text=True, timeout=300,
                         preexec_fn=limit)
    assert res.returncode == 2, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "no space left while writing" in res.stderr and "sae_train" in res.stderr
    hidden = [p for p in out.rglob("*") if p.name.startswith(".") and p.name != WRITERS
              and not p.name.endswith(".lock") and p.name != ".registry"]
    assert hidden == [], hidden
    assert read_manifest(out / "tokens" / "gemma-3-tiny" / "calibration") is not None
    assert not (out / "tokens" / "gemma-3-tiny" / "sae_train").exists()


# ---- out of GPU memory -----------------------------------------------------------------------

def _context(out: Path) -> Context:
    return Context(study=load_study(profile_path("tiny")), out=out, device=torch.device("cpu"),
                   quiet=True)


def test_activations_retry_with_smaller_batches_on_out_of_memory(tmp_path: Path) -> None:
    """A forward over more than 8 sequences raises torch.OutOfMemoryError (what CUDA raises);
    the stage starts again at 16, then 8, and writes the same activations as without it."""
    ctx = _context(tmp_path)
    holder = ModelHolder(ctx)
    spec = ctx.study.models["gemma-3-tiny"]
    dense = Variant("gemma-3-tiny", "dense", 0.0)
    for stream in ctx.study.data.streams:
        tokens_stage(ctx, spec, stream, lambda: holder.tokenizer_for(spec))
    prune_stage(ctx, holder, dense)
    activations_stage(ctx, holder, dense)
    folder = ctx.variant_dir(dense, "activations")
    reference = [acts for acts, _ in read_chunks(folder)]

    def fail_big(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    model = holder.variant_model(dense)
    handle = families.decoder_layers(model)[0].register_forward_pre_hook(fail_big, with_kwargs=True)
    ctx.force = True
    try:
        outcome = activations_stage(ctx, holder, dense)
    finally:
        handle.remove()
    assert outcome.status == "done" and ctx.shrink == 1
    assert read_manifest(folder)["result"]["batch_size"] == 8
    again = [acts for acts, _ in read_chunks(folder)]
    assert torch.allclose(torch.cat(again), torch.cat(reference), atol=1e-5, rtol=1e-5)

    def fail_all(_module, args, kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    handle = families.decoder_layers(model)[0].register_forward_pre_hook(fail_all, with_kwargs=True)
    try:
        with pytest.raises(ReproError, match="out of GPU memory even at batch size 1"):
            activations_stage(ctx, holder, dense)
    finally:
        handle.remove()
    assert not (folder.parent / ".activations.partial").exists()
    assert read_manifest(folder)["result"]["batch_size"] == 8  # the last good one is kept


# ---- a manifest that is not what was written -------------------------------------------------

def test_truncated_manifest_is_reported_and_redone(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def work(tmp: Path) -> None:
        (tmp / "a.txt").write_text("a")

    run_stage(tmp_path / "s", {"x": 1}, work, provenance={})
    text = (tmp_path / "s" / MANIFEST).read_text()
    (tmp_path / "s" / MANIFEST).write_text(text[: len(text) // 2])
    assert run_stage(tmp_path / "s", {"x": 1}, work, provenance={}).status == "done"
    err = capsys.readouterr().err
    assert f"{tmp_path / 's'}: no valid manifest" in err and "redoing" in err
    assert json.loads((tmp_path / "s" / MANIFEST).read_text())["outputs"]


def test_kill_points_only_fire_when_asked(tmp_path: Path) -> None:
    """REPRO_KILL_AT really kills (SIGKILL) at the matching event and nowhere else."""
    script = ("from pathlib import Path\nfrom repro.files import atomic_write_text\n"
              "import sys\natomic_write_text(Path(sys.argv[1]) / 'a.txt', 'x' * 100)\n"
              "atomic_write_text(Path(sys.argv[1]) / 'b.txt', 'y' * 100)\n")
    env = {**os.environ, "REPRO_KILL_AT": "write:*/b.txt"}
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, cwd=ROOT)
    assert res.returncode == -signal.SIGKILL
    assert (tmp_path / "a.txt").read_text() == "x" * 100 and not (tmp_path / "b.txt").exists()
    half = [p for p in tmp_path.iterdir() if p.name.startswith(".b.txt.tmp-")]
    assert len(half) == 1 and half[0].read_text() == "y" * 50  # the temporary name, half full


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_cleanly(tmp_path: Path, signum: int) -> None:
    """Stopped while a stage is in flight: one line saying how to resume, exit code 130, the
    stage's partial folder removed, the writer entry released, completed stages kept."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "repro", "all", "--profile", "tiny", "--out",
                             str(out)], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "tokens/calibration: done" in line:
            time.sleep(0.3)
            proc.send_signal(signum)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    last = rest.strip().splitlines()[-1]
    assert last == ("repro: interrupted; completed stages are kept, run the same command again "
                    "to resume") and "Traceback" not in rest
    assert read_manifest(out / "tokens" / "gemma-3-tiny" / "calibration") is not None
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    assert list((out / WRITERS).glob("*.json")) == []
