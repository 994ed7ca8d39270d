"""Provenance stamped on every output: code revision, package versions, device, numerics."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

import repro

PACKAGES = ("torch", "transformers", "sae-lens", "accelerate", "datasets", "tokenizers",
            "numpy", "scipy", "pandas", "matplotlib")


@functools.cache
def code_version() -> str:
    """git revision of the checkout (with -dirty), else the package version."""
    root = Path(repro.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty",
                              "--abbrev=12"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        rev = None
    if rev is not None and rev.returncode == 0 and rev.stdout.strip():
        return f"{repro.__version__}+{rev.stdout.strip()}"
    return repro.__version__


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
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device, **extra: object) -> dict:
    from repro.science.numerics import numerics

    return {"code_version": code_version(), "packages": package_versions(),
            "device": device_name(device), "numerics": numerics(), **extra}
