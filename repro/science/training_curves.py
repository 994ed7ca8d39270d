"""Is each SAE trained enough to trust? Its training curve, and whether the curve has flattened.

`saes.train_sae` records, every few steps, the explained variance, mean L0 and dead fraction
of the SAE against the training tokens seen so far, from what each sae-lens training step has
already computed (its `TrainStepOutput` and the trainer's per-latent "steps since fired"
counters): no extra forward pass, no random numbers, nothing written to the SAE or the
optimiser, so the SAE is bit-identical with and without the recorder (tests/
test_training_curves.py trains both and compares). The sae stage writes the curve as
runs/<id>/sae/curve.json; the report draws every SAE's curve and warns about any whose
explained variance was still rising at the end of training (`flattened`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from repro.study.thresholds import Thresholds

CURVE_FILE = "curve.json"
TARGET_POINTS = 100
"""Points per curve: one every `steps // 100` steps, so 100-199 points; every step when a run
has fewer than 200 steps (the tiny profile's 63)."""
LAST_SHARE = 0.25
"""The final share of training tokens whose explained-variance gain decides `flattened`."""
FLAT_EV_GAIN = Thresholds().curve_flat_ev_gain
"""The default of the study threshold `curve_flat_ev_gain` (repro.study.thresholds says why)."""
MIN_POINTS = 3
"""Fewer points than this in the last quarter cannot tell a trend from a noisy batch."""


def record_every(steps: int) -> int:
    """Steps between two curve points for a run of `steps` steps (at least 1)."""
    return max(1, steps // TARGET_POINTS)


class CurveRecorder:
    """Collects curve points while sae-lens's `SAETrainer.step` runs (see `attached`).

    A point holds the explained variance and mean L0 over the training batches since the
    previous point (pooled: 1 - summed squared error / summed variance about each batch's
    mean, as sae-lens's wandb log computes it per batch), and the dead fraction at that step:
    latents that did not fire in the trainer's dead-feature window, sae-lens's own notion,
    which the SAE's auxiliary loss acts on. The sums stay on the SAE's device between points,
    so recording adds no host round trip per step.
    """

    def __init__(self) -> None:
        self.points: list[dict[str, float | int]] = []
        self.every = 1
        self.steps = 0
        self._sums: Any = None
        self._tokens_in_window = 0

    def begin(self, steps: int) -> None:
        """Start a curve for a run of `steps` steps (what `attached` does first)."""
        self.points, self.steps, self.every = [], steps, record_every(steps)
        self._sums, self._tokens_in_window = None, 0

    @contextlib.contextmanager
    def attached(self, trainer: Any, steps: int) -> Iterator[CurveRecorder]:
        """Observe every `trainer.step(batch)` of a run of `steps` steps, then detach.

        The trainer's own `step` is called unchanged and its result returned as is; the
        recorder only reads that result after the step (weights already updated).
        """
        self.begin(steps)
        original = trainer.step

        def recorded_step(batch: Any) -> Any:
            output = original(batch)
            self.observe(output, trainer)
            return output

        trainer.step = recorded_step
        try:
            yield self
        finally:
            del trainer.step  # the class's own method shows through again

    def observe(self, output: Any, trainer: Any) -> None:
        """Add one finished sae-lens step's batch to the window."""
        import torch

        with torch.no_grad():
            x = output.sae_in.float()
            err = (output.sae_out.float() - x).pow(2).sum()
            var = (x - x.mean(0)).pow(2).sum()
            active = output.feature_acts.bool().float().sum(-1).to_dense().sum()
            sums = torch.stack([err.double(), var.double(), active.double()])
        # sae-lens counts the step after `step` returns
        self.add(sums, int(x.shape[0]), done=trainer.n_training_steps + 1,
                 samples=trainer.n_training_samples, dead=lambda: trainer.dead_neurons)

    def add(self, sums: Any, n_tokens: int, *, done: int, samples: int,
            dead: Callable[[], Any]) -> None:
        """Add one finished step: `sums` holds its batch's summed squared error, summed
        variance about the batch mean and number of active latents (float64, on the SAE's
        device); a point closes every `every` steps, with the dead-latent mask `dead()`
        after the step. What `observe` does for sae-lens's trainer, for any trainer."""
        self._sums = sums if self._sums is None else self._sums + sums
        self._tokens_in_window += n_tokens
        if done % self.every == 0 or done >= self.steps:
            err, var, active = (float(v) for v in self._sums.cpu())
            self.points.append({
                "step": done, "tokens": int(samples),
                "explained_variance": 1.0 - err / var if var > 0 else float("nan"),
                "l0": active / self._tokens_in_window,
                "dead_fraction": float(dead().float().mean())})
            self._sums, self._tokens_in_window = None, 0

    def curve(self, **about: Any) -> dict[str, Any]:
        """The curve as curve.json stores it: how it was sampled, then the points."""
        return {**about, "every_steps": self.every, "steps": self.steps, "points": self.points}


def save_curve(curve: dict[str, Any], path: Path) -> None:
    from repro.files import write_json

    write_json(path, curve)


def load_curve(path: Path) -> dict[str, Any] | None:
    """A curve.json, or None when the SAE was trained before curves were recorded."""
    try:
        curve = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return curve if isinstance(curve, dict) and isinstance(curve.get("points"), list) else None


# ---- has the curve flattened? ------------------------------------------------------------

def ev_gain(points: list[dict[str, Any]], share: float = LAST_SHARE) -> float | None:
    """Explained variance gained over the last `share` of training tokens.

    The slope of a least-squares line through the points of that stretch, times its length
    in tokens: every point there counts, so one noisy batch at the end moves the gain by
    about 6/n of its own deviation (n points in the stretch; 0.23 for 25) instead of all of
    it. None when the stretch holds fewer than MIN_POINTS points.
    """
    tokens = np.array([p["tokens"] for p in points], dtype=float)
    ev = np.array([p["explained_variance"] for p in points], dtype=float)
    if tokens.size == 0:
        return None
    start = (1.0 - share) * tokens[-1]
    last = (tokens >= start) & np.isfinite(ev)
    if last.sum() < MIN_POINTS or np.ptp(tokens[last]) == 0:
        return None
    slope = np.polyfit(tokens[last], ev[last], 1)[0]
    return float(slope * share * tokens[-1])


def at_full_rate(curve: dict[str, Any]) -> list[dict[str, Any]]:
    """The curve's points before its learning rate starts to decay (`decay_from_step`, which
    the sae stage records): a rate falling to 0 lowers the loss at the end of any training,
    converged or not, so `flattened` is judged on the stretch trained at the full rate."""
    points = curve.get("points") or []
    start = curve.get("decay_from_step")
    return points if start is None else [p for p in points if p["step"] <= start]


def summarize(curve: dict[str, Any], flat_gain: float = FLAT_EV_GAIN) -> dict[str, Any]:
    """Final EV, L0 and dead fraction, the EV gain over the last quarter of the training at
    the full learning rate (`at_full_rate`), and `flattened`: True when that gain is below
    `flat_gain`, False when not, None when too few points."""
    points = curve.get("points") or []
    last = points[-1] if points else {}
    gain = ev_gain(at_full_rate(curve))
    return {"tokens": last.get("tokens"), "points": len(points),
            "explained_variance": last.get("explained_variance"), "l0": last.get("l0"),
            "dead_fraction": last.get("dead_fraction"), "ev_gain_last_quarter": gain,
            "flattened": None if gain is None else gain < flat_gain}
