"""Tables 7 and 8, beyond the paper: which features a compression damages, predicted from the
dense model (RQ6, T7) and compared between quantization and pruning at equal perplexity (T8).

Both read what the paper's tables read (the dense SAE, the matches of RQ2, the frozen-SAE
correlations of RQ4) and the dense model's eval activations; the method is in
repro/science/predict.py. T7 is built when the study asks for it (`[thresholds]
predictability_folds`), T8 when it quantizes a model that it also prunes by magnitude or
Wanda without a pattern.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from repro.outputs.analysis import Analysis, silenced_features
from repro.science import predict, stats
from repro.science.survival import alive as is_alive
from repro.science.survival import survives
from repro.study.methods import INT, UNSTRUCTURED, Pattern
from repro.study.spec import Study, Variant

LABELS = ("survival", "robustness")
"""T7's two labels of a feature: survived (RQ2) and stayed robust (RQ4)."""
MATCHED_METHODS = ("magnitude", "wanda")
"""The pruning methods T8 puts beside each quantized model."""


def wants_t7(study: Study) -> bool:
    return study.thresholds.predictability_folds > 0


def _quantized(v: Variant) -> bool:
    return Pattern.parse(v.pattern).kind == INT


def wants_t8(study: Study) -> bool:
    """Whether the study quantizes a model that it also prunes without a pattern."""
    pruned = {v.model for v in study.conditions
              if v.method in MATCHED_METHODS and v.pattern == UNSTRUCTURED}
    return any(_quantized(v) and v.model in pruned for v in study.conditions)


def dense_statistics(a: Analysis, model: str) -> dict[str, np.ndarray]:
    """The dense SAE's feature statistics on the dense model's eval tokens (special tokens
    left out, as every SAE measurement does)."""
    def read(folder: Any) -> dict[str, np.ndarray]:
        from repro.inputs.models import load_tokenizer
        from repro.science.saes import load_sae, masked_chunks
        from repro.stages import layout
        from repro.stages.run_stages import special_ids

        spec = a.study.models[model]
        activations = layout.variant_dir(a.out, Variant(model, "dense", 0.0), "activations")
        chunks = (acts for acts, _ in masked_chunks(activations,
                                                    special_ids(load_tokenizer(spec))))
        return predict.feature_statistics(load_sae(folder / "sae", "cpu"), chunks)

    return a._once("statistics", a.dense_run(model), read)


def labels(a: Analysis, v: Variant) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per label, (the dense-SAE features it is defined on, as a mask over the SAE's width;
    the label of each of them): survival over the features alive on the dense model (T3's),
    robustness over those whose r is defined or that the compression silenced (T6's)."""
    rate = a.dense_firing_rate(v)
    alive = is_alive(rate)
    survived = survives(a.survival_match(v).cosine[alive], a.tau)
    frag = a.fragility_of(v)
    r = frag["pearson_r"]
    silenced = silenced_features(frag)
    defined = np.isfinite(r) | silenced
    robust = np.where(np.isfinite(r), r, -np.inf)[defined] >= a.study.thresholds.fragile_r
    return {"survival": (alive, survived), "robustness": (defined, robust)}


def t7_predictability(a: Analysis) -> list[dict]:
    """One row per condition, label and predictor (each alone, all together, and all against
    shuffled labels): the cross-validated AUC with its bootstrap interval."""
    folds = a.study.thresholds.predictability_folds
    rows = []
    for v in a.study.conditions:
        statistics = dense_statistics(a, v.model)
        for label, (mask, y) in labels(a, v).items():
            keep = mask & (statistics["firing_rate"] > 0)
            y = y[keep[mask]]
            found = predict.predictability(predict.predictors(statistics, keep), y, folds=folds,
                                           n_resamples=a.bootstrap, seed=a.study.seed)
            for name, p in found.items():
                rows.append({**a.head(v), "id": f"{v.id}/{label}/{name}", "label": label,
                             "predictor": name, "n_features": int(keep.sum()),
                             "n_positive": int(np.sum(y)), "auc": p.auc,
                             "auc_ci_low": p.ci_low, "auc_ci_high": p.ci_high})
    return rows


def _damage(a: Analysis, v: Variant, keep: np.ndarray) -> np.ndarray:
    """RQ4's r of each feature in `keep` (r = 0 for a feature the compression silenced)."""
    frag = a.fragility_of(v)
    r = np.where(np.isfinite(frag["pearson_r"]), frag["pearson_r"], 0.0)
    return r[keep]


MATCH_COLUMNS = ("n_features", "n_damaged_quantized", "n_damaged_pruned", "jaccard",
                 "jaccard_chance", "damage_spearman")


def t8_matched(a: Analysis, t1: list[dict]) -> list[dict]:
    """Per quantized condition and pruning method: the sparsity of equal perplexity on the
    method's grid, and how the two compressions' damaged features overlap there."""
    ppl = {r["id"]: r["perplexity"] for r in t1}
    rows = []
    for q in (v for v in a.study.conditions if _quantized(v)):
        for method in MATCHED_METHODS:
            grid = [v for v in a.study.conditions if v.model == q.model
                    and v.method == method and v.pattern == UNSTRUCTURED]
            if grid:
                rows.append({"id": f"{q.id}/vs-{method}", "model": q.model,
                             "quantized": q.pattern, "pruning": method,
                             "perplexity": ppl[q.id], **_matched(a, q, grid, ppl)})
    return rows


def _matched(a: Analysis, q: Variant, grid: list[Variant], ppl: dict[str, float]
             ) -> dict[str, Any]:
    """T8's columns of one quantized condition against one method's grid: NaN where the
    quantized perplexity lies above every grid point."""
    dense = Variant(q.model, "dense", 0.0)
    points = [(dense.id, 0.0, ppl[dense.id])] + [(v.id, v.sparsity, ppl[v.id]) for v in grid]
    found = predict.match_perplexity(points, ppl[q.id])
    if found is None:
        return {"matched_sparsity": math.nan, "below": grid[-1].id, "above": "",
                **dict.fromkeys(MATCH_COLUMNS, math.nan)}
    keep = is_alive(a.fragility_of(q)["fires_dense"])  # every condition's r is over these
    by_id = {v.id: v for v in grid}

    def r_at(vid: str) -> np.ndarray:
        return np.ones(int(keep.sum())) if vid == dense.id else _damage(a, by_id[vid], keep)

    r_q = _damage(a, q, keep)
    r_p = (1 - found.weight) * r_at(found.low) + found.weight * r_at(found.high)
    fragile_r = a.study.thresholds.fragile_r
    hit_q, hit_p = r_q < fragile_r, r_p < fragile_r
    n = int(keep.sum())
    return {"matched_sparsity": found.sparsity, "below": found.low, "above": found.high,
            "n_features": n, "n_damaged_quantized": int(hit_q.sum()),
            "n_damaged_pruned": int(hit_p.sum()), "jaccard": predict.jaccard(hit_q, hit_p),
            "jaccard_chance": predict.chance_jaccard(int(hit_q.sum()), int(hit_p.sum()), n),
            "damage_spearman": stats.spearman(1 - r_q, 1 - r_p)}
