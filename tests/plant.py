"""Plant one mistake in the pipeline, redo the stages it touches on a run folder, verify.

    python tests/plant.py MISTAKE RUN_DIR [EXPECTED_DIR]   (prints the failing checks)

Used by tests/test_end_to_end.py on a hard-linked copy of its finished tiny run, so a
mistake costs seconds (the analysis, or a few evaluate stages and the analysis), not a whole
profile. Each mistake is a small patch of one function as a plausible bug would write it;
`none` redoes the same stages unpatched, the control that must still pass. Runs in its own
process so that the CPU numerics are pinned before any kernel, as in `repro all`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from repro.outputs import analysis
from repro.science import stats
from repro.science.numerics import pin_cpu
from repro.stages import run_stages


def reevaluated(study) -> list:
    """The runs whose evaluate stage a mistake in that stage redoes: the first model's
    pruned variants at its first sparsity, in every replicate (enough to show in T5)."""
    first = study.conditions[0]
    chosen = {v for v in study.conditions
              if v.model == first.model and v.sparsity == first.sparsity}
    return [r for r in study.runs if r.variant in chosen and r.is_evaluated
            and not r.is_extra_seed]


def swapped_matching(a: analysis.Analysis, variant):
    """Pruned SAE's features matched into the dense SAE's, instead of the other way round."""
    dense = analysis.decoder(a.run_folder(a.dense_run(variant.model)))
    pruned = analysis.decoder(a.run_folder(a.condition_run(variant)))
    return analysis.match.hungarian_match(pruned, dense)


def pruned_firing_rates(a: analysis.Analysis, variant) -> np.ndarray:
    """Firing rates of the pruned run's SAE instead of the dense SAE's on the dense model."""
    return analysis.firing_rate(a.run_folder(a.condition_run(variant)))


def uniform_firing_rates(a: analysis.Analysis, variant) -> np.ndarray:
    """Every latent given the same rate: the frequency analysis ranks by index."""
    rate = analysis.firing_rate(a.run_folder(a.dense_run(variant.model)))
    return np.where(rate > 0, 0.01, 0.0)


def negated_binned(original: Callable) -> Callable:
    def binned(*args, **kwargs):
        got = original(*args, **kwargs)
        return dataclasses.replace(got, rho=-got.rho)
    return binned


def negated_causal(original: Callable) -> Callable:
    """The CE rise read with its sign flipped (a loss difference taken the wrong way)."""
    def load(path, *args, **kwargs):
        got = original(path, *args, **kwargs)
        if str(path).endswith("causal.safetensors"):
            got = {k: (-v if k.startswith("delta_ce") else v) for k, v in got.items()}
        return got
    return load


RATIO = stats.wanda_magnitude_ratio  # the original, before any patch replaces it


def inverted_ratio(wanda, magnitude):
    return RATIO(magnitude, wanda)


def lower_threshold(original: Callable) -> Callable:
    def init(self, study, out, bootstrap=1000, replicate=0):
        original(self, study, out, bootstrap, replicate)
        self.tau = 0.6  # the study file says 0.7
    return init


def dense_activations(ctx) -> None:
    """RQ3 measured on the dense model's activations: the pruned model's are never read."""
    original = ctx.variant_dir

    def variant_dir(variant, stage):
        if stage == "activations":
            variant = dataclasses.replace(variant, method="dense", sparsity=0.0)
        return original(variant, stage)
    ctx.variant_dir = variant_dir


ANALYSIS_PATCHES: dict[str, Callable[[], list[tuple[object, str, object]]]] = {
    "none": lambda: [],
    "swapped-matching": lambda: [(analysis.Analysis, "survival_match", swapped_matching)],
    "pruned-firing-rates": lambda: [(analysis.Analysis, "dense_firing_rate",
                                     pruned_firing_rates)],
    "uniform-firing-rates": lambda: [(analysis.Analysis, "dense_firing_rate",
                                      uniform_firing_rates)],
    "binned-rho-sign": lambda: [(analysis.stats, "binned_survival",
                                 negated_binned(stats.binned_survival))],
    "causal-sign": lambda: [(analysis, "load_file", negated_causal(analysis.load_file))],
    "c2-inverted": lambda: [(analysis.stats, "wanda_magnitude_ratio", inverted_ratio)],
    "survival-threshold": lambda: [(analysis.Analysis, "__init__",
                                    lower_threshold(analysis.Analysis.__init__))],
}
"""Each analysis mistake as (owner, attribute, replacement) patches."""


def patch(mistake: str) -> list[tuple[object, str, object]]:
    return ANALYSIS_PATCHES[mistake]()


EVALUATE_PATCHES = {"rq3-dense-activations": dense_activations}
MISTAKES = (*ANALYSIS_PATCHES, *EVALUATE_PATCHES)


def plant(mistake: str, run_dir: Path, expected: Path | None = None) -> dict:
    """Apply `mistake`, redo what it touches with force, and return the verification."""
    pin_cpu()
    import torch

    from repro.errors import ReproError
    from repro.outputs.completeness import last_stage
    from repro.outputs.expected import run_profile
    from repro.outputs.tables import analysis_stage, tables_stage
    from repro.outputs.verify import verify_run
    from repro.stages.context import Context, ModelHolder
    from repro.study.reader import load_study, profile_path

    profile = run_profile(run_dir)
    try:
        study = load_study(profile_path(profile))
    except ReproError:  # a study of one's own, with absolute model paths
        study = load_study(run_dir / "study.toml")
    ctx = Context(study=study, out=run_dir, device=torch.device("cpu"), force=True, quiet=True)
    if mistake in EVALUATE_PATCHES:
        EVALUATE_PATCHES[mistake](ctx)
        holder = ModelHolder(ctx)
        for run in reevaluated(study):
            run_stages.evaluate_stage(ctx, holder, run)
    else:
        for owner, name, value in patch(mistake):
            setattr(owner, name, value)
    analysis_stage(ctx, [f"runs/{r.id}/{last_stage(r)}" for r in study.runs])
    tables_stage(ctx)
    return verify_run(run_dir, expected)


if __name__ == "__main__":
    result = plant(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3
                   else None)
    failed = [c for c in result["checks"] if c["verdict"] in ("fail", "inconclusive")]
    # each failing cell, claim or structure check, for a note that names what caught the
    # mistake; the last line is the JSON that tests/test_end_to_end.py reads
    for c in failed:
        if c["kind"] in ("cell", "claim", "structure"):
            print(f"  {c['verdict'].upper()} {c['name']}: expected {c['expected']}, got "
                  f"{c['got']} [{c['tolerance']}]")
    print(json.dumps({"ok": result["ok"], "failed": [c["name"] for c in failed]}))
