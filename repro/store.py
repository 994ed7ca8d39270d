"""The artifact store: one folder per stage, done when its manifest is valid.

A stage writes into a hidden `.NAME.partial` sibling, then its `manifest.json` (input hash,
sha256 of every output, provenance, timings) last, then the folder is swapped into place.
A folder whose manifest is missing, unreadable, made from other inputs, or whose outputs no
longer match their recorded hashes is not done and is redone. Killing a run at any moment
therefore loses at most the stage in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_inputs(inputs: Any) -> str:
    """Stable hash of a JSON-able description of everything a stage's output depends on."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_done(folder: Path, input_hash: str) -> str | None:
    """None when the stage folder is complete for these inputs, else why it is not."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "no valid manifest" if folder.exists() else "not run yet"
    if manifest.get("input_hash") != input_hash:
        return "inputs changed"
    for rel, digest in manifest.get("outputs", {}).items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if sha256_file(path) != digest:
            return f"{rel} does not match its recorded sha256"
    return None


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage: 'skipped' (already done) or 'done', and in how long."""

    status: str
    seconds: float
    reason: str = ""


def run_stage(
    folder: Path,
    inputs: dict,
    work: Callable[[Path], dict | None],
    *,
    provenance: dict,
    force: bool = False,
) -> StageOutcome:
    """Run `work(tmp_folder)` unless `folder` already holds its outputs for these inputs.

    `work` writes its files into the folder it is given and may return a dict of extra facts
    for the manifest (e.g. achieved sparsity). Returns how the stage ended.
    """
    input_hash = hash_inputs(inputs)
    reason = "forced" if force else check_done(folder, input_hash)
    if reason is None:
        return StageOutcome("skipped", 0.0)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = time.time()
    extra = work(tmp) or {}
    seconds = time.time() - started
    outputs = {
        str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
    }
    write_json(
        tmp / MANIFEST,
        {
            "stage": folder.name,
            "input_hash": input_hash,
            "inputs": inputs,
            "outputs": outputs,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_seconds": round(seconds, 3),
            "result": extra,
            "provenance": provenance,
        },
    )
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return StageOutcome("done", seconds, reason)
