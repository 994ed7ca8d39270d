"""The five research questions across runs: the rows of Tables 1-6 and the four claims.

Run by `repro all` after every run's sae and evaluate stages (stage folder `analysis/`).
Reads only files: prune/perplexity manifests, each run's SAE decoder and firing rates, and
the evaluate stage's transfer/fragility/causal files (formats in repro/stages/run_stages.py).

Survival (RQ2) is measured over the features alive on the dense model (firing on the
evaluation tokens at least once, repro.science.survival): a feature that never fires has no
behaviour for pruning to keep.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from repro.outputs.matchings import Matchings
from repro.science import match, stats
from repro.science.survival import alive as is_alive
from repro.science.survival import n_survived, survival_rate
from repro.stages import layout
from repro.study.methods import UNSTRUCTURED, Pattern
from repro.study.spec import Run, Study, Variant


def decoder(run_folder: Path) -> np.ndarray:
    """The SAE's decoder rows (width x d_model) as saved by sae-lens."""
    weights = load_file(str(run_folder / "sae" / "sae_weights.safetensors"))
    # float64 from here on: cosines, matching and statistics add no rounding of their own,
    # so two machines that trained the same SAE bits get the same tables
    return weights["W_dec"].astype(np.float64)


def firing_rate(run_folder: Path) -> np.ndarray:
    return load_file(str(run_folder / "sae" / "firing_rates.safetensors"))["firing_rate"]


def _manifest_result(folder: Path) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text())["result"]
    except (OSError, ValueError, KeyError):
        return {}


def as_float(x: Any) -> float:
    """A manifest's or evaluation file's number as a float; None (not measured) is NaN."""
    return float("nan") if x is None else float(x)


