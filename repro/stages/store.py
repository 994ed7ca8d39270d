"""The artifact store: one folder per stage, done when its manifest is valid.

A stage writes into a hidden `.NAME.partial` sibling, then its `manifest.json` (input hash,
sha256 of every output, provenance, timings) last, then the folder is swapped into place.
A folder whose manifest is missing, unreadable, made from other inputs, or whose outputs no
longer match their recorded hashes is not done and is redone. Killing a run at any moment
therefore loses at most the stage in flight. A stage that fails removes its `.partial`
folder; one that fails for lack of disk space says so in one line (ReproError).

A folder whose files no longer match the manifest (truncated, altered) prints a warning naming
the file before the stage is redone. Two processes never write the same stage: each holds the
stage's lock (repro.stages.locks.stage_lock) while it checks and writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from repro.files import disk_error, point, sha256_file, write_json
from repro.stages.locks import stage_lock

MANIFEST = "manifest.json"


def hash_inputs(inputs: Any) -> str:
    """Stable hash of a JSON-able description of everything a stage's output depends on."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def warn(msg: str) -> None:
    """A warning that is shown even with --quiet: something on disk was not as recorded."""
    print(f"repro: warning: {msg}", file=sys.stderr, flush=True)


def read_manifest(folder: Path) -> dict | None:
    """The stage's manifest, or None when it is missing, unreadable or not of the shape
    `_write_manifest` gives it (then the stage is not done, and is redone)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return manifest if _well_formed(manifest) else None


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "stage": str, "input_hash": str, "outputs": dict, "result": dict, "provenance": dict,
    "wall_seconds": (int, float), "started": str}
"""The manifest's fields that readers use, and their JSON types (each may be absent)."""


def _well_formed(manifest: object) -> bool:
    """A JSON object whose known fields have their types, whose outputs name files inside the
    stage folder by their sha256, and whose provenance's packages and numerics are tables."""
    if not isinstance(manifest, dict):
        return False
    if any(k in manifest and (not isinstance(manifest[k], t) or isinstance(manifest[k], bool))
           for k, t in _FIELDS.items()):
        return False
    for rel, digest in manifest.get("outputs", {}).items():
        parts = Path(rel).parts
        if not isinstance(digest, str) or not parts or Path(rel).is_absolute() or ".." in parts:
            return False
    prov = manifest.get("provenance", {})
    return all(prov.get(k) is None or isinstance(prov[k], dict) for k in ("packages", "numerics"))


def fingerprint(folder: Path) -> str | None:
    """What a downstream stage depends on: the stage's inputs and the hashes of its outputs,
    so that an upstream stage redone with a different result invalidates what read it."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    return hash_inputs({"inputs": manifest.get("input_hash"), "outputs": manifest.get("outputs")})


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


class Status(StrEnum):
    """How a stage ended."""

    DONE = "done"
    """It ran and wrote its outputs."""
    SKIPPED = "skipped"
    """Its outputs were already there for the same inputs."""


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage, and in how long."""

    status: Status
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
    if not force and check_done(folder, input_hash) is None:
        return StageOutcome(Status.SKIPPED, 0.0)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with stage_lock(folder, log=warn):
        # Checked again under the lock: another writer may have finished it meanwhile.
        reason, outcome = _recheck(folder, input_hash, force)
        if outcome is not None:
            return outcome
        return _write_stage(folder, input_hash, inputs, work, provenance, reason)


def run_stages_together(
    folders: list[Path],
    inputs: list[dict],
    prepare: Callable[[list[int]], tuple[list[Callable[[Path], dict | None]], float]],
    *,
    provenance: list[dict],
    force: bool = False,
) -> list[StageOutcome]:
    """Several stages whose expensive part is shared (SAEs trained in one pass): for the
    folders not done, `prepare(positions)` does that part once and returns each one's `work`
    (writing its files as run_stage's does) and the shared part's seconds, which the
    manifests split evenly. Each folder is then written as run_stage writes it, one after
    the other, so a kill loses at most what `prepare` did and the folder being written.
    The stage locks of all pending folders are held meanwhile, in a fixed order."""
    hashes = [hash_inputs(i) for i in inputs]
    outcomes: list[StageOutcome | None] = [
        None if force or check_done(f, h) is not None else StageOutcome(Status.SKIPPED, 0.0)
        for f, h in zip(folders, hashes, strict=True)]
    pending = [i for i, o in enumerate(outcomes) if o is None]
    with contextlib.ExitStack() as locks:
        reasons = {}
        for i in sorted(pending, key=lambda i: str(folders[i])):
            folders[i].parent.mkdir(parents=True, exist_ok=True)
            locks.enter_context(stage_lock(folders[i], log=warn))
            reasons[i], outcomes[i] = _recheck(folders[i], hashes[i], force)
        todo = [i for i in pending if outcomes[i] is None]
        if todo:
            works, shared_seconds = prepare(todo)
            for i, work in zip(todo, works, strict=True):
                outcomes[i] = _write_stage(folders[i], hashes[i], inputs[i], work,
                                           provenance[i], reasons[i],
                                           shared_seconds=shared_seconds / len(todo))
    return [o for o in outcomes if o is not None]


def _recheck(folder: Path, input_hash: str, force: bool) -> tuple[str, StageOutcome | None]:
    """Under the stage's lock: why it must run, or its outcome when it need not (done
    meanwhile, or recovered from a run killed after writing its manifest)."""
    reason = "forced" if force else check_done(folder, input_hash)
    if reason is None:
        return "", StageOutcome(Status.SKIPPED, 0.0)
    tmp = folder.with_name(f".{folder.name}.partial")
    if reason == "not run yet" and check_done(tmp, input_hash) is None:
        _swap_in(tmp, folder)  # a run killed after its manifest was written: keep its work
        return reason, StageOutcome(Status.SKIPPED, 0.0, "recovered")
    if reason not in ("forced", "not run yet", "inputs changed"):
        warn(f"{folder}: {reason} (truncated, altered or deleted); redoing its stage")
    return reason, None


def _write_stage(folder: Path, input_hash: str, inputs: dict,
                 work: Callable[[Path], dict | None], provenance: dict, reason: str, *,
                 shared_seconds: float = 0.0) -> StageOutcome:
    """`work` into the .partial folder, its manifest last, then the folder swapped in."""
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    point(f"stage:{folder}:begin")
    started = time.time()
    try:
        extra = work(tmp) or {}
        seconds = time.time() - started + shared_seconds
        point(f"stage:{folder}:outputs")
        _write_manifest(tmp, folder.name, input_hash, inputs, started, seconds, extra,
                        provenance)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        full = disk_error(exc, folder)
        if full is None:
            raise
        raise full from None
    point(f"stage:{folder}:ready")
    _swap_in(tmp, folder)
    return StageOutcome(Status.DONE, seconds, reason)


def _write_manifest(tmp: Path, stage: str, input_hash: str, inputs: dict, started: float,
                    seconds: float, extra: dict, provenance: dict) -> None:
    """The manifest names every file the stage wrote with its sha256; it is written last."""
    outputs = {
        str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()
    }
    write_json(tmp / MANIFEST, {
        "stage": stage,
        "input_hash": input_hash,
        "inputs": inputs,
        "outputs": outputs,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(seconds, 3),
        "result": extra,
        "provenance": provenance,
    })


def _swap_in(tmp: Path, folder: Path) -> None:
    """Put the finished `tmp` in place of `folder`; a kill in between leaves one of the two."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
        point(f"stage:{folder}:swap")
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
