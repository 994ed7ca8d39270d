"""How good a run's SAEs are, and which claims rest on SAEs below the quality bar.

Per model, its dense SAE measured on its own dense model's evaluation tokens (T5: explained
variance, L0, dead fraction; width and k from the SAE's training.json) and the seed floor
(T3's seed_floor, else T2's shared fraction). The bar is the one issue 24 set for real-model
SAEs (docs/profiles.md): a claim that rests on an SAE below it is flagged on the report's
first screen, because a survival rate measured with weak SAEs says more about the SAEs than
about pruning.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from repro.stages import layout
from repro.study.spec import Run, Variant


@dataclass(frozen=True)
class QualityBar:
    """What an SAE must reach for the claims that rest on it to be read without a flag."""

    min_explained_variance: float = 0.85
    """Share of the residual stream's variance the dense SAE reconstructs."""
    max_dead_fraction: float = 0.05
    """Share of latents that never fire on the evaluation tokens."""
    min_seed_floor: float = 0.3
    """Share of features two SAEs of different seeds share (Paulo & Belrose, arXiv
    2501.16615, measure about 0.3 for large TopK SAEs)."""


BAR = QualityBar()
SAE_CLAIMS = ("C1", "C1_of", "C2", "C4", "C4_per_firing", "C1_control", "C2_control")
"""The claims computed from the run's own SAEs (C3 reads a pre-trained SAE)."""


@dataclass(frozen=True)
class ModelQuality:
    """One model's dense SAE, as measured by the run (NaN where a table lacks the number)."""

    model: str
    explained_variance: float
    l0: float
    dead_fraction: float
    seed_floor: float
    width: int | None = None
    k: int | None = None

    def shortfalls(self, bar: QualityBar = BAR) -> list[str]:
        """Each way the SAE misses the bar, in words (`EV 0.75 < 0.85`); [] when it meets it."""
        out = []
        if self.explained_variance < bar.min_explained_variance:
            out.append(f"EV {self.explained_variance:.2f} < {bar.min_explained_variance:g}")
        if self.dead_fraction > bar.max_dead_fraction:
            out.append(f"dead {100 * self.dead_fraction:.2g} % > "
                       f"{100 * bar.max_dead_fraction:g} %")
        if self.seed_floor < bar.min_seed_floor:
            out.append(f"seed floor {self.seed_floor:.2f} < {bar.min_seed_floor:g}")
        return out  # a NaN compares False: an unmeasured number is not called a shortfall

    def line(self, value_text) -> str:
        """`m: EV 0.89, L0 16 (k 16 of 512), dead 11 %, seed floor 0.82`, numbers rounded by
        `value_text` (repro.outputs.report_claims.value_text)."""
        size = f" (k {self.k} of {self.width})" if self.width and self.k else ""
        text = (f"{self.model}: EV {value_text(self.explained_variance, 2)}, "
                f"L0 {value_text(self.l0)}{size}, "
                f"dead {value_text(100 * self.dead_fraction, 2)} %")
        if not math.isnan(self.seed_floor):
            text += f", seed floor {value_text(self.seed_floor, 2)}"
        missed = self.shortfalls()
        return text + (f" (below the bar: {', '.join(missed)})" if missed else "")


def _frame(tables: dict[str, pd.DataFrame], name: str) -> pd.DataFrame:
    df = tables.get(name)
    return df if isinstance(df, pd.DataFrame) else pd.DataFrame()


def _training(run_dir: Path, model: str) -> dict[str, Any]:
    dense = Run(Variant(model, "dense", 0.0), 0)  # its id names no seed: any seed will do
    path = layout.run_dir(run_dir, dense, "sae") / "training.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _seed_floor(t3: pd.DataFrame, t2: pd.DataFrame, model: str) -> float:
    for df, column in ((t3, "seed_floor"), (t2, "shared_fraction")):
        if column in df and "model" in df:
            values = df.loc[df["model"] == model, column].dropna()
            if len(values):
                return float(values.mean())
    return math.nan


def measure(run_dir: Path, tables: dict[str, pd.DataFrame]) -> list[ModelQuality]:
    """Every model's dense SAE quality, from the run's tables and its dense SAE's record."""
    t5, t3, t2 = (_frame(tables, n) for n in ("T5_transfer", "T3_survival",
                                               "T2_seed_stability"))
    if "method" not in t5 or "dense_explained_variance" not in t5:
        return []
    out = []
    for _, row in t5[t5["method"] == "dense"].iterrows():
        model = str(row["model"])
        train = _training(run_dir, model)
        out.append(ModelQuality(
            model=model, explained_variance=float(row["dense_explained_variance"]),
            l0=float(row.get("dense_l0", math.nan)),
            dead_fraction=float(row.get("dense_dead_fraction", math.nan)),
            seed_floor=_seed_floor(t3, t2, model),
            width=train.get("width"), k=train.get("k")))
    return out


def flag_claims(rows: list, qualities: list[ModelQuality]) -> list:
    """The claim rows (repro.outputs.report_claims.ClaimRow) with a note on each claim that
    rests on an SAE below the bar, naming the models; the other rows unchanged."""
    weak = [q.model for q in qualities if q.shortfalls()]
    if not weak:
        return rows
    note = f"rests on SAEs below the quality bar ({', '.join(weak)})"
    return [dataclasses.replace(r, value_note="; ".join(n for n in (r.value_note, note) if n))
            if r.name in SAE_CLAIMS else r for r in rows]


LEGEND = ("each model's dense SAE on its own dense model's evaluation tokens (T5): EV "
          "explained variance, L0 latents active per token (k of the width: the TopK "
          "SAE's setting), dead the share of latents that never fire; seed floor: the "
          "share of its features that an SAE of another seed on the same dense model "
          "matches (T3 seed_floor, else T2), the survival a pruned model's SAE would show "
          f"from the seed alone. The bar: EV ≥ {BAR.min_explained_variance:g}, dead ≤ "
          f"{100 * BAR.max_dead_fraction:g} %, seed floor ≥ {BAR.min_seed_floor:g}; a claim "
          "resting on an SAE below it says so under its value")
