"""Spread of every numeric table column across repeated runs of one profile.

    python scripts/table_spread.py RUN_A RUN_B [RUN_C ...] > spread.json

The runs differ only in a source of nondeterminism (thread count, BLAS, machine); the
printed max |difference| per table and column is what the tolerances in
expected_outputs/tolerances.toml are a stated multiple of.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd


def spread(runs: list[Path]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for csv in sorted((runs[0] / "tables").glob("*.csv")):
        frames = [pd.read_csv(r / "tables" / csv.name).set_index("id") for r in runs]
        cols = {}
        for col in frames[0].columns:
            values = [f[col] for f in frames]
            if not all(pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v)
                       for v in values):
                continue
            diffs = [float((v.astype(float) - values[0].astype(float)).abs().max())
                     for v in values[1:]]
            cols[col] = max((d for d in diffs if not math.isnan(d)), default=0.0)
        out[csv.stem] = cols
    return out


if __name__ == "__main__":
    json.dump(spread([Path(p) for p in sys.argv[1:]]), sys.stdout, indent=1)
    print()
