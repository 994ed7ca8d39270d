"""Training curves: recorded from the training steps, harmless to the SAE, and `flattened`
flags a curve still rising at the end while passing a flat (or flat and noisy) one."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import make_model, random_ids

from repro.science import saes, training_curves
from repro.science.training_curves import CurveRecorder, ev_gain, record_every, summarize
from repro.study.spec import SaeSpec

SPEC = SaeSpec(width=48, k=4, lr=1e-3, batch_tokens=16)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model("LlamaForCausalLM", dtype=torch.float32)


def _train(model: torch.nn.Module, curve: CurveRecorder | None, spec: SaeSpec = SPEC):
    ids = random_ids(24, 12)
    keep = ids > 2  # BOS/EOS/PAD are ids 0-2 in the test vocabulary
    return saes.train_sae(model, ids, keep, layer=2, spec=spec, seed=3, seq_batch=5,
                          metadata={"model_name": "random"}, curve=curve)


def test_recording_leaves_the_sae_bit_identical(model) -> None:
    """The slow obvious twin: the same training without the recorder gives the same bits."""
    curve = CurveRecorder()
    recorded, record = _train(model, curve)
    plain, plain_record = _train(model, None)
    for name, p in plain.state_dict().items():
        assert torch.equal(p, recorded.state_dict()[name]), name
    assert {k: v for k, v in record.items() if k != "train_seconds"} == \
        {k: v for k, v in plain_record.items() if k != "train_seconds"}
    assert curve.points  # and the recorder did record


def test_the_recorder_detaches_after_training() -> None:
    class Trainer:
        n_training_steps, n_training_samples = 0, 0

        def step(self, batch):
            return batch

    trainer, curve, sentinel = Trainer(), CurveRecorder(), object()
    with curve.attached(trainer, steps=5):
        assert "step" in vars(trainer)
    assert "step" not in vars(trainer) and trainer.step(sentinel) is sentinel


def test_curve_has_a_point_per_step_on_a_short_run_with_rising_tokens(model) -> None:
    curve = CurveRecorder()
    sae, record = _train(model, curve)
    points = curve.points
    assert record["steps"] == math.ceil(record["n_tokens"] / SPEC.batch_tokens) == len(points)
    assert [p["step"] for p in points] == list(range(1, record["steps"] + 1))
    tokens = [p["tokens"] for p in points]
    assert all(b > a for a, b in zip(tokens, tokens[1:], strict=False))
    assert tokens[-1] == record["n_tokens"]
    assert all(0 < p["l0"] <= SPEC.k and 0 <= p["dead_fraction"] <= 1 for p in points)
    assert points[-1]["dead_fraction"] == pytest.approx(record["dead_at_end"] / SPEC.width)


def test_final_point_agrees_with_the_trained_sae_on_its_training_tokens(model) -> None:
    """The last point (measured on the last batch, before its update) is close to the
    finished SAE's explained variance over every training token, computed independently."""
    curve = CurveRecorder()
    sae, _ = _train(model, curve, dataclasses.replace(SPEC, batch_tokens=64))
    ids = random_ids(24, 12)
    from repro.science.activations import probe

    with torch.no_grad():
        x = probe(model, ids, 2)[ids > 2].float()
        x_hat = sae.decode(sae.encode(x))
    ev = 1 - (x - x_hat).pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean()
    assert curve.points[-1]["explained_variance"] == pytest.approx(float(ev), abs=0.1)
    with torch.no_grad():
        l0 = float((sae.encode(x) != 0).sum(-1).float().mean())
    assert curve.points[-1]["l0"] == pytest.approx(l0, abs=1.0)


def test_long_runs_are_sampled_at_100_to_199_points() -> None:
    assert record_every(63) == 1 and record_every(199) == 1
    for steps in (200, 4100, 40_000, 123_457):
        n = math.ceil(steps / record_every(steps))
        assert 100 <= n <= 200, steps


def _points(ev: list[float], batch: int = 1000) -> list[dict]:
    return [{"step": i + 1, "tokens": (i + 1) * batch, "explained_variance": v, "l0": 4.0,
             "dead_fraction": 0.0} for i, v in enumerate(ev)]


def test_flattened_flags_a_still_rising_curve_and_passes_a_flat_one() -> None:
    steps = torch.arange(1, 101, dtype=torch.float64)
    rising = (0.9 * (1 - torch.exp(-steps / 200))).tolist()  # far from its plateau at the end
    flat = (0.9 * (1 - torch.exp(-steps / 8))).tolist()  # plateaued by a quarter of the way
    noise = (torch.Generator().manual_seed(0))
    noisy = (torch.tensor(flat) + 0.003 * torch.randn(100, generator=noise,
                                                     dtype=torch.float64)).tolist()
    got = {name: summarize({"points": _points(ev)})
           for name, ev in (("rising", rising), ("flat", flat), ("noisy", noisy))}
    assert got["rising"]["flattened"] is False and got["rising"]["ev_gain_last_quarter"] > 0.05
    assert got["flat"]["flattened"] is True and abs(got["flat"]["ev_gain_last_quarter"]) < 1e-3
    assert got["noisy"]["flattened"] is True
    spiked = [*flat[:-1], flat[-1] + 0.02]  # one lucky batch at the end does not fake a rise
    assert summarize({"points": _points(spiked)})["flattened"] is True
    dipped = [*rising[:-1], rising[-1] - 0.02]  # nor an unlucky one hide it
    assert summarize({"points": _points(dipped)})["flattened"] is False
    # the threshold is the study's: a looser one lets the rising curve pass
    assert summarize({"points": _points(rising)}, flat_gain=1.0)["flattened"] is True


def test_too_few_points_are_not_judged() -> None:
    assert ev_gain(_points([0.1, 0.5, 0.6])) is None
    assert summarize({"points": []})["flattened"] is None
    assert training_curves.load_curve(training_curves.Path("/nonexistent/curve.json")) is None


def test_a_study_file_may_set_the_threshold_within_its_range() -> None:
    from repro.errors import ReproError
    from repro.study.reader import read_thresholds

    assert read_thresholds({"curve_flat_ev_gain": 0.02}).curve_flat_ev_gain == 0.02
    assert read_thresholds({}).curve_flat_ev_gain == training_curves.FLAT_EV_GAIN
    with pytest.raises(ReproError, match="curve_flat_ev_gain"):
        read_thresholds({"curve_flat_ev_gain": 2.0})


def test_a_decaying_learning_rate_is_not_read_as_a_rising_curve() -> None:
    """The last stretch of a curve whose rate decays to 0 is judged where the rate was still
    full: a flat curve with the decay's own gain at the end passes, and a curve still rising
    before the decay fails whatever the decay does after it."""
    steps = torch.arange(1, 101, dtype=torch.float64)
    flat = 0.9 * (1 - torch.exp(-steps / 8))
    annealed = (flat + 0.08 * torch.clamp(steps - 70, min=0) / 30).tolist()  # decay from step 70
    assert summarize({"points": _points(annealed)})["flattened"] is False  # read as rising
    got = summarize({"points": _points(annealed), "decay_from_step": 70})
    assert got["flattened"] is True and abs(got["ev_gain_last_quarter"]) < 2e-3
    assert got["explained_variance"] == pytest.approx(annealed[-1])  # the final EV is the end's
    rising = (0.9 * (1 - torch.exp(-steps / 200))).tolist()
    assert summarize({"points": _points(rising), "decay_from_step": 70})["flattened"] is False
