"""The one place that sets seeds and determinism flags; what it set goes into manifests."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> dict:
    """Seed Python, NumPy and torch (all devices) and ask torch for deterministic kernels."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return {"seed": seed, "deterministic_algorithms": True,
            "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"]}
