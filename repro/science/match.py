"""Matching two SAEs by their decoder directions (docs/design.md, "Definitions").

A feature is identified with its unit-normalised decoder row. Two SAEs (two seeds, or the
dense model's and a pruned model's) are compared through the n x m cosine matrix of those
rows; the one-to-one Hungarian assignment maximising the total cosine gives each feature of
the first SAE a partner, and its survival score is the matched cosine (it survives by
repro.science.survival's rule, cosine >= tau). The max-cosine, which lets several features
share a partner, is reported beside it: the gap between the two shows how much the one-to-one
constraint costs.

Cost, measured on the project's shared 2-core CPU (scipy 1.17, torch 2.13, float32) for
16384 x 16384 with d = 1152 (gemma-3-1b's width), exact `linear_sum_assignment`, no
approximation (timings varied by up to 2x between repeats on this machine):
  - `cosine_matrix`: 12-16 s on CPU (one matmul; on a GPU, well under a second).
    `max_cosine`: 8-13 s, never more than one `block` x m block in memory.
  - `hungarian_match` end to end, two independent random decoders (the hard case, mean
    matched cosine 0.11): 50-80 s in `linear_sum_assignment`, 92 s in all; a noisy permuted
    copy (what a pruned model's SAE resembles, mean matched cosine 0.78): 16-30 s, 47 s in
    all. Peak resident memory 5.6 GiB: the float32 matrix plus scipy's float64 copy and
    its negation for `maximize=True`.
  About a minute per pair is affordable for the 17 conditions plus the RQ1 seed pairs, so
  the exact algorithm is kept. scipy's assignment runs on one core: `hungarian_many` matches
  independent pairs in worker processes, as many as the cores (one left for the parent) and
  host memory (22 bytes per cosine) allow, one on a 2-core machine.

Dead features whose decoder row is zero have cosine 0 with everything (normalisation keeps a
zero row at zero instead of dividing by zero).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from repro.science.survival import survival_rate, survives
from repro.study.thresholds import SURVIVAL_TAU

DEFAULT_BLOCK = 2048
"""Rows of `a` per step: 2048 x 16384 float32 is 128 MiB on the device."""

Matrix = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class Match:
    """One-to-one matching of the rows of `a` (n features) to the rows of `b` (m features)."""

    index: np.ndarray
    """(n,) int64: the row of `b` matched to each row of `a`; -1 when unmatched (only if n > m)."""
    cosine: np.ndarray
    """(n,) float32: the matched cosine, the survival score; 0.0 when unmatched."""
    max_cosine: np.ndarray
    """(n,) float32: the best cosine in `b` for each row of `a`, ignoring one-to-one."""

    def __post_init__(self) -> None:
        n = len(self.index)
        if self.cosine.shape != (n,) or self.max_cosine.shape != (n,):
            raise ValueError("index, cosine and max_cosine must be 1-D of the same length")

    def survived(self, tau: float = SURVIVAL_TAU) -> np.ndarray:
        """Boolean survival per row of `a` (repro.science.survival.survives)."""
        return survives(self.cosine, tau)

    def shared_fraction(self, tau: float = SURVIVAL_TAU) -> float:
        """Fraction of rows of `a` that survive: RQ1's shared fraction, RQ2's survival rate."""
        return survival_rate(self.cosine, tau)

    @property
    def mean_cosine(self) -> float:
        """Mean matched cosine over all rows of `a` (unmatched rows count as 0)."""
        return float(self.cosine.mean()) if len(self.cosine) else float("nan")


def _as_tensor(x: Matrix) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x.detach()
    if t.ndim != 2:
        raise ValueError(f"decoder matrix must be 2-D (features x d_model), got {tuple(t.shape)}")
    return t


def _unit_rows(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Rows scaled to unit norm; zero rows stay zero (normalize clamps the norm at eps)."""
    return torch.nn.functional.normalize(x.to(dtype), dim=1)


def _blocks(a: Matrix, b: Matrix, block: int):
    """Yield (row slice, cosine block) pairs; `b` is normalised once, `a` one block at a time."""
    ta, tb = _as_tensor(a), _as_tensor(b)
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"decoder widths differ: {ta.shape[1]} vs {tb.shape[1]}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    # at least float32: bf16 decoders would lose the third digit of the cosine
    dtype = torch.promote_types(torch.promote_types(ta.dtype, tb.dtype), torch.float32)
    bt = _unit_rows(tb.to(ta.device), dtype).T
    for start in range(0, ta.shape[0], block):
        rows = slice(start, min(start + block, ta.shape[0]))
        yield rows, _unit_rows(ta[rows], dtype) @ bt


