"""The whole tiny profile through the CLI, as the README's first command runs it: every
stage, the six tables, the claims, the figures, the report, a passing verification; and a
second invocation that finds everything done."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from repro.study_file import load_study, profile_path
from repro.tables import TITLES

pytestmark = pytest.mark.slow


def repro(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repro", *args], capture_output=True,
                          text=True, timeout=1800)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "run"
    res = repro("all", "--profile", "tiny", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    return out


def test_tables_have_one_row_per_run_or_condition(run_dir: Path) -> None:
    study = load_study(profile_path("tiny"))
    rows = {name: list(csv.DictReader(
        (run_dir / "tables" / f"{name}.csv").read_text().splitlines())) for name in TITLES}
    conditions = {v.id for v in study.conditions}
    assert {r["id"] for r in rows["T1_pruning"]} == {v.id for v in study.variants}
    assert {r["id"] for r in rows["T3_survival"]} == conditions
    assert {r["id"] for r in rows["T6_fragility_causal"]} == conditions
    assert len(rows["T2_seed_stability"]) == 3  # seeds 0, 1, 2 pairwise
    for r in rows["T1_pruning"]:
        got, nominal = float(r["achieved_sparsity"]), float(r["sparsity"])
        if r["method"] == "wanda":  # floor(s * in_features) per row: at most one weight short
            assert nominal - 1 / 96 <= got <= nominal, r
        else:  # floor(s * numel) per matrix
            assert nominal - 1e-3 <= got <= nominal, r
    for r in rows["T3_survival"]:
        assert 0.0 <= float(r["survival"]) <= 1.0


def test_claims_figures_report_and_verification(run_dir: Path) -> None:
    claims = json.loads((run_dir / "claims.json").read_text())
    assert set(claims) == {"C1", "C2", "C3", "C4"} and claims["C1"]["of"] == 17
    assert len(list((run_dir / "figures").glob("F*.png"))) == 6
    assert (run_dir / "report.html").stat().st_size > 10_000
    verdict = json.loads((run_dir / "verification.json").read_text())
    assert verdict["ok"] is True


def test_second_run_does_nothing(run_dir: Path) -> None:
    res = repro("all", "--profile", "tiny", "--out", str(run_dir), "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "everything is already done" in res.stdout
