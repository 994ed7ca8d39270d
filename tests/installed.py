"""The package installed as the image installs it, outside the checkout, run as `docker run`
runs it (entrypoint.sh), for tests/test_container.py and tests/test_end_to_end.py.

The environment is a venv made outside the checkout without pip or setuptools of its own, whose
site-packages reaches the checkout venv's site-packages through one line in a .pth file: the
locked dependencies (requirements/cpu.lock, installed hash-checked by scripts/setup.sh) are
used where they are, not copied or downloaded again (2 GB), and nothing in the new venv can
shadow them. A plain path line adds that folder to sys.path without running its .pth files, so
the checkout's editable install of repro stays invisible; the new venv's own site-packages
comes first on sys.path, so `import repro` is the installed copy.

The package goes in by the Dockerfile's own `pip install` line (tests/image.py), run on the
build folder the image assembles from its build context, with the revision passed as the
image's REVISION build argument would be.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from image import ROOT, SRC, build_folder, instructions, package_install_command

PIP_SHIM = '#!/bin/sh\nexec "$(dirname "$0")/python" -m pip "$@"\n'
"""The image's venv has bin/pip; this one runs the locked pip it reaches through the .pth."""


def checkout_revision() -> str:
    """What docs/container.md passes as REVISION: the checkout's `git describe`."""
    return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty",
                           "--abbrev=12"], capture_output=True, text=True,
                          check=True).stdout.strip()


def make_env(venv: Path) -> Path:
    """A venv at `venv` that reuses the checkout venv's locked packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv),
                                                     "platbase": str(venv)}))
    (site / "locked-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (venv / "bin" / "pip").write_text(PIP_SHIM)
    (venv / "bin" / "pip").chmod(0o755)
    return venv


def image_env(venv: Path, home: Path, **extra: str) -> dict[str, str]:
    """The image's environment (Dockerfile ENV), with this venv in place of /opt/venv."""
    keep = {k: v for k, v in os.environ.items()
            if k in ("LANG", "LC_ALL", "TMPDIR", "OPENBLAS_CORETYPE", "TZ")}
    return {**keep, "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "VIRTUAL_ENV": str(venv), "HOME": str(home), "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1", "HF_HOME": str(home / "cache" / "huggingface"),
            "MPLCONFIGDIR": str(home / "matplotlib"),
            "REPRO_LOCK_FILE": str(ROOT / "requirements" / "cpu.lock"), **extra}


def install(venv: Path, build: Path, revision: str) -> subprocess.CompletedProcess:
    """The Dockerfile's package RUN line, with this venv's pip and `build` for SRC."""
    command = package_install_command(instructions()).replace(SRC, str(build))
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                          env=image_env(venv, venv.parent, REVISION=revision), timeout=600)


def entrypoint(venv: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`docker run IMAGE ARGS`: entrypoint.sh with the image's environment, from `cwd`."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(ROOT / "entrypoint.sh"), *args], capture_output=True, text=True,
                          cwd=cwd, env=image_env(venv, cwd, **env), timeout=7200)


@dataclass(frozen=True)
class Installed:
    """A package installed the image's way and the tiny run it made."""

    venv: Path
    build: Path
    revision: str
    out: Path
    run: subprocess.CompletedProcess
    seconds: float


def install_and_run(base: Path) -> Installed:
    """Assemble the build folder, install it into a fresh venv under `base` and run `docker
    run repro:cpu` (no arguments: the CPU image's default, `all --profile tiny`)."""
    assert not base.resolve().is_relative_to(ROOT), "the install must be outside the checkout"
    revision = checkout_revision()
    build = build_folder(base / "src")
    venv = make_env(base / "venv")
    done = install(venv, build, revision)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = base / "results"
    start = time.monotonic()
    run = entrypoint(venv, cwd=base / "work", REPRO_PROFILE="tiny", REPRO_OUT=str(out))
    return Installed(venv, build, revision, out, run, time.monotonic() - start)


# ---- the same run from another install location --------------------------------------------

RUN_PARTS = ("study.toml", "tokens", "variants", "runs")
"""What a run folder holds before the study-level stages (analysis, tables, figures, method
controls, claims, verification, report), which a second install redoes in full."""
REDONE = ("tokens/gemma-2-tiny", "variants/gemma-2-tiny/dense/0",
          "variants/gemma-2-tiny/wanda/50", "runs/gemma-2-tiny/dense/0",
          "runs/gemma-2-tiny/wanda/50")
"""The per-model, per-variant and per-run stages the second install redoes: gemma-2-tiny has a
pre-trained SAE, so its SAEs' cfg.json and its transfer.json are among them."""


def output_files(out: Path) -> dict[str, Path]:
    """Every file a run wrote, by path in the run folder (not the writers' and stages' lock
    files, which start with a dot)."""
    return {str(p.relative_to(out)): p for p in sorted(out.rglob("*"))
            if p.is_file() and not any(s.startswith(".") for s in p.relative_to(out).parts)}


def rerun_elsewhere(first: Installed, base: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """A second install at `base` redoes REDONE and the study-level stages of a hard-linked
    copy of the first run; returns the copy and the run."""
    venv = make_env(base / "second-venv")
    done = install(venv, first.build, first.revision)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = base / "results"
    shutil.copytree(first.out, out, copy_function=os.link,
                    ignore=lambda d, names: [n for n in names if n.startswith(".")])
    for rel in REDONE:
        shutil.rmtree(out / rel)
    for path in out.iterdir():
        if path.name not in RUN_PARTS:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return out, entrypoint(venv, cwd=base / "work", REPRO_PROFILE="tiny", REPRO_OUT=str(out))


def rewritten(first: Path, second: Path) -> list[str]:
    """The files of `second` that are not the hard links copied from `first`."""
    files = output_files(second)
    return sorted(rel for rel, path in files.items()
                  if not (first / rel).is_file() or not os.path.samefile(path, first / rel))


WALL_CLOCK = {"started", "wall_seconds", "train_seconds", "group_train_seconds", "seconds"}
"""JSON keys that hold wall-clock times (manifests, method_controls.json): different in any
two runs, wherever installed. A manifest's `outputs` (the sha256 of its files) are set aside
too: the files themselves are compared, and one with a time in it hashes differently."""
REPORT_TIMES = "Wall time per stage"
"""The report's last section, and its total wall time line: times again."""


def _without_clock(value: object) -> object:
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


def comparable(path: Path, out: Path) -> bytes:
    """A file's bytes with its own run folder's path and wall-clock fields set aside."""
    data = path.read_bytes().replace(str(out).encode(), b"<RUN>")
    if path.suffix == ".json":
        doc = _without_clock(json.loads(data))
        if path.name == "manifest.json":
            doc.pop("outputs")
        return json.dumps(doc, sort_keys=True).encode()
    if path.name in ("report.md", "report.html"):
        data = re.sub(rb"total wall time: [0-9.]+ s", b"total wall time", data)
        return data.split(REPORT_TIMES.encode())[0]
    return data


def differences(first: Path, second: Path, names: list[str]) -> list[str]:
    """The files among `names` whose comparable bytes differ between the two run folders."""
    return [n for n in names if not (first / n).is_file()
            or comparable(first / n, first) != comparable(second / n, second)]


def leaked(out: Path, places: list[Path]) -> list[str]:
    """`file: place` for every output file that holds one of `places` (absolute paths)."""
    needles = {str(p): str(p).encode() for p in places}
    return [f"{rel}: {name}" for rel, path in output_files(out).items()
            for name, needle in needles.items() if needle in path.read_bytes()]
