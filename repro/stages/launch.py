"""Several processes on one study: `accelerate launch --num_processes N -m repro all ...`.

accelerate launch (like torchrun) starts N copies of the command with RANK, WORLD_SIZE and
LOCAL_RANK in their environment. `repro all` reads them: rank r works on `--shard r/N` and, on
CUDA, on GPU `cuda:<LOCAL_RANK>`. No process group is needed: the processes coordinate through
the output folder (per-stage locks, manifests), so the same command works as a Slurm job
array with `--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT` and a shared --out. Whichever
process finishes the last run also runs the analysis, tables, figures and verification.
"""

from __future__ import annotations

import os

from repro.errors import ReproError


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ReproError(f"{name}={value!r} is not an integer; unset it or fix the launcher "
                         "configuration") from None


def launched_shard(shard: str | None) -> str | None:
    """The shard this process works on: --shard, else the launcher's RANK/WORLD_SIZE."""
    world = _int_env("WORLD_SIZE")
    if world is None or world <= 1:
        return shard
    if shard:
        raise ReproError(f"--shard {shard} and a {world}-process launch (WORLD_SIZE) both split "
                         "the runs; drop --shard or launch one process")
    rank = _int_env("RANK")
    if rank is None:
        raise ReproError("WORLD_SIZE is set but RANK is not; start the processes with "
                         "accelerate launch or torchrun")
    return f"{rank}/{world}"


def launched_device(requested: str | None, study_device: str) -> str | None:
    """On CUDA, each launched process takes the GPU of its LOCAL_RANK (unless --device)."""
    local = _int_env("LOCAL_RANK")
    if requested or local is None or (study_device != "cuda" and requested != "cuda"):
        return requested
    return f"cuda:{local}"
