"""An unfinished run folder (`repro all --runs/--shard`): which rows can already be compared,
the PARTIAL verdict of what finished (exit code 3, 1 when a compared row fails), the same
words from `repro verify` and `repro report`, and the command that finishes the rest.

The fast tests fabricate finished stage folders (real manifests through the artifact store);
the slow one runs `repro all --profile tiny --runs ...` for real.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from repro.cli import main
from repro.outputs import partial
from repro.outputs.expected import EXPECTED_ROOT
from repro.stages.store import run_stage
from repro.study.reader import load_study, profile_path
from repro.study.spec import Variant

PROV = {"code_version": "test", "device": "cpu"}


def _stage(run: Path, rel: str, result: dict | None = None) -> None:
    run_stage(run / rel, {"rel": rel}, lambda tmp: result, provenance=PROV)


def _tiny_folder(root: Path) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "study.toml").write_text(profile_path("tiny").read_text())
    return run


def _units(run: Path) -> set[tuple[str, str]]:
    study = load_study(run / "study.toml")
    return {(u.table, str(u.key.id if isinstance(u.key, Variant) else u.key))
            for u in partial.comparable(study, run)}


def test_a_row_is_compared_once_every_stage_it_reads_has_finished(tmp_path: Path) -> None:
    run = _tiny_folder(tmp_path)
    w50, m50, dense = "gemma-3-tiny/wanda/50", "gemma-3-tiny/magnitude/50", "gemma-3-tiny/dense/0"
    assert _units(run) == set()
    # `--runs gemma-3-tiny/wanda/50`: its variant stages, its SAE and evaluation, and the SAE
    # (only) of the dense run it is compared with
    for v in (dense, w50):
        _stage(run, f"variants/{v}/prune")
        _stage(run, f"variants/{v}/perplexity")
    for rel in (f"runs/{w50}/sae", f"runs/{w50}/evaluate", f"runs/{dense}/sae"):
        _stage(run, rel)
    assert _units(run) == {("T1_pruning", dense), ("T1_pruning", w50), ("T5_transfer", w50)}
    # T3 also reads both control-seed SAEs; T6 the dense run's evaluation; T4 both methods
    _stage(run, f"runs/{w50}/control-seed-1000/sae")
    _stage(run, f"runs/{dense}/control-seed-1000/sae")
    assert ("T3_survival", w50) in _units(run) and ("T6_fragility_causal", w50) not in _units(run)
    _stage(run, f"runs/{dense}/evaluate")
    for rel in (f"runs/{m50}/sae", f"runs/{m50}/control-seed-1000/sae"):
        _stage(run, rel)
    got = _units(run)
    assert {("T6_fragility_causal", w50), ("T3_survival", m50),
            ("T4_ratios", "('gemma-3-tiny', 'unstructured', 0.5)"), ("T5_transfer", dense)} <= got
    assert ("T2_seed_stability", "gemma-3-tiny") not in got  # seeds 1 and 2 have not run
    assert ("T6_fragility_causal", m50) not in got  # its own evaluation has not run


def _expected_t1() -> dict[str, dict[str, str]]:
    with open(EXPECTED_ROOT / "tiny" / "T1_pruning.csv", newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def _perplexity_run(root: Path, wanda_perplexity: float | None = None) -> Path:
    """A tiny run folder in which gemma-3-tiny's dense and Wanda 50 % variants were pruned and
    measured, with the blessed run's numbers (or a planted perplexity for the Wanda one)."""
    run = _tiny_folder(root)
    t1 = _expected_t1()
    for vid in ("gemma-3-tiny/dense/0", "gemma-3-tiny/wanda/50"):
        ppl = float(t1[vid]["perplexity"])
        if vid.endswith("wanda/50") and wanda_perplexity is not None:
            ppl = wanda_perplexity
        _stage(run, f"variants/{vid}/prune",
               {"achieved_sparsity": float(t1[vid]["achieved_sparsity"])})
        _stage(run, f"variants/{vid}/perplexity", {"perplexity": ppl})
    return run


def test_what_finished_is_compared_and_the_run_ends_partial(tmp_path: Path, capsys) -> None:
    run = _perplexity_run(tmp_path)
    assert main(["verify", str(run)]) == partial.PARTIAL_EXIT == 3
    out = capsys.readouterr().out
    head = out.splitlines()[0]
    assert head.startswith("verification PARTIAL: 0 of 42 runs finished, 2 of ")
    assert "expected rows compared (T1_pruning 2): 14 cells pass, 0 fail" in head
    assert "  not finished: 42 runs (gemma-3-tiny/dense/0, " in out
    assert f"  finish with: repro all --profile tiny --out {run} (it resumes" in out
    assert "--runs" not in out and "rerun the same" not in out
    result = json.loads((run / "verification.json").read_text())
    assert result["partial"] and result["compared"] == {
        "T1_pruning": ["gemma-3-tiny/dense/0", "gemma-3-tiny/wanda/50"]}
    # `repro report` says the same, at the top of the report
    assert main(["report", str(run)]) == 0
    assert head in capsys.readouterr().out
    md = (run / "report.md").read_text()
    assert f"**{head[0].upper()}{head[1:]}.** Finish with `repro all --profile tiny" in md
    assert "NOT YET" in md  # the claims need every run


def test_a_compared_row_that_disagrees_fails_the_partial_run(tmp_path: Path, capsys) -> None:
    """Negative control: the Wanda variant's perplexity planted 5 % off its blessed value."""
    blessed = float(_expected_t1()["gemma-3-tiny/wanda/50"]["perplexity"])
    run = _perplexity_run(tmp_path, wanda_perplexity=blessed * 1.05)
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("verification FAIL: 0 of 42 runs finished, 2 of ")
    assert "FAIL T1_pruning[gemma-3-tiny/wanda/50].perplexity:" in out
    assert "FAIL T1_pruning[gemma-3-tiny/wanda/50].perplexity_ratio:" in out


def test_a_folder_of_ones_own_study_names_the_study_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "study.toml").write_text(profile_path("tiny").read_text() + "\n# edited\n")
    assert partial.finish_command(run) == (
        f"repro all --study YOUR_STUDY.toml --out {run}")
    assert partial.finish_command(run, Path("mine.toml"), Path("exp")) == (
        f"repro all --study mine.toml --out {run} --expected exp")


@pytest.mark.slow
def test_repro_all_with_runs_ends_partial_and_compares_what_finished(tmp_path: Path) -> None:
    """The real thing: one condition of the tiny profile, then verify and report on it."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "repro"]
    done = subprocess.run([*cmd, "all", "--profile", "tiny", "--out", str(out), "--quiet",
                           "--runs", "gemma-3-tiny/wanda/50"], capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 3, done.stdout + done.stderr[-3000:]
    head = done.stdout.splitlines()[0]
    # the perplexities of both variants and the Wanda run's transfer row match the blessed run
    assert head.startswith("verification PARTIAL: 1 of 42 runs finished, 3 of "), done.stdout
    assert "(T1_pruning 2, T5_transfer 1): 30 cells pass, 0 fail;" in head
    assert f"finish with: repro all --profile tiny --out {out} (it resumes" in done.stdout
    assert "partly: 1 run with an SAE but no evaluation yet (gemma-3-tiny/dense/0)" \
        in done.stdout
    again = subprocess.run([*cmd, "verify", str(out)], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 3 and again.stdout.splitlines()[0] == head
    report = subprocess.run([*cmd, "report", str(out)], capture_output=True, text=True,
                            timeout=600)
    assert report.returncode == 0 and head in report.stdout
