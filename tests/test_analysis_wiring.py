"""The analysis reads the right SAE in the right direction: planted SAEs with a known answer.

A dense SAE whose 20 latents are the unit vectors e_i, firing at rates rising with i, and a
pruned SAE that keeps the 10 rarest (in reversed positions) and turns the 10 most frequent
away (cosine 0.5): survival is 1 for the rare half and 0 for the frequent half, so C1's
signs are known. The pruned SAE's own firing rates run the other way, so reading them by
mistake, or matching pruned into dense instead of dense into pruned, flips the answer.
The planted-mistake test on a whole tiny run (test_end_to_end) catches the same mistakes
through `repro verify`; this one needs no model and runs in a second.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from repro.outputs.analysis import Analysis
from repro.study.reader import load_study, profile_path
from repro.study.spec import Variant

W = 20
RATE = (np.arange(W) + 1) / 100.0  # dense firing rates: latent 0 is the rarest


def _sae(folder, w_dec: np.ndarray, rate: np.ndarray) -> None:
    folder.mkdir(parents=True)
    save_file({"W_dec": torch.from_numpy(w_dec.astype(np.float32))},
              str(folder / "sae_weights.safetensors"))
    save_file({"firing_rate": torch.from_numpy(rate)}, str(folder / "firing_rates.safetensors"))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    study = load_study(profile_path("tiny"))
    out = tmp_path_factory.mktemp("planted")
    dense = np.eye(W, 2 * W)
    pruned = np.zeros_like(dense)
    for i in range(W):
        j = W - 1 - i  # the pruned SAE holds feature i at position j
        pruned[j, i] = 1.0 if i < W // 2 else 0.5
        pruned[j, W + i] = 0.0 if i < W // 2 else np.sqrt(0.75)
    _sae(out / "runs/gemma-3-tiny/dense/0/sae", dense, RATE)
    _sae(out / "runs/gemma-3-tiny/wanda/50/sae", pruned, RATE[::-1].copy())
    # the control-seed SAEs share nothing with the dense one: rows in the other 20 dimensions
    seed = study.sae.control_seed
    unrelated = np.roll(np.eye(W, 2 * W), W, axis=1)
    for variant in ("dense/0", "wanda/50"):
        _sae(out / f"runs/gemma-3-tiny/{variant}/control-seed-{seed}/sae", unrelated, RATE)
    save_file({"W_dec": torch.from_numpy(dense.astype(np.float32))},  # trained = initial
              str(out / "runs/gemma-3-tiny/dense/0/sae/init_decoder.safetensors"))
    evaluate = out / "runs/gemma-3-tiny/wanda/50/evaluate"
    evaluate.mkdir()
    r = torch.from_numpy(1.0 - RATE * 10)  # frequent features: fragile
    r[-2:] = float("nan")  # the two most frequent never fire on the pruned model
    fires_pruned = torch.full((W,), 50)
    fires_pruned[-2:] = 0
    save_file({"pearson_r": r, "fires_dense": torch.full((W,), 50),
               "fires_pruned": fires_pruned}, str(evaluate / "fragility.safetensors"))
    causal = out / "runs/gemma-3-tiny/dense/0/evaluate"
    causal.mkdir()
    effect = torch.arange(W, dtype=torch.float64)  # frequent features matter more
    save_file({"feature": torch.arange(W), "delta_ce": effect,
               "delta_ce_halves": torch.stack([effect, effect], 1)},
              str(causal / "causal.safetensors"))
    return Analysis(study, out, bootstrap=50), Variant("gemma-3-tiny", "wanda", 0.5)


def test_survival_is_read_from_the_dense_side_with_dense_rates(planted) -> None:
    a, variant = planted
    row = a.survival_row(variant)
    assert row["n_alive"] == W and row["survival"] == 0.5
    assert [row[f"survival_bin{b}"] for b in range(1, 6)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert row["binned_rho"] < -0.9 and row["feature_rho"] < -0.8
    # identity matching is what a shared initialisation produces; here the copies sit in
    # reversed positions, so none is matched by index
    assert row["identity_rate"] == 0.0
    assert (row["survival_control"], row["seed_floor"]) == (0.0, 0.0)
    assert [row[f"init_drift_bin{b}"] for b in range(1, 6)] == pytest.approx([0.0] * 5, abs=1e-6)


def test_matching_pairs_each_dense_feature_with_its_pruned_copy(planted) -> None:
    a, variant = planted
    m = a.survival_match(variant)
    assert list(m.index) == [W - 1 - i for i in range(W)]
    assert np.allclose(m.cosine, np.where(np.arange(W) < W // 2, 1.0, 0.5))


def test_fragility_and_causal_rows_use_dense_rates_and_dense_matching(planted) -> None:
    a, variant = planted
    row = a.fragility_row(variant)
    assert row["rho_rate_vs_r"] == pytest.approx(-1.0)  # dense rate up, r down
    # r < 0.5 from i = 5 to 17, and the 2 silenced: 15 of the 20 alive features
    assert (row["n_defined"], row["n_silenced"], row["fragile_fraction"]) == (W - 2, 2, 0.75)
    # causal effect rises with the index, survival falls with it
    assert row["causal_rho"] < -0.8 and row["causal_reliability"] == pytest.approx(1.0)


def _answers(a: Analysis, variant: Variant) -> dict:
    a._matches.clear()
    s, f = a.survival_row(variant), a.fragility_row(variant)
    return {"bins": [s[f"survival_bin{b}"] for b in range(1, 6)],
            "rho_sign": np.sign(s["binned_rho"]), "rate_r_sign": np.sign(f["rho_rate_vs_r"]),
            "causal_sign": np.sign(f["causal_rho"])}


@pytest.mark.parametrize("mistake", ["swapped-matching", "pruned-firing-rates",
                                     "uniform-firing-rates", "binned-rho-sign", "causal-sign"])
def test_each_planted_mistake_changes_the_known_answer(planted, mistake, monkeypatch) -> None:
    """The negative control of the tests above: each of tests/plant.py's analysis mistakes,
    patched in, moves at least one of the answers they check."""
    import plant

    a, variant = planted
    right = _answers(a, variant)
    assert right == {"bins": [1.0, 1.0, 0.5, 0.0, 0.0], "rho_sign": -1, "rate_r_sign": -1,
                     "causal_sign": -1}
    with monkeypatch.context() as m:
        for owner, name, value in plant.patch(mistake):
            m.setattr(owner, name, value)
        wrong = _answers(a, variant)
    assert wrong != right
