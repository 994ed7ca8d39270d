"""Provenance stamped on every output: code revision, package versions, device, numerics."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import repro

if TYPE_CHECKING:  # torch is imported where it is used: `repro --version` needs none of it
    import torch

PACKAGES = ("torch", "transformers", "sae-lens", "accelerate", "datasets", "tokenizers",
            "numpy", "scipy", "pandas", "matplotlib")


CHECKOUT = Path(repro.__file__).resolve().parent.parent
"""The folder above the package: a checkout's root when it holds .git."""
REVISION_FILE = Path(repro.__file__).resolve().parent / "REVISION"
"""Written into an installed package by its build (setup.py): the revision it was built from."""


@functools.cache
def code_version() -> str:
    """The package version with the code's revision: in a checkout the git revision (with
    -dirty), in an installed package the revision its build recorded (REVISION_FILE), else
    the bare version."""
    rev = None
    if (CHECKOUT / ".git").exists():  # a checkout (or an editable install of one)
        try:
            run = subprocess.run(["git", "-C", str(CHECKOUT), "describe", "--always", "--dirty",
                                  "--abbrev=12"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            run = None
        if run is not None and run.returncode == 0:
            rev = run.stdout.strip()
    elif REVISION_FILE.is_file():
        rev = REVISION_FILE.read_text(encoding="utf-8").strip()
    return f"{repro.__version__}+{rev}" if rev else repro.__version__


@functools.cache
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device, **extra: object) -> dict:
    from repro.science.numerics import numerics

    return {"code_version": code_version(), "packages": package_versions(),
            "device": device_name(device), "numerics": numerics(), **extra}