def cosine_matrix(a: Matrix, b: Matrix, *, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """The n x m cosine matrix between the rows of `a` and `b`, as float32 on the CPU.

    Computed on the device of `a` one block of rows at a time, so the device never holds more
    than `block` x m cosines; the CPU holds the whole result (1 GiB for 16384 x 16384),
    which the Hungarian assignment needs anyway.
    """
    n, m = _as_tensor(a).shape[0], _as_tensor(b).shape[0]
    out = np.empty((n, m), dtype=np.float32)
    for rows, cos in _blocks(a, b, block):
        out[rows] = cos.float().cpu().numpy()
    return out


def max_cosine(a: Matrix, b: Matrix, *,
               block: int = DEFAULT_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `a`: its best cosine in `b` (float32) and that row's index (int64).

    Never materialises the full matrix: memory is one block, which makes the many-to-one
    comparison cheap even where the Hungarian assignment is not run.
    """
    n = _as_tensor(a).shape[0]
    if _as_tensor(b).shape[0] == 0:
        raise ValueError("b has no rows: no best match exists")
    values = np.empty(n, dtype=np.float32)
    index = np.empty(n, dtype=np.int64)
    for rows, cos in _blocks(a, b, block):
        best, arg = cos.max(dim=1)
        values[rows] = best.float().cpu().numpy()
        index[rows] = arg.cpu().numpy()
    return values, index


def hungarian_from_cosine(cos: np.ndarray) -> Match:
    """Exact one-to-one assignment maximising the total cosine of an n x m cosine matrix.

    With n <= m every row of `a` gets a distinct partner. With n > m only m rows can be
    matched; the others get index -1 and cosine 0.0, so they count as not surviving.
    """
    cos = np.asarray(cos)
    if cos.ndim != 2:
        raise ValueError(f"cosine matrix must be 2-D, got shape {cos.shape}")
    if not np.isfinite(cos).all():
        raise ValueError("cosine matrix has NaN or inf: a decoder row is not finite")
    n = cos.shape[0]
    index = np.full(n, -1, dtype=np.int64)
    matched = np.zeros(n, dtype=np.float32)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    index[rows] = cols
    matched[rows] = cos[rows, cols]
    best = cos.max(axis=1).astype(np.float32) if cos.shape[1] else np.zeros(n, np.float32)
    return Match(index=index, cosine=matched, max_cosine=best)


def hungarian_match(a: Matrix, b: Matrix, *, block: int = DEFAULT_BLOCK) -> Match:
    """Match the decoder rows of SAE `a` (n x d) to those of SAE `b` (m x d), one to one.

    The survival score of feature i of `a` is `result.cosine[i]`; see `hungarian_from_cosine`
    for the rectangular case. Exact scipy `linear_sum_assignment`; cost in the module docstring.
    """
    return hungarian_from_cosine(cosine_matrix(a, b, block=block))


def identity_rate(m: Match, alive: np.ndarray) -> float:
    """Fraction of the `alive` rows of `a` matched to the row of `b` with their own index:
    what a shared initialisation and data order make Hungarian matching do (docs/design.md,
    "Seed control")."""
    return float(np.mean(m.index[alive] == np.flatnonzero(alive)))


BYTES_PER_COSINE = 22
"""Peak host memory of one matching per cosine: the float32 matrix, scipy's float64 copy and
its negation (5.6 GiB measured at 16384 x 16384)."""


def match_workers(n_pairs: int, n: int, m: int, *, cores: int | None = None,
                  memory: int | None = None, mode: str | None = None) -> int:
    """Processes for `n_pairs` matchings of n x m: one core left for the parent, the rest
    shared out at the threads a process of the arithmetic `mode` runs (default: this
    process's; pinned: the pinned count, native: one), at most half of `memory` (bytes;
    default: what the host has available) in cosine matrices, at least 1."""
    from repro.science import numerics

    if cores is None:
        cores = os.cpu_count() or 1
    if memory is None:
        memory = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    threads = numerics.PINNED_THREADS if (mode or numerics.mode()) == "pinned" else 1
    fit = int(0.5 * memory // max(1, BYTES_PER_COSINE * n * m))
    return max(1, min(n_pairs, (cores - 1) // threads, fit))


def hungarian_many(pairs: Sequence[tuple[Matrix, Matrix]], workers: int = 1) -> list[Match]:
    """`hungarian_match` of every (a, b) pair, in order; with workers > 1 in that many fresh
    processes, each with the parent's arithmetic (`numerics.pin_cpu` again; one thread
    under native arithmetic), so the result is the one-process result."""
    if workers <= 1 or len(pairs) <= 1:
        return [hungarian_match(a, b) for a, b in pairs]
    context = multiprocessing.get_context("spawn")  # torch's OpenMP state does not fork
    with ProcessPoolExecutor(min(workers, len(pairs)), mp_context=context,
                             initializer=_worker_arithmetic) as pool:
        return list(pool.map(_match_pair, [(_host(a), _host(b)) for a, b in pairs]))


def _host(x: Matrix) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _worker_arithmetic() -> None:
    from repro.science import numerics

    if numerics.pin_cpu()["mode"] == "native":
        torch.set_num_threads(1)


def _match_pair(pair: tuple[np.ndarray, np.ndarray]) -> Match:
    return hungarian_match(*pair)
