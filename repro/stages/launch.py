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
from repro.study.rules import FieldError, Rule, whole

MAX_PROCESSES = 2**16
LAUNCH_ENV = {
    "WORLD_SIZE": whole(1, MAX_PROCESSES, "processes of the launch"),
    "RANK": whole(0, MAX_PROCESSES - 1, "this process's place in the launch, below WORLD_SIZE"),
    "LOCAL_RANK": whole(0, MAX_PROCESSES - 1, "this process's GPU on its machine"),
    "LOCAL_WORLD_SIZE": whole(1, MAX_PROCESSES, "processes of the launch on this machine"),
}
"""The launcher's variables repro reads (accelerate launch, torchrun), each with its rule."""
FIX = "unset it or fix the launcher configuration"


def int_env(name: str) -> int | None:
    """The variable as a whole number within its rule; None when unset (or set empty)."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        raise ReproError(f"environment: {name}={value!r} is not an integer; {FIX}") from None
    rule: Rule = LAUNCH_ENV[name]
    try:
        rule.check(name, number, FIX)
    except FieldError as exc:
        raise ReproError(f"environment: {exc}") from None
    return number


def check_launch_env() -> None:
    """Every launcher variable repro reads, checked before anything is written."""
    for name in LAUNCH_ENV:
        int_env(name)
    world, rank = int_env("WORLD_SIZE"), int_env("RANK")
    if world is not None and rank is not None and rank >= world:
        raise ReproError(f"environment: RANK={rank} is not below WORLD_SIZE={world}; {FIX}")


def launched_shard(shard: str | None) -> str | None:
    """The shard this process works on: --shard, else the launcher's RANK/WORLD_SIZE."""
    world = int_env("WORLD_SIZE")
    if world is None or world <= 1:
        return shard
    if shard:
        raise ReproError(f"--shard {shard} and a {world}-process launch (WORLD_SIZE) both split "
                         "the runs; drop --shard or launch one process")
    rank = int_env("RANK")
    if rank is None:
        raise ReproError("WORLD_SIZE is set but RANK is not; start the processes with "
                         "accelerate launch or torchrun")
    return f"{rank}/{world}"


def launched_device(requested: str | None, study_device: str) -> str | None:
    """On CUDA, each launched process takes the GPU of its LOCAL_RANK (unless --device)."""
    local = int_env("LOCAL_RANK")
    if requested or local is None or (study_device != "cuda" and requested != "cuda"):
        return requested
    return f"cuda:{local}"
