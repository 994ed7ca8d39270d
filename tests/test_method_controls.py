"""The synthetic controls of the whole method (repro.science.method_controls): the pipeline recovers
a planted frequency effect and finds none where none is planted, under both seed protocols, and
planted breaks of the method (random or identity matching, shuffled or leaked firing rates) turn the
verdict to FAIL. One SAE training for the whole file (the module fixture)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from runfolder import make_run

from repro.outputs.finish import method_controls_stage
from repro.outputs.report import METHOD_CONTROLS, gather, markdown, to_html
from repro.science import match, method_controls, stats

SPEC = method_controls.ControlSpec()


@pytest.fixture(scope="module")
def study() -> tuple[method_controls.SyntheticData, method_controls.TrainedSaes]:
    data = method_controls.make_data(SPEC)
    return data, method_controls.train_saes(data, SPEC)


def _by_name(results: list[method_controls.ControlResult]) -> dict:
    return {(r.control, r.protocol): r for r in results}


def _random_match(a: np.ndarray, b: np.ndarray) -> match.Match:
    """Matching replaced by a random assignment: what a broken matcher amounts to."""
    index = np.random.default_rng(0).permutation(len(b))[:len(a)]
    cos = match.cosine_matrix(a, b)
    return match.Match(index, cos[np.arange(len(a)), index], cos.max(1))


def _identity_match(a: np.ndarray, b: np.ndarray) -> match.Match:
    """Latent i paired with latent i: right only as far as the two SAEs share a seed."""
    cos = match.cosine_matrix(a, b)
    index = np.arange(len(a))
    return match.Match(index, cos[index, index], cos.max(1))


def test_the_method_recovers_the_planted_effect_and_only_it(study) -> None:
    data, trained = study
    results = method_controls.evaluate(trained, SPEC)
    got = _by_name(results)
    assert all(r.passed for r in results), [r.why for r in results]
    for protocol in method_controls.PROTOCOLS:
        positive, negative = got[("positive", protocol)], got[("negative", protocol)]
        assert positive.feature_rho < 0 and positive.feature_p < SPEC.alpha
        assert positive.ci_high < 0 and positive.binned_rho < 0
        assert negative.feature_p >= SPEC.alpha and abs(negative.binned_rho) < 1
    # the seed protocols differ as they should: shared seed, some latents keep their index
    same, control = got[("positive", "same seed")], got[("positive", "control seed")]
    assert same.identity_rate > control.identity_rate
    result = method_controls.report(results, trained, data, SPEC, 0.0)
    assert result["ok"] and result["line"].startswith("method controls PASS")
    assert min(result["dictionary_recovery_per_bin"]) > 0.9  # every frequency was learned
    # shares are planted per stratum, so within one the order is random: rho near 0, not 0
    assert result["planted_rho"]["positive"] < -0.3 and abs(result["planted_rho"]["negative"]) < 0.1


@pytest.mark.parametrize("matcher", [_random_match, _identity_match])
def test_broken_matching_makes_the_controls_fail(study, matcher) -> None:
    _, trained = study
    results = method_controls.evaluate(trained, SPEC, matcher=matcher)
    got = _by_name(results)
    assert not got[("positive", "control seed")].passed
    assert "FAIL" in method_controls.summary(results)


def test_shuffled_firing_rates_make_the_positive_control_fail(study) -> None:
    _, trained = study
    shuffled = np.random.default_rng(0).permutation(trained.firing_rate)
    results = method_controls.evaluate(trained, SPEC, firing_rate=shuffled)
    assert not any(r.passed for r in results if r.control == "positive")


def test_a_ranking_that_leaks_the_score_makes_the_negative_control_fail(study) -> None:
    """Features ranked by their own survival score: an effect appears from nothing."""
    _, trained = study
    pruned = trained.pruned_decoders[("negative", "control seed")]
    leaked = match.hungarian_match(trained.dense_decoder, pruned).cosine.clip(1e-3, None)
    result = method_controls.detect(trained.dense_decoder, pruned, leaked.astype(np.float64),
                                    control="negative", protocol="control seed", spec=SPEC)
    assert not result.passed and "not there" in result.why


def _effect(rate: np.ndarray, cos: np.ndarray) -> stats.FrequencyEffect:
    return stats.frequency_effect(rate, cos, tau=0.7, n_resamples=200)


def test_judge_on_known_effects() -> None:
    """The verdict rules alone, on effects made to order: no SAE involved."""
    rate = np.geomspace(1e-3, 0.3, 100)
    rarer_survives = np.where(np.arange(100) < 50, 0.9, 0.2)
    none = np.tile([0.9, 0.2], 50)
    assert method_controls.judge(_effect(rate, rarer_survives), -1, 0.05)[0]
    assert not method_controls.judge(_effect(rate, rarer_survives), 0, 0.05)[0]
    assert not method_controls.judge(_effect(rate, rarer_survives[::-1]), -1, 0.05)[0]
    assert method_controls.judge(_effect(rate, none), 0, 0.05)[0]
    assert not method_controls.judge(_effect(rate, none), -1, 0.05)[0]


def test_the_stage_writes_what_every_report_shows(study, tmp_path: Path, monkeypatch) -> None:
    data, trained = study
    results = method_controls.evaluate(trained, SPEC)
    found = method_controls.report(results, trained, data, SPEC, 0.0)
    monkeypatch.setattr(method_controls, "run_controls", lambda: found)
    run, _ = make_run(tmp_path)
    assert "Not computed" in markdown(gather(run))
    ctx = types.SimpleNamespace(out=run, force=False, provenance=dict)
    assert method_controls_stage(ctx).status == "done"
    assert json.loads((run / METHOD_CONTROLS).read_text())["ok"]
    rep = gather(run)
    md, page = markdown(rep), to_html(rep)
    assert "## Method controls: the method can detect the effect it looks for" in md
    assert "**Method controls PASS" in md and md.count("| positive |") == 2
    assert 'class="pass">Method controls PASS' in page
    broken = method_controls.evaluate(trained, SPEC, matcher=_random_match)
    (run / METHOD_CONTROLS).write_text(json.dumps(
        method_controls.report(broken, trained, data, SPEC, 0.0)))
    assert "**Method controls FAIL" in markdown(gather(run))
