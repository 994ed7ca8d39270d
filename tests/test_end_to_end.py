"""The whole tiny profile through the CLI: every stage, the six tables, the claims, the
figures, the report, a passing verification; and a second invocation that finds everything
done. The run is the session's one tiny run (tests/conftest.py: the package installed as the
image installs it, run through entrypoint.sh); everything after it runs the checkout's code,
so the second invocation also shows that a checkout and an install compute the same stage
keys."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edit_code import manifests

from repro.outputs.tables import TABLE_NAMES
from repro.study.reader import load_study, profile_path

pytestmark = pytest.mark.slow


def repro(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repro", *args], capture_output=True,
                          text=True, timeout=1800)


@pytest.fixture(scope="module")
def run_dir(installed_tiny) -> Path:
    res = installed_tiny.run
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    return installed_tiny.out


def test_tables_have_one_row_per_run_or_condition(run_dir: Path) -> None:
    study = load_study(profile_path("tiny"))
    rows = {name: list(csv.DictReader(
        (run_dir / "tables" / f"{name}.csv").read_text().splitlines())) for name in TABLE_NAMES}
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
    assert set(claims) == {"C1", "C2", "C3", "C4", "C4_per_firing", "C1_control",
                           "C2_control"} and claims["C1"]["of"] == 17
    assert len(list((run_dir / "figures").glob("F*.png"))) == 6
    assert (run_dir / "report.html").stat().st_size > 10_000
    verdict = json.loads((run_dir / "verification.json").read_text())
    assert verdict["ok"] is True


def test_matchings_in_worker_processes_give_the_same_tables(run_dir: Path,
                                                            monkeypatch) -> None:
    """The analysis with every matching computed up front in 2 worker processes (what a
    many-core GPU host does, `Analysis.prefetch_matches`) writes the tables of the
    one-process analysis, to the last digit, and asked for each matching once."""
    from types import SimpleNamespace

    from repro.outputs.tables import replicate_tables
    from repro.science import match

    ctx = SimpleNamespace(study=load_study(profile_path("tiny")), out=run_dir)
    many, asked = match.hungarian_many, []

    def counted(pairs, workers):
        asked.append((len(pairs), workers))
        return many(pairs, workers)

    monkeypatch.setattr(match, "hungarian_many", counted)
    monkeypatch.setattr(match, "match_workers", lambda *args, **kwargs: 2)
    a, parallel, _ = replicate_tables(ctx, 0)
    monkeypatch.setattr(match, "match_workers", lambda *args, **kwargs: 1)
    _, serial, _ = replicate_tables(ctx, 0)
    assert asked == [(len(a.matched_pairs()), 2)] and len(a.matched_pairs()) > 17
    assert json.dumps(parallel, sort_keys=True) == json.dumps(serial, sort_keys=True)


def test_second_run_does_nothing(run_dir: Path) -> None:
    res = repro("all", "--profile", "tiny", "--out", str(run_dir), "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "everything is already done" in res.stdout
    # and bless, reading the same code hashes from every manifest, finds no stage stale
    from repro.outputs.bless import stale_stages
    assert stale_stages(run_dir) == []


PLANTED = {  # mistake -> a check of `repro verify` that must fail, as "table: column"
    "swapped-matching": "T3_survival: feature_rho",
    "pruned-firing-rates": "T3_survival: feature_rho",
    "uniform-firing-rates": "T3_survival: feature_rho",
    "binned-rho-sign": "T3_survival: binned_rho",
    "causal-sign": "T6_fragility_causal: causal_rho",
    "c2-inverted": "T4_ratios: ratio",
    "survival-threshold": "T3_survival: survival",
    "rq3-dense-activations": "T5_transfer: dense_explained_variance",
}


def _failed_columns(names: list[str]) -> set[str]:
    """'T3_survival[gemma-3-tiny/wanda/50].binned_rho' -> 'T3_survival: binned_rho'."""
    return {f"{n.split('[')[0]}: {n.rsplit('.', 1)[1]}" for n in names if "[" in n}


@pytest.mark.parametrize("mistake", ["none", *PLANTED])
def test_planted_mistakes_fail_verification(run_dir: Path, tmp_path: Path, mistake: str) -> None:
    """Negative controls of the verdict: each planted mistake (tests/plant.py), with only the
    stages it touches redone on a hard-linked copy of the run, fails `repro verify` at the
    table and column named here; the same stages redone unpatched still pass."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, copy_function=os.link)
    res = subprocess.run([sys.executable, str(Path(__file__).parent / "plant.py"), mistake,
                          str(copy)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    if mistake == "none":
        assert got == {"ok": True, "failed": []}
    else:
        assert not got["ok"] and PLANTED[mistake] in _failed_columns(got["failed"]), got


@pytest.mark.parametrize("module,edit,redone", [
    ("repro.outputs.analysis", "code", ["analysis", "figures", "tables"]),
    ("repro.outputs.figures", "code", ["figures"]),
    ("repro.outputs.analysis", "docstring", []),
])
def test_an_edited_module_redoes_exactly_its_stages(run_dir: Path, tmp_path: Path, module: str,
                                                    edit: str, redone: list[str]) -> None:
    """The cache knows the code: a stage whose code changed (one statement) is redone, with
    what reads it, and nothing else; a docstring or comment edit redoes nothing
    (tests/edit_code.py edits the module as the cache sees it)."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, copy_function=os.link)
    res = subprocess.run([sys.executable, str(Path(__file__).parent / "edit_code.py"), module,
                          str(copy), edit], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == redone


def test_corrupted_artifacts_are_named_and_redone(run_dir: Path) -> None:
    """A truncated SAE, an altered activation chunk and an edited table: the next run names
    each file, redoes exactly those three stages (their recomputed outputs hash the same, so
    nothing downstream is redone) and verifies again. Runs last: it rewrites the fixture."""
    sae = run_dir / "runs" / "gemma-3-tiny" / "wanda" / "50" / "sae" / "sae_weights.safetensors"
    chunk = sorted((run_dir / "variants" / "llama-tiny" / "dense" / "0" / "activations")
                   .glob("*.safetensors"))[0]
    table = run_dir / "tables" / "T3_survival.csv"
    originals = {path: path.read_bytes() for path in (sae, chunk, table)}
    sae.write_bytes(originals[sae][: len(originals[sae]) // 2])
    altered = bytearray(originals[chunk])
    altered[-5] ^= 0xFF
    chunk.write_bytes(bytes(altered))
    table.write_text(originals[table].decode().replace("0.", "0.9", 1))
    before = manifests(run_dir)
    res = repro("all", "--profile", "tiny", "--out", str(run_dir), "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    for path in originals:
        assert f"{path.parent}: {path.name} does not match its recorded sha256" in res.stderr
        assert path.read_bytes() == originals[path]  # recomputed, bit for bit
    after = manifests(run_dir)
    redone = sorted(k for k in after if after[k] != before.get(k))
    assert redone == sorted(str(p.parent.relative_to(run_dir)) for p in originals), redone
    assert "verification PASS" in res.stdout