class Analysis(Matchings):
    """Reads a run folder once and computes every table row from it."""

    def __init__(self, study: Study, out: Path, bootstrap: int = 1000,
                 replicate: int = 0) -> None:
        self.study, self.out, self.bootstrap = study, out, bootstrap
        self.runs = study.replicate_runs(replicate)
        """The runs this analysis reads: one replicate's (repro.outputs.replicates)."""
        self.tau = study.sae.survival_threshold
        self.n_bins = study.thresholds.frequency_bins
        self._matches: dict[str, match.Match] = {}
        self._read: dict[tuple[str, str], np.ndarray] = {}
        self.features: dict[str, np.ndarray] = {}
        """Per-feature arrays behind the rows, keyed 'ID|name', for the figures."""
        self.patterned = any(v.pattern != UNSTRUCTURED for v in study.conditions)
        """Whether rows carry a `pattern` column: only a study with an N:M condition has one,
        so the paper's tables (and the blessed tiny and small ones) keep their columns."""

    def head(self, v: Variant) -> dict[str, Any]:
        """The columns that name a variant, first in every per-variant row."""
        pattern = {"pattern": v.pattern} if self.patterned else {}
        return {"id": v.id, "model": v.model, "method": v.method, **pattern,
                "sparsity": v.sparsity}

    def run_folder(self, run: Run) -> Path:
        return layout.run_folder(self.out, run)

    def _once(self, what: str, run: Run, read: Callable[[Path], Any]) -> Any:
        """Read a run's file once: every condition re-reads its model's dense run."""
        key = (what, run.id)
        if key not in self._read:
            self._read[key] = read(self.run_folder(run))
        return self._read[key]

    def decoder_of(self, run: Run) -> np.ndarray:
        return self._once("decoder", run, decoder)

    def rates_of(self, run: Run) -> np.ndarray:
        return self._once("firing_rate", run, firing_rate)

    def dense_run(self, model: str) -> Run:
        """The model's dense run of the study's base seed (in this replicate)."""
        return self.condition_run(Variant(model, "dense", 0.0))

    def condition_run(self, variant: Variant) -> Run:
        return next(r for r in self.runs if r.variant == variant
                    and not r.is_extra_seed and not r.is_control)

    def control_run(self, variant: Variant) -> Run | None:
        """The variant's control-seed SAE run, when the study declares a control_seed."""
        return next((r for r in self.runs if r.variant == variant and r.is_control), None)

    def fragility_of(self, variant: Variant) -> dict[str, np.ndarray]:
        """The condition's RQ4 file (evaluate/fragility.safetensors), read once."""
        return self._once("fragility", self.condition_run(variant),
                          lambda folder: load_file(str(folder / "evaluate"
                                                       / "fragility.safetensors")))

    def dense_firing_rate(self, variant: Variant) -> np.ndarray:
        """Per latent of the dense SAE, its firing rate on the dense model: what RQ2's bins
        and RQ4's rate correlation rank features by, for every condition of the model."""
        return self.rates_of(self.dense_run(variant.model))

    # ---- T1 --------------------------------------------------------------------------------
    def t1_pruning(self) -> list[dict]:
        rows = []
        for v in self.study.variants:
            dense = layout.variant_dir(self.out, Variant(v.model, "dense", 0.0), "perplexity")
            dense_ppl = as_float(_manifest_result(dense).get("perplexity"))
            ppl = as_float(_manifest_result(layout.variant_dir(self.out, v, "perplexity"))
                       .get("perplexity"))
            achieved = _manifest_result(layout.variant_dir(self.out, v, "prune")
                                        ).get("achieved_sparsity")
            rows.append(
                {
                    **self.head(v),
                    "achieved_sparsity": as_float(achieved),
                    "dense_perplexity": dense_ppl,
                    "perplexity": ppl,
                    "perplexity_ratio": ppl / dense_ppl,
                }
            )
        return rows

    # ---- T2 (RQ1) --------------------------------------------------------------------------
    def t2_seed_stability(self) -> list[dict]:
        return [row for model in self.study.models for row in self.seed_rows(model)]

    def dense_seeds(self, model: str) -> list[Run]:
        """The model's dense runs of every seed (RQ1), control SAEs aside."""
        return sorted((r for r in self.runs if r.variant == Variant(model, "dense", 0.0)
                       and not r.is_control), key=lambda r: r.seed)

    def seed_rows(self, model: str) -> list[dict]:
        """T2's rows of one model: each pair of its dense seeds."""
        rows = []
        for run_a, run_b in combinations(self.dense_seeds(model), 2):
            a, b = run_a.base_seed, run_b.base_seed
            m = self.seed_match(run_a, run_b)
            # over seed a's features alive on the dense model: RQ2's denominator
            alive = is_alive(self.rates_of(run_a))
            cos = m.cosine[alive]
            pair = f"{model}/dense/0/seed-{a}-vs-seed-{b}"
            self.features[f"{pair}|matched_cosine"] = cos
            rows.append(
                {
                    "id": pair,
                    "model": model,
                    "seed_a": a,
                    "seed_b": b,
                    "n_alive": int(alive.sum()),
                    "n_dead": int((~alive).sum()),
                    "shared_fraction": survival_rate(cos, self.tau),
                    "mean_matched_cosine": float(np.mean(cos)),
                    "mean_max_cosine": float(np.mean(np.asarray(m.max_cosine)[alive])),
                }
            )
        return rows

    # ---- T3 (RQ2) --------------------------------------------------------------------------
    def survival_row(self, v: Variant) -> dict:
        m = self.survival_match(v)
        rate = self.dense_firing_rate(v)
        alive = is_alive(rate)
        cos, maxcos = m.cosine[alive], np.asarray(m.max_cosine)[alive]
        effect = self.frequency_effect(rate[alive], cos)
        binned, fs = effect.binned, effect.feature
        self.features[f"{v.id}|firing_rate"] = rate[alive]
        self.features[f"{v.id}|matched_cosine"] = cos
        row = {
            **self.head(v),
            "n_alive": int(alive.sum()),
            "survival": effect.survival,
            "n_survived": n_survived(cos, self.tau),
            "mean_matched_cosine": float(np.mean(cos)),
            "survival_max_cosine": survival_rate(maxcos, self.tau),
        }
        row.update({f"survival_bin{i + 1}": float(r) for i, r in enumerate(binned.rate)})
        row.update(
            {
                "binned_rho": binned.rho,
                "feature_rho": fs.rho,
                "feature_p": fs.pvalue,
                "feature_ci_low": fs.ci_low,
                "feature_ci_high": fs.ci_high,
                # latent i of the dense SAE paired with latent i of the pruned one: what a
                # shared initialisation and data order make Hungarian matching do
                "identity_rate": match.identity_rate(m, alive),
            }
        )
        row.update(self.seed_control(v, rate, alive))
        return row

    def frequency_effect(self, rate: np.ndarray, cos: np.ndarray) -> stats.FrequencyEffect:
        return stats.frequency_effect(rate, cos, tau=self.tau, n_bins=self.n_bins,
                                      n_resamples=self.bootstrap, seed=self.study.seed)

    def seed_control(self, v: Variant, rate: np.ndarray, alive: np.ndarray) -> dict:
        """RQ2 again against the control-seed SAEs (docs/design.md, "Seed control"): survival
        into the pruned model's control SAE, its frequency effect, the seed-to-seed floor
        (dense vs the dense model's control SAE, the same alive features), and each
        firing-rate bin's drift of the dense SAE from its initial decoder."""
        control = self.control_match(v)
        dense_control = self.control_match(Variant(v.model, "dense", 0.0))
        if control is None or dense_control is None:
            return {}
        cos = control.cosine[alive]
        effect = self.frequency_effect(rate[alive], cos)
        binned, fs = effect.binned, effect.feature
        self.features[f"{v.id}|control_cosine"] = cos
        row = {"survival_control": effect.survival,
               "n_survived_control": n_survived(cos, self.tau),
               "seed_floor": survival_rate(dense_control.cosine[alive], self.tau),
               "binned_rho_control": binned.rho, "feature_rho_control": fs.rho,
               "identity_rate_control": match.identity_rate(control, alive)}
        row.update({f"survival_control_bin{i + 1}": float(r) for i, r in enumerate(binned.rate)})
        drift = self.init_drift(v.model)
        if drift is not None:
            per_bin = stats.binned_survival(rate[alive], drift[alive], self.n_bins).rate
            row.update({f"init_drift_bin{i + 1}": float(d) for i, d in enumerate(per_bin)})
        return row

    def init_drift(self, model: str) -> np.ndarray | None:
        """Per latent of the dense SAE, 1 - cosine between its trained and its initial
        decoder row (0: never moved); None for an SAE saved without its initial decoder."""
        return self._once("init_drift", self.dense_run(model), _init_drift)

    def t3_survival(self) -> list[dict]:
        return [self.survival_row(v) for v in self.study.conditions]

    # ---- T4 (C2) ---------------------------------------------------------------------------
    def t4_ratios(self, t3: list[dict]) -> list[dict]:
        # rows of tables written before patterns existed are unstructured
        by = {(r["model"], r["method"], r.get("pattern", UNSTRUCTURED), r["sparsity"]): r
              for r in t3}
        rows = []
        for (model, method, pattern, s), wanda in by.items():
            if method != "wanda" or (model, "magnitude", pattern, s) not in by:
                continue
            mag = by[(model, "magnitude", pattern, s)]
            tag = Pattern.parse(pattern).tag  # unstructured rows keep the paper's ids
            row = {"id": "/".join([model, *([tag] if tag else []), f"{round(s * 100, 6):g}"]),
                   "model": model, **({"pattern": pattern} if self.patterned else {}),
                   "sparsity": s}
            for suffix in ("", "_control"):
                if f"survival{suffix}" not in wanda:
                    continue
                w, m = wanda[f"survival{suffix}"], mag[f"survival{suffix}"]
                fewest = min(wanda[f"n_survived{suffix}"], mag[f"n_survived{suffix}"])
                row.update({f"survival_wanda{suffix}": w, f"survival_magnitude{suffix}": m,
                            f"ratio{suffix}": float(stats.wanda_magnitude_ratio(w, m)),
                            # a rate of a handful of features moves by a third with one of
                            # them: such a ratio is reported, never used by C2
                            f"ratio{suffix}_usable": fewest >= self.study.verdict.min_features})
            rows.append(row)
        return rows

    # ---- T5 (RQ3) --------------------------------------------------------------------------
    def t5_transfer(self) -> list[dict]:
        return [self.transfer_row(v) for v in self.study.variants]

    def transfer_row(self, v: Variant) -> dict:
        """T5's row of one variant: both SAEs evaluated on it."""
        threshold = self.study.thresholds.viable_ce_score
        run = self.condition_run(v)
        transfer = json.loads((self.run_folder(run) / "evaluate" / "transfer.json").read_text())
        if "pretrained" not in transfer["saes"]:  # a further replicate: measured in 0 only
            first = self.run_folder(run.replicated(0)) / "evaluate" / "transfer.json"
            transfer["saes"]["pretrained"] = json.loads(first.read_text())["saes"]["pretrained"]
        row: dict[str, Any] = self.head(v)
        for name in ("dense", "pretrained"):
            m = transfer["saes"][name]
            for key in ("explained_variance", "mse", "l0", "dead_fraction", "ce_loss_score"):
                row[f"{name}_{key}"] = as_float(m[key])
            row[f"{name}_viable"] = bool(as_float(m["ce_loss_score"]) >= threshold)
        stand_in = transfer["saes"]["pretrained"].get("stand_in", False)
        row["pretrained_is_stand_in"] = bool(stand_in)
        return row

    # ---- T6 (RQ4, RQ5) ---------------------------------------------------------------------
    def fragility_row(self, v: Variant) -> dict:
        return {**self.head(v), **self._fragility(v), **self._causal(v)}

    def _fragility(self, v: Variant) -> dict:
        """RQ4 over the dense model's alive features, the silenced ones counted as fragile."""
        fragile_r = self.study.thresholds.fragile_r
        frag = self.fragility_of(v)
        r = frag["pearson_r"]
        rate = self.dense_firing_rate(v)
        ok = np.isfinite(r)
        # alive on the dense model and never firing on the pruned one: r is undefined, but
        # such a feature is the most fragile of all, so it counts as fragile
        silenced = silenced_features(frag)
        n_fragile = int(np.sum(r[ok] < fragile_r)) + int(silenced.sum())
        rho_rate = stats.feature_spearman(
            rate[ok], r[ok], n_resamples=self.bootstrap, seed=self.study.seed
        )
        self.features.update({f"{v.id}|pearson_r": r[ok], f"{v.id}|pearson_rate": rate[ok]})
        return {
            "n_defined": int(ok.sum()),
            "n_silenced": int(silenced.sum()),
            "fragile_fraction": n_fragile / max(1, int(ok.sum()) + int(silenced.sum())),
            "mean_r": float(np.mean(r[ok])),
            "median_r": float(np.median(r[ok])),
            "rho_rate_vs_r": rho_rate.rho,
        }

    def _causal(self, v: Variant) -> dict:
        """RQ5: causal importance (total and per firing token) against survival, with the
        split-half reliability of each and their correlation with the firing rate."""
        dense_eval = self.run_folder(self.dense_run(v.model)) / "evaluate"
        causal = load_file(str(dense_eval / "causal.safetensors"))
        survival_score = self.survival_match(v).cosine[causal["feature"]]
        rate = self.dense_firing_rate(v)[causal["feature"]]
        row: dict[str, Any] = {"n_causal": int(len(causal["feature"]))}
        for suffix, key in (("", "delta_ce"), ("_per_firing", "delta_ce_per_firing")):
            if key not in causal:  # a causal file from before the per-firing form
                continue
            cs = stats.feature_spearman(causal[key], survival_score,
                                        n_resamples=self.bootstrap, seed=self.study.seed)
            halves = causal.get(key.replace("delta_ce", "delta_ce_halves"))
            row.update({f"causal_rho{suffix}": cs.rho, f"causal_p{suffix}": cs.pvalue,
                        f"causal_ci_low{suffix}": cs.ci_low,
                        f"causal_ci_high{suffix}": cs.ci_high,
                        f"causal_reliability{suffix}": stats.spearman(halves[:, 0], halves[:, 1])
                        if halves is not None else float("nan"),
                        f"causal_rate_rho{suffix}": stats.spearman(rate, causal[key])})
        self.features.update({f"{v.id}|causal_delta_ce": causal["delta_ce"],
                              f"{v.id}|causal_survival": survival_score})
        return row

    def t6_fragility_causal(self) -> list[dict]:
        return [self.fragility_row(v) for v in self.study.conditions]


def silenced_features(frag: dict[str, np.ndarray]) -> np.ndarray:
    """Features alive on the dense model that never fire on the compressed one: r is
    undefined for them, yet they are the most fragile of all."""
    return is_alive(frag["fires_dense"]) & ~is_alive(frag["fires_pruned"])


def _init_drift(run_folder: Path) -> np.ndarray | None:
    path = run_folder / "sae" / "init_decoder.safetensors"
    if not path.is_file():
        return None
    init = load_file(str(path))["W_dec"].astype(np.float64)
    final = decoder(run_folder).astype(np.float64)
    num = (init * final).sum(1)
    den = np.linalg.norm(init, axis=1) * np.linalg.norm(final, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - np.where(den > 0, num / den, np.nan)
