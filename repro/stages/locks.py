"""Who may write to an output folder: one writer per run, and one per stage.

Every `repro all` registers itself in OUT/.writers/ with the run ids it set out to finish and
holds an exclusive `flock` on its entry for as long as it lives. A second invocation whose runs
overlap a live entry's is refused in one line naming the holder; shards (`--shard i/n`, or the
ranks of `accelerate launch`) select disjoint runs and so write side by side. The kernel drops
a flock when its process dies however it dies, so an entry nobody holds is a stale lock from a
killed run: it is reported and removed.

Stages that several writers may reach (a model's token streams, a dense run needed by every
shard that evaluates that model's pruned runs, the study-level analysis) are serialised by a
per-stage flock in `repro.stages.store.run_stage`: the second writer waits, then finds the
stage done.

flock works on local disks and on NFSv4 and Lustre mounts that support POSIX locks; that is
what a shared output folder across nodes needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from repro.errors import ReproError

WRITERS = ".writers"


def _held_elsewhere(path: Path) -> bool:
    """True when another live process holds the flock on `path`."""
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


def _read_entry(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _describe(entry: dict) -> str:
    return (f"pid {entry.get('pid', '?')} on {entry.get('host', '?')}, started "
            f"{entry.get('started', '?')}: {entry.get('command', '?')}")


def live_writers(out: Path) -> list[str]:
    """The live repro processes registered as writers of `out`, described."""
    folder = out / WRITERS
    if not folder.is_dir():
        return []
    return [_describe(_read_entry(p)) for p in sorted(folder.glob("*.json"))
            if _held_elsewhere(p)]


@contextlib.contextmanager
def writer_lock(out: Path, run_ids: list[str], log=print) -> Iterator[None]:
    """Register this process as the writer of `run_ids` in `out`, or refuse in one line."""
    folder = out / WRITERS
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / f"{socket.gethostname()}-{os.getpid()}.json"
    handle: IO[bytes] | None = None
    with open(folder / ".registry", "a+b") as registry:
        fcntl.flock(registry, fcntl.LOCK_EX)  # one registration at a time
        for entry_path in sorted(folder.glob("*.json")):
            entry = _read_entry(entry_path)
            if _held_elsewhere(entry_path):
                shared = sorted(set(entry.get("runs", [])) & set(run_ids))
                if shared:
                    raise ReproError(
                        f"{out} is being written by another repro ({_describe(entry)}) that "
                        f"runs {len(shared)} of the same runs (e.g. {shared[0]}); wait for it, "
                        "stop it, or use another --out")
            else:
                log(f"removing a stale lock of a stopped run ({_describe(entry)})")
                entry_path.unlink(missing_ok=True)
        handle = open(mine, "w+b")  # noqa: SIM115 - held open for the whole run
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(["repro", *sys.argv[1:]]), "runs": sorted(run_ids),
        }).encode())
        handle.flush()
    try:
        yield
    finally:
        mine.unlink(missing_ok=True)
        handle.close()


@contextlib.contextmanager
def stage_lock(folder: Path, log=None) -> Iterator[None]:
    """Hold the exclusive lock of one stage folder (`.NAME.lock` beside it)."""
    path = folder.with_name(f".{folder.name}.lock")
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for another process that is writing {folder}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
