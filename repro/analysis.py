"""The five research questions across runs: the rows of Tables 1-6 and the four claims.

Run by `repro all` after every run's sae and evaluate stages (stage folder `analysis/`).
Reads only files: prune/perplexity manifests, each run's SAE decoder and firing rates, and
the evaluate stage's transfer/fragility/causal files (formats in repro/research_stages.py).

Survival (RQ2) is measured over the features alive on the dense model (firing rate > 0 on
the evaluation tokens): a feature that never fires has no behaviour for pruning to keep.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from repro import match, stats
from repro.study import Run, Study, Variant

N_BINS = 5


def decoder(run_folder: Path) -> np.ndarray:
    """The SAE's decoder rows (width x d_model) as saved by sae-lens."""
    weights = load_file(str(run_folder / "sae" / "sae_weights.safetensors"))
    return weights["W_dec"].astype(np.float32)


def firing_rate(run_folder: Path) -> np.ndarray:
    return load_file(str(run_folder / "sae" / "firing_rates.safetensors"))["firing_rate"]


def _manifest_result(folder: Path) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text())["result"]
    except (OSError, ValueError, KeyError):
        return {}


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


class Analysis:
    """Reads a run folder once and computes every table row from it."""

    def __init__(self, study: Study, out: Path, bootstrap: int = 1000) -> None:
        self.study, self.out, self.bootstrap = study, out, bootstrap
        self.tau = study.sae.survival_threshold
        self._matches: dict[str, match.Match] = {}
        self.features: dict[str, np.ndarray] = {}
        """Per-feature arrays behind the rows, keyed 'ID|name', for the figures."""

    def run_folder(self, run: Run) -> Path:
        return self.out / "runs" / run.id

    def dense_run(self, model: str, seed: int | None = None) -> Run:
        seed = self.study.seed if seed is None else seed
        return next(
            r
            for r in self.study.runs
            if r.variant == Variant(model, "dense", 0.0) and r.seed == seed
        )

    def condition_run(self, variant: Variant) -> Run:
        return next(r for r in self.study.runs if r.variant == variant and not r.is_extra_seed)

    def survival_match(self, variant: Variant) -> match.Match:
        """Dense-SAE features (same seed) matched one to one into the pruned run's SAE."""
        if variant.id not in self._matches:
            dense = decoder(self.run_folder(self.dense_run(variant.model)))
            pruned = decoder(self.run_folder(self.condition_run(variant)))
            self._matches[variant.id] = match.hungarian_match(dense, pruned)
        return self._matches[variant.id]

    # ---- T1 --------------------------------------------------------------------------------
    def t1_pruning(self) -> list[dict]:
        rows = []
        variants = self.out / "variants"
        for v in self.study.variants:
            dense = variants / Variant(v.model, "dense", 0.0).id
            dense_ppl = _num(_manifest_result(dense / "perplexity").get("perplexity"))
            ppl = _num(_manifest_result(variants / v.id / "perplexity").get("perplexity"))
            achieved = _manifest_result(variants / v.id / "prune").get("achieved_sparsity")
            rows.append(
                {
                    "id": v.id,
                    "model": v.model,
                    "method": v.method,
                    "sparsity": v.sparsity,
                    "achieved_sparsity": _num(achieved),
                    "dense_perplexity": dense_ppl,
                    "perplexity": ppl,
                    "perplexity_ratio": ppl / dense_ppl,
                }
            )
        return rows

    # ---- T2 (RQ1) --------------------------------------------------------------------------
    def t2_seed_stability(self) -> list[dict]:
        rows = []
        for model in self.study.models:
            seeds = sorted(
                r.seed for r in self.study.runs if r.variant == Variant(model, "dense", 0.0)
            )
            for a, b in combinations(seeds, 2):
                m = match.hungarian_match(
                    decoder(self.run_folder(self.dense_run(model, a))),
                    decoder(self.run_folder(self.dense_run(model, b))),
                )
                pair = f"{model}/dense/0/seed-{a}-vs-seed-{b}"
                self.features[f"{pair}|matched_cosine"] = m.cosine
                rows.append(
                    {
                        "id": pair,
                        "model": model,
                        "seed_a": a,
                        "seed_b": b,
                        "shared_fraction": m.shared_fraction(self.tau),
                        "mean_matched_cosine": m.mean_cosine,
                        "mean_max_cosine": float(np.mean(m.max_cosine)),
                    }
                )
        return rows

    # ---- T3 (RQ2) --------------------------------------------------------------------------
    def survival_row(self, v: Variant) -> dict:
        m = self.survival_match(v)
        rate = firing_rate(self.run_folder(self.dense_run(v.model)))
        alive = rate > 0
        cos, maxcos = m.cosine[alive], np.asarray(m.max_cosine)[alive]
        binned = stats.binned_survival(rate[alive], cos >= self.tau, N_BINS)
        fs = stats.feature_spearman(
            rate[alive], cos, n_resamples=self.bootstrap, seed=self.study.seed
        )
        self.features[f"{v.id}|firing_rate"] = rate[alive]
        self.features[f"{v.id}|matched_cosine"] = cos
        row = {
            "id": v.id,
            "model": v.model,
            "method": v.method,
            "sparsity": v.sparsity,
            "n_alive": int(alive.sum()),
            "survival": float(np.mean(cos >= self.tau)),
            "mean_matched_cosine": float(np.mean(cos)),
            "survival_max_cosine": float(np.mean(maxcos >= self.tau)),
        }
        row.update({f"survival_bin{i + 1}": float(r) for i, r in enumerate(binned.rate)})
        row.update(
            {
                "binned_rho": binned.rho,
                "feature_rho": fs.rho,
                "feature_p": fs.pvalue,
                "feature_ci_low": fs.ci_low,
                "feature_ci_high": fs.ci_high,
            }
        )
        return row

    def t3_survival(self) -> list[dict]:
        return [self.survival_row(v) for v in self.study.conditions]

    # ---- T4 (C2) ---------------------------------------------------------------------------
    def t4_ratios(self, t3: list[dict]) -> list[dict]:
        by = {(r["model"], r["method"], r["sparsity"]): r["survival"] for r in t3}
        rows = []
        for (model, method, s), wanda in by.items():
            if method != "wanda" or (model, "magnitude", s) not in by:
                continue
            mag = by[(model, "magnitude", s)]
            rows.append(
                {
                    "id": f"{model}/{round(s * 100, 6):g}",
                    "model": model,
                    "sparsity": s,
                    "survival_wanda": wanda,
                    "survival_magnitude": mag,
                    "ratio": float(stats.wanda_magnitude_ratio(wanda, mag)),
                }
            )
        return rows

    # ---- T5 (RQ3) --------------------------------------------------------------------------
    def t5_transfer(self) -> list[dict]:
        threshold = self.study.thresholds.get("viable_ce_score", 0.9)
        rows = []
        for v in self.study.variants:
            run = self.condition_run(v)
            transfer = json.loads((self.run_folder(run) / "evaluate" / "transfer.json").read_text())
            row: dict[str, Any] = {
                "id": v.id,
                "model": v.model,
                "method": v.method,
                "sparsity": v.sparsity,
            }
            for name in ("dense", "pretrained"):
                m = transfer["saes"][name]
                for key in ("explained_variance", "mse", "l0", "dead_fraction", "ce_loss_score"):
                    row[f"{name}_{key}"] = _num(m[key])
                row[f"{name}_viable"] = bool(_num(m["ce_loss_score"]) >= threshold)
            stand_in = transfer["saes"]["pretrained"].get("stand_in", False)
            row["pretrained_is_stand_in"] = bool(stand_in)
            rows.append(row)
        return rows

    # ---- T6 (RQ4, RQ5) ---------------------------------------------------------------------
    def fragility_row(self, v: Variant) -> dict:
        fragile_r = self.study.thresholds.get("fragile_r", 0.5)
        evaluated = self.run_folder(self.condition_run(v)) / "evaluate"
        r = load_file(str(evaluated / "fragility.safetensors"))["pearson_r"]
        rate = firing_rate(self.run_folder(self.dense_run(v.model)))
        ok = np.isfinite(r)
        rho_rate = stats.feature_spearman(
            rate[ok], r[ok], n_resamples=self.bootstrap, seed=self.study.seed
        )
        dense_eval = self.run_folder(self.dense_run(v.model)) / "evaluate"
        causal = load_file(str(dense_eval / "causal.safetensors"))
        survival_score = self.survival_match(v).cosine[causal["feature"]]
        cs = stats.feature_spearman(
            causal["delta_ce"], survival_score, n_resamples=self.bootstrap, seed=self.study.seed
        )
        halves = causal.get("delta_ce_halves")
        reliability = (stats.spearman(halves[:, 0], halves[:, 1]) if halves is not None
                       else float("nan"))
        self.features.update(
            {
                f"{v.id}|pearson_r": r[ok],
                f"{v.id}|pearson_rate": rate[ok],
                f"{v.id}|causal_delta_ce": causal["delta_ce"],
                f"{v.id}|causal_survival": survival_score,
            }
        )
        return {
            "id": v.id,
            "model": v.model,
            "method": v.method,
            "sparsity": v.sparsity,
            "n_defined": int(ok.sum()),
            "fragile_fraction": float(np.mean(r[ok] < fragile_r)),
            "mean_r": float(np.mean(r[ok])),
            "median_r": float(np.median(r[ok])),
            "rho_rate_vs_r": rho_rate.rho,
            "n_causal": int(len(causal["feature"])),
            "causal_rho": cs.rho,
            "causal_p": cs.pvalue,
            "causal_ci_low": cs.ci_low,
            "causal_ci_high": cs.ci_high,
            "causal_reliability": reliability,
        }

    def t6_fragility_causal(self) -> list[dict]:
        return [self.fragility_row(v) for v in self.study.conditions]


