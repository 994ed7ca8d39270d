"""Deterministic kill points for the resumption tests: REPRO_KILL_AT=PATTERN kills the process.

The artifact store and the atomic writer announce named events as they go:

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

import os
import signal
from fnmatch import fnmatchcase

ENV = "REPRO_KILL_AT"


def point(event: str) -> None:
    """Kill this process now if REPRO_KILL_AT matches `event`."""
    pattern = os.environ.get(ENV)
    if pattern and fnmatchcase(event, pattern):
        os.kill(os.getpid(), signal.SIGKILL)
