"""Logs a person reads: off a terminal, no library draws a progress bar into `repro`'s output;
on a terminal the bars stay."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

PRUNE = ["-m", "repro", "prune", "--profile", "tiny", "--run", "gemma-3-tiny/magnitude/50"]
BAR = ("\r", "%|")
"""What a redrawn progress bar leaves in a stream: carriage returns and tqdm's `NN%|` gauge."""


def _env() -> dict[str, str]:
    from repro.cli import PROGRESS_BARS_OFF

    return {k: v for k, v in os.environ.items() if k not in PROGRESS_BARS_OFF}


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (stdout on a pipe); returns the exit code, stdout
    and what the terminal showed."""
    leader, follower = pty.openpty()
    # a terminal of 0 columns (a fresh pty's size) gets bars of width 0: give it 24 x 100
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    out = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=300), out, shown.decode(errors="replace")


def test_a_command_logged_to_a_pipe_draws_no_progress_bar(tmp_path: Path) -> None:
    """`repro prune` loads a model (transformers' "Loading weights" bar). Negative control: the
    same command with stderr on a terminal draws the bar, so its absence in the pipe is the
    CLI's doing and the check could see one."""
    piped = subprocess.run([sys.executable, *PRUNE, "--out", str(tmp_path / "piped")],
                           env=_env(), capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert "prune done; pruned model written to" in piped.stdout
    assert not any(mark in piped.stderr + piped.stdout for mark in BAR), piped.stderr[:300]
    code, _, shown = _on_a_terminal([*PRUNE, "--out", str(tmp_path / "tty")], tmp_path)
    assert code == 0, shown[-500:]
    assert "Loading weights" in shown and all(mark in shown for mark in BAR), shown[:300]


# After the CLI's setup, each library's own switch, as each reads it on import.
SWITCHES = """
import contextlib, io, json
from repro.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(["list"])
from tqdm.auto import tqdm
from datasets.utils import are_progress_bars_disabled as datasets_off
import huggingface_hub.utils as hub
import transformers.utils.logging as tf
list(tqdm(range(3), desc="sae-lens-like"))
print(json.dumps({"tqdm": bool(tqdm(range(1)).disable), "hub": hub.are_progress_bars_disabled(),
                  "datasets": datasets_off(),
                  "transformers": not tf.is_progress_bar_enabled()}))
"""


@pytest.mark.parametrize("terminal", [False, True])
def test_every_librarys_bars_follow_the_terminal(tmp_path: Path, terminal: bool) -> None:
    """tqdm (sae-lens's training bar, GGUF conversion), huggingface_hub, datasets and
    transformers: all off when stderr is a pipe; all on when it is a terminal (the control)."""
    if terminal:
        code, out, shown = _on_a_terminal(["-c", SWITCHES], tmp_path)
    else:
        done = subprocess.run([sys.executable, "-c", SWITCHES], env=_env(), capture_output=True,
                              text=True, timeout=120)
        code, out, shown = done.returncode, done.stdout, done.stderr
    assert code == 0, shown[-500:]
    off = not terminal
    assert json.loads(out.strip().splitlines()[-1]) == {
        "tqdm": off, "hub": off, "datasets": off, "transformers": off}
    assert ("sae-lens-like" in shown) is terminal