def claims(study: Study, t3: list[dict], t4: list[dict], t5: list[dict], t6: list[dict]) -> dict:
    """C1-C4 as numbers, computed from the tables alone."""
    c1 = sum(1 for r in t3 if r["binned_rho"] == -1.0)
    finite = [r for r in t4 if math.isfinite(r["ratio"])]
    best = max(finite, key=lambda r: r["ratio"], default=None)
    c3_model, c3 = None, None
    for model, spec in study.models.items():
        if spec.pretrained_sae is None:
            continue
        level = _highest_viable(
            sorted(
                (r["sparsity"], r["pretrained_viable"])
                for r in t5
                if r["model"] == model and r["method"] == "wanda"
            )
        )
        if level is not None and (c3 is None or level < c3):
            c3, c3_model = level, model
    return {
        "C1": {"value": c1, "of": len(t3)},
        "C2": {"value": best["ratio"] if best else None, "where": best["id"] if best else None,
               "n_infinite": sum(1 for r in t4 if math.isinf(r["ratio"]))},
        "C3": {"value": c3, "model": c3_model},
        "C4": c4_evidence(t6),
    }


def c4_evidence(t6: list[dict]) -> dict:
    """C4 ("survival does not predict causal importance") as numbers that can fail.

    value: the largest |rho| over conditions (the point estimate); abs_rho_ci_high: the
    largest bound of any condition's bootstrap CI of rho, in absolute value (every |rho| lies
    below it at the CI's level, condition by condition); reliability: the smallest split-half
    Spearman of causal importance (even vs odd sequences) over conditions, which is near 0
    when the causal score is noise, so that "no correlation" is only read from a score that
    measures something.
    """
    finite = [r for r in t6 if math.isfinite(r["causal_rho"])]
    bounds = [max(abs(r["causal_ci_low"]), abs(r["causal_ci_high"])) for r in finite]
    reliability = [r["causal_reliability"] for r in t6]
    return {"value": max((abs(r["causal_rho"]) for r in finite), default=None),
            "abs_rho_ci_high": max(bounds) if bounds and all(map(math.isfinite, bounds))
            else None,
            "reliability": min(reliability) if reliability
            and all(map(math.isfinite, reliability)) else None,
            "per_condition": {r["id"]: r["causal_rho"] for r in t6}}


def _highest_viable(levels: list[tuple[float, bool]]) -> float | None:
    """Highest sparsity up to which every Wanda level is viable (0.0 when the first is not)."""
    best = 0.0 if levels else None
    for sparsity, viable in levels:
        if not viable:
            break
        best = sparsity
    return best
