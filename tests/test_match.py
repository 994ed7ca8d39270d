"""repro.science.match against slow obvious twins: brute-force assignment, one-shot cosine
products."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from repro.science.match import (
    Match,
    cosine_matrix,
    hungarian_from_cosine,
    hungarian_many,
    hungarian_match,
    match_workers,
    max_cosine,
)


def brute_force(cos: np.ndarray) -> tuple[float, np.ndarray]:
    """Best total cosine over every injective map of the smaller side into the larger."""
    n, m = cos.shape
    best, best_idx = -np.inf, None
    if n <= m:
        for cols in itertools.permutations(range(m), n):
            total = cos[np.arange(n), cols].sum()
            if total > best:
                best, best_idx = total, np.array(cols)
        return best, best_idx
    for rows in itertools.permutations(range(n), m):
        total = cos[rows, np.arange(m)].sum()
        if total > best:
            idx = np.full(n, -1)
            idx[list(rows)] = np.arange(m)
            best, best_idx = total, idx
    return best, best_idx


def one_shot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # zero rows become NaN rows here; callers skip them
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    return an @ bn.T


@pytest.mark.parametrize(("n", "m", "seed"), [(6, 6, 0), (6, 6, 1), (5, 7, 2), (7, 5, 3)])
def test_hungarian_equals_brute_force(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 4)), rng.normal(size=(m, 4))
    res = hungarian_match(a, b)
    cos = one_shot(a, b)
    best, idx = brute_force(cos)
    assert res.cosine.sum() == pytest.approx(best, abs=1e-5)
    np.testing.assert_array_equal(res.index, idx)  # continuous random cosines: unique optimum
    matched = res.index >= 0
    assert len(set(res.index[matched])) == matched.sum() == min(n, m)
    np.testing.assert_allclose(res.cosine[matched], cos[matched, res.index[matched]], atol=1e-6)
    assert (res.cosine[~matched] == 0).all()
    np.testing.assert_allclose(res.max_cosine, cos.max(1), atol=1e-6)


@pytest.mark.parametrize("block", [1, 3, 7, 64, 1000])
def test_blockwise_cosine_equals_one_shot(block: int) -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(64, 16)), rng.normal(size=(50, 16))
    got = cosine_matrix(a, b, block=block)
    assert got.dtype == np.float32 and got.shape == (64, 50)
    np.testing.assert_allclose(got, one_shot(a, b), atol=1e-6)


def test_cosine_of_torch_bf16_and_zero_rows() -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.randn(10, 8, generator=g)
    a[3] = 0  # a dead feature's decoder row
    b = torch.randn(12, 8, generator=g)
    got = cosine_matrix(a.bfloat16(), b, block=4)
    ref = one_shot(a.bfloat16().float().numpy(), b.numpy())
    np.testing.assert_allclose(np.delete(got, 3, 0), np.delete(ref, 3, 0), atol=1e-6)
    assert (got[3] == 0).all()


@pytest.mark.parametrize("block", [1, 5, 33, 100])
def test_max_cosine_equals_matrix_max(block: int) -> None:
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(33, 8))
    values, index = max_cosine(a, b, block=block)
    full = cosine_matrix(a, b)
    np.testing.assert_array_equal(values, full.max(1))
    np.testing.assert_array_equal(index, full.argmax(1))


def test_self_match_survives_and_permutation_is_recovered() -> None:
    g = torch.Generator().manual_seed(7)
    dec = torch.randn(200, 32, generator=g)
    same = hungarian_match(dec, dec)
    assert same.shared_fraction() == 1.0
    np.testing.assert_array_equal(same.index, np.arange(200))
    perm = torch.randperm(200, generator=g)
    shuffled = hungarian_match(dec, 3.0 * dec[perm])  # decoder norms do not matter
    inverse = torch.argsort(perm).numpy()
    np.testing.assert_array_equal(shuffled.index, inverse)
    np.testing.assert_allclose(shuffled.cosine, 1.0, atol=1e-5)


def test_match_result_is_frozen_and_consistent() -> None:
    res = hungarian_from_cosine(np.array([[0.9, 0.1], [0.8, 0.75]], dtype=np.float32))
    np.testing.assert_array_equal(res.index, [0, 1])
    np.testing.assert_allclose(res.max_cosine, [0.9, 0.8])
    assert res.mean_cosine == pytest.approx(0.825)
    with pytest.raises(AttributeError):
        res.index = np.zeros(2)  # type: ignore[misc]
    with pytest.raises(ValueError):
        Match(index=np.zeros(2, np.int64), cosine=np.zeros(3), max_cosine=np.zeros(2))


def test_hungarian_beats_greedy_where_they_differ() -> None:
    cos = np.array([[0.9, 0.8], [0.85, 0.1]])
    res = hungarian_from_cosine(cos)
    np.testing.assert_array_equal(res.index, [1, 0])  # 0.8 + 0.85 > 0.9 + 0.1
    np.testing.assert_allclose(res.cosine, [0.8, 0.85], atol=1e-7)


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="widths differ"):
        cosine_matrix(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="not finite"):
        hungarian_from_cosine(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        cosine_matrix(np.ones(3), np.ones((2, 3)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu() -> None:
    g = torch.Generator().manual_seed(15)
    a, b = torch.randn(300, 64, generator=g), torch.randn(250, 64, generator=g)
    np.testing.assert_allclose(cosine_matrix(a.cuda(), b.cuda(), block=128),
                               cosine_matrix(a, b), atol=1e-5)
    values, _ = max_cosine(a.cuda(), b, block=77)  # b follows a onto the device
    np.testing.assert_allclose(values, cosine_matrix(a, b).max(1), atol=1e-5)


def test_pairs_matched_in_worker_processes_equal_one_process() -> None:
    """`hungarian_many` with 2 spawned workers (the GPU host's many cores) gives, pair by
    pair and in order, the one-process assignment and cosines, bit for bit; and a pair given
    the other way round (b into a) gives another answer, so the comparison could fail."""
    g = torch.Generator().manual_seed(3)
    mats = [torch.randn(40, 16, generator=g) for _ in range(4)]
    pairs = [(mats[0], mats[1]), (mats[2], mats[3]), (mats[1], mats[3].numpy())]
    serial = hungarian_many(pairs, workers=1)
    parallel = hungarian_many(pairs, workers=2)
    for s, p in zip(serial, parallel, strict=True):
        assert np.array_equal(s.index, p.index) and np.array_equal(s.cosine, p.cosine)
        assert np.array_equal(s.max_cosine, p.max_cosine)
    swapped = hungarian_many([(b, a) for a, b in pairs], workers=2)
    assert not np.array_equal(swapped[0].cosine, serial[0].cosine)


def test_match_workers_leaves_a_core_and_fits_memory(monkeypatch) -> None:
    """One process per core but the parent's, fewer where memory runs short, never more than
    the pairs, never fewer than one: 1 on the project's 2-core machine."""
    monkeypatch.setenv("REPRO_NUMERICS", "native")
    gib = 2**30
    assert match_workers(40, 16384, 16384, cores=16, memory=128 * gib) == 11  # 64 GiB / 5.5
    assert match_workers(40, 16384, 16384, cores=16, memory=512 * gib) == 15
    assert match_workers(3, 1024, 1024, cores=16, memory=128 * gib) == 3
    assert match_workers(40, 1024, 1024, cores=2, memory=24 * gib) == 1
    assert match_workers(40, 16384, 16384, cores=16, memory=4 * gib) == 1
    monkeypatch.setenv("REPRO_NUMERICS", "pinned")  # two threads a process
    assert match_workers(40, 1024, 1024, cores=16, memory=128 * gib) == 7
    assert match_workers(40, 1024, 1024, cores=16, memory=128 * gib, mode="native") == 15
