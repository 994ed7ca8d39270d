"""What the bad-input tests share: the tiny study with absolute asset paths, and the check that
a command refused in one line, with exit code 2, no traceback and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro import cli
from repro.study.reader import PROFILES_DIR, profile_path

ASSETS = (PROFILES_DIR.parents[1] / "assets" / "tiny").resolve()
TINY = profile_path("tiny").read_text().replace('"../../assets/tiny', f'"{ASSETS}')


def files(root: Path) -> set[Path]:
    """Every path under `root` (symbolic links not followed)."""
    return {p.relative_to(root) for p in root.rglob("*")}


def check_refused(code: int, err: str, message: str, root: Path, before: set[Path]) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert files(root) == before, sorted(map(str, files(root) - before))


def run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse usage errors exit from inside parse_args
        code = exc.code
    return code, capsys.readouterr().err
