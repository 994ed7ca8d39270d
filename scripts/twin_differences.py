"""How far each pruning method is from its slow reference twin, per model family: the numbers
docs/beyond.md quotes, which the twin tests only bound.

    OMP_WAIT_POLICY=PASSIVE python scripts/twin_differences.py    (about 10 s on 2 cores)

The twins are the tests' own (`tests/test_prune.py`: Wanda and magnitude N:M;
`tests/test_sparsegpt.py`: SparseGPT step by step), on the tests' tiny random models of the
six families (3 layers, hidden size 16, 6 calibration sequences of 12 tokens). Prints one
line per family and case: mask entries that differ out of all, and for SparseGPT the largest
absolute difference of the pruned weights (with the largest |W| for scale), on float64
models and on float32 models as the CPU profiles load them.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402  (the tests' conftest pins the CPU arithmetic first)
from conftest import ARCHS, make_model, random_ids  # noqa: E402
from test_prune import slow_magnitude_n_m, slow_wanda  # noqa: E402
from test_sparsegpt import fast_sparsegpt, slow_sparsegpt  # noqa: E402

from repro.science import prune  # noqa: E402
from repro.study.methods import Pattern  # noqa: E402


def differing(got: dict, want: dict) -> str:
    """Mask entries that differ, out of all."""
    return (f"{sum(int((got[n] != want[n]).sum()) for n in got)}/"
            f"{sum(m.numel() for m in got.values())}")


def masks() -> None:
    """Wanda (unstructured, 2:4, 4:8) and magnitude N:M against their twins."""
    for arch in ARCHS:
        model, calib = make_model(arch, n_layers=3, hidden=16), random_ids(6, 12)
        for pattern in ("unstructured", "2:4", "4:8"):
            p = Pattern.parse(pattern)
            got = prune.prune_wanda(copy.deepcopy(model), calib, 0.5, batch_size=4, pattern=p)
            want = slow_wanda(model, calib, 0.5, p)
            line = f"wanda {arch:20s} {pattern:12s}: {differing(got, want)}"
            if p.m:
                mag = prune.prune_magnitude(copy.deepcopy(model), p.sparsity, p)
                line += f"; magnitude {differing(mag, slow_magnitude_n_m(model, p))}"
            print(line + " mask entries differ", flush=True)


def sparsegpt(dtype: torch.dtype, cases: list[tuple[str, int]]) -> None:
    """SparseGPT at 50 % against its twin: masks and pruned weights."""
    for arch in ARCHS:
        model, calib = make_model(arch, n_layers=3, hidden=16, dtype=dtype), random_ids(6, 12)
        for pattern, block in cases:
            p = Pattern.parse(pattern)
            want_masks, want = slow_sparsegpt(model, calib, 0.5, p, block)
            got_masks, got = fast_sparsegpt(model, calib, 0.5, p, block)
            diff = max(float((got[n].double() - want[n].double()).abs().max()) for n in got)
            scale = max(float(w.abs().max()) for w in want.values())
            print(f"sparsegpt {str(dtype)[6:]:8s} {arch:20s} {pattern:12s} block {block:3d}: "
                  f"{differing(got_masks, want_masks)} mask entries differ, max |dW| "
                  f"{diff:.1e} (max |W| {scale:.2f})", flush=True)


if __name__ == "__main__":
    masks()
    sparsegpt(torch.float64, [("unstructured", 128), ("unstructured", 8), ("2:4", 8)])
    sparsegpt(torch.float32, [("unstructured", 8), ("2:4", 8)])
