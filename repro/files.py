"""Writing files so that a killed process never leaves half of one, and the kill points that
test it: the foundation every layer that writes a file uses.

`atomic_write_text` writes through a temporary name and a rename; a full disk becomes one
line naming the file (`disk_error`). Deterministic kill points for the resumption tests:
REPRO_KILL_AT=PATTERN kills the process. The artifact store (repro.stages.store) and the
atomic writer announce named events as they go:

- `stage:<folder>:begin`   the stage's `.partial` folder exists and its work is about to start
- `stage:<folder>:outputs` the work is done, the manifest is not written yet
- `stage:<folder>:ready`   the manifest is written, the folder is not swapped into place yet
- `stage:<folder>:swap`    a previous folder was moved aside and the new one is not in place yet
- `write:<file>`           half of the file's text is on disk (its temporary name)

When REPRO_KILL_AT is set and an event matches it (fnmatch), the process sends itself SIGKILL:
no handler, no cleanup, exactly what an out-of-memory killer or a preempted node does. The
variable is read at every event, so an unset variable costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import stat
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from repro.errors import ReproError

ENV = "REPRO_KILL_AT"


def point(event: str) -> None:
    """Kill this process now if REPRO_KILL_AT matches `event`."""
    pattern = os.environ.get(ENV)
    if pattern and fnmatchcase(event, pattern):
        os.kill(os.getpid(), signal.SIGKILL)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed writer
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    half = len(text) // 2
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text[:half])
            f.flush()
            point(f"write:{path}")
            f.write(text[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        full = disk_error(exc, path)
        if full is None:
            raise
        raise full from None
    finally:
        tmp.unlink(missing_ok=True)


_DISK_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_DISK_MESSAGE = re.compile(r"os error (28|27|122)\b|No space left|File too large|quota",
                           re.IGNORECASE)


def disk_error(exc: BaseException, where: Path) -> ReproError | None:
    """A one-line error when `exc` says the disk is full (or a file-size or quota limit hit)."""
    if getattr(exc, "errno", None) in _DISK_ERRNOS or _DISK_MESSAGE.search(str(exc)):
        return ReproError(f"no space left while writing {where} ({str(exc).strip()[:120]}); "
                          "free disk space (or choose another --out) and run the same command "
                          "again to resume")
    return None


def write_text_if_changed(path: Path, text: str) -> None:
    """atomic_write_text, skipped when the file already holds `text` (no needless rewrite)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    atomic_write_text(path, text)


def path_problem(path: Path) -> str:
    """Why a path that should be read is not there: missing, a loop of symbolic links, a
    folder where a file belongs or the reverse (for the one line that refuses it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        why: dict[int | None, str] = {
            errno.ELOOP: "is a loop of symbolic links",
            errno.ENOTDIR: "is missing (a file stands where a folder of its path belongs)",
            errno.EACCES: "is not accessible (permission denied)"}
        return why.get(exc.errno, "is missing")
    return "is a folder, not a file" if stat.S_ISDIR(mode) else "is not a folder"


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
