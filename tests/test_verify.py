"""`repro verify` and `repro bless`: a check fails exactly when its number leaves its tolerance."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import runfolder
from runfolder import TABLES, Rows, make_run, row

from repro.cli import main
from repro.errors import ReproError
from repro.outputs.bless import bless_run
from repro.outputs.expected import EXPECTED_ROOT, load_claims, load_tolerances
from repro.outputs.verify import verify_run
from repro.outputs.verify_claims import agree_claim, reproduce_claim

RID = "gemma-3-tiny/wanda/50"
SURVIVAL = 0.77  # T3_survival's value at RID in runfolder.base_tables()
ALLOW = 0.001 + 0.01 * SURVIVAL  # its tolerance in runfolder.TOLERANCES: abs 0.001, rel 0.01


def failures(result: dict) -> list[str]:
    return [c["name"] for c in result["checks"] if c["verdict"] == "fail"]


def test_untouched_run_passes_and_writes_both_files(tmp_path: Path, capsys) -> None:
    run, expected = make_run(tmp_path)
    assert main(["verify", str(run), "--expected", str(expected)]) == 0
    out = capsys.readouterr().out
    assert "verification PASS" in out and "C1 pass" in out
    assert "decided by agreement with the expected outputs" in out
    result = json.loads((run / "verification.json").read_text())
    assert result["ok"] and result["counts"]["fail"] == 0 and result["counts"]["info"] == 0
    assert {c["name"] for c in result["checks"] if c["kind"] == "table"} == set(TABLES)
    cell = next(c for c in result["checks"] if c["name"] == f"T3_survival[{RID}].survival")
    assert cell["tolerance"] == "abs 0.001 + rel 0.01" and cell["margin"] == pytest.approx(ALLOW)
    assert "# Verification: PASS" in (run / "verification.md").read_text()


def _survival_moved(by: float):
    def edit(tables: Rows) -> None:
        assert row(tables, "T3_survival", RID)["survival"] == SURVIVAL
        row(tables, "T3_survival", RID)["survival"] = SURVIVAL + by
    return edit


def test_number_just_past_tolerance_fails_naming_table_row_column(tmp_path: Path,
                                                                  capsys) -> None:
    run, expected = make_run(tmp_path, _survival_moved(ALLOW * 1.02))
    assert main(["verify", str(run), "--expected", str(expected)]) == 1
    name = f"T3_survival[{RID}].survival"
    assert f"FAIL {name}" in capsys.readouterr().out
    result = json.loads((run / "verification.json").read_text())
    assert failures(result) == ["T3_survival", name]
    cell = next(c for c in result["checks"] if c["name"] == name)
    assert cell["margin"] == pytest.approx(-0.02 * ALLOW)
    assert name in (run / "verification.md").read_text()


def test_number_just_inside_tolerance_passes(tmp_path: Path) -> None:
    run, expected = make_run(tmp_path, _survival_moved(-ALLOW * 0.98))
    result = verify_run(run, expected)
    assert result["ok"], failures(result)
    cell = next(c for c in result["checks"] if c["name"] == f"T3_survival[{RID}].survival")
    assert cell["margin"] == pytest.approx(0.02 * ALLOW)


@pytest.mark.parametrize("column,value", [
    ("perplexity", 0.0),          # NaN expected, a number got
    ("method", "Wanda"),          # text is exact
    ("survival", 0.76 + 1e-12),   # no tolerance entry for T2: exact
])
def test_nan_text_and_untoleranced_columns_are_exact(tmp_path: Path, column: str,
                                                     value: object) -> None:
    def edit(tables: Rows) -> None:
        row(tables, "T2_seed_stability", RID)[column] = value
    run, expected = make_run(tmp_path, edit)
    result = verify_run(run, expected)
    assert failures(result) == ["T2_seed_stability", f"T2_seed_stability[{RID}].{column}"]


def test_nan_equals_nan_and_a_number_never_equals_nan(tmp_path: Path) -> None:
    def edit(tables: Rows) -> None:
        row(tables, "T1_pruning", "llama-tiny/wanda/50")["perplexity"] = math.nan
    run, expected = make_run(tmp_path, edit)
    checks = {c["name"]: c for c in verify_run(run, expected)["checks"]}
    assert checks[f"T1_pruning[{RID}].perplexity"]["verdict"] == "pass"
    assert checks["T1_pruning[llama-tiny/wanda/50].perplexity"]["verdict"] == "fail"


def _drop(tables: Rows) -> None:
    tables["T4_ratios"] = [r for r in tables["T4_ratios"] if r["id"] != RID]


def _add(tables: Rows) -> None:
    tables["T5_transfer"].append({**tables["T5_transfer"][0], "id": "gemma-2-tiny/wanda/30"})


def _remove_table(tables: Rows) -> None:
    del tables["T6_fragility_causal"]


@pytest.mark.parametrize("edit,name", [
    (_drop, f"T4_ratios: missing row {RID}"),
    (_add, "T5_transfer: extra row gemma-2-tiny/wanda/30"),
    (_remove_table, "T6_fragility_causal: missing table"),
])
def test_missing_row_extra_row_missing_table_fail(tmp_path: Path, edit, name: str) -> None:
    run, expected = make_run(tmp_path, edit)
    result = verify_run(run, expected)
    assert not result["ok"] and name in failures(result)


def test_tampered_table_is_refused(tmp_path: Path, capsys) -> None:
    run, expected = make_run(tmp_path)
    path = run / "tables" / "T1_pruning.csv"
    path.write_text(path.read_text().replace("10.0", "10.1"))
    assert main(["verify", str(run), "--expected", str(expected)]) == 1
    out = capsys.readouterr().out
    assert "FAIL integrity: tables/T1_pruning.csv" in out and "T1_pruning: refused" in out


PAPER = {c.name: c for c in load_claims(EXPECTED_ROOT / "paper")}


@pytest.mark.parametrize("claim,inside,outside", [
    ("C1", 13, 14), ("C1", 9, 8), ("C1_of", 17, 16), ("C2", 4.8, 4.82), ("C2", 2.6, 2.58),
    ("C3", 0.5, 0.4), ("C3", 0.6, None),
])
def test_each_paper_claim_flips_at_its_threshold(claim: str, inside: float,
                                                 outside: float | None) -> None:
    """One replicate: the interval is the point, and the answer flips at the bound."""
    spec = PAPER[claim]

    def answer(value: float | None) -> str:
        return reproduce_claim(spec, {spec.claim: {spec.field: value}}).verdict
    assert (answer(inside), answer(outside)) == ("holds", "does not hold" if outside is not
                                                 None else "undecided")
    assert reproduce_claim(spec, None).verdict == "undecided"


def _with_interval(value: float, low: float, high: float, field: str = "value") -> dict:
    return {field: value, "spread": {field: {"n": 3, "ci_low": low, "ci_high": high}}}


@pytest.mark.parametrize("value,low,high,answer", [
    (11.0, 10.0, 12.0, "holds"),            # the whole interval inside 11 +- 2
    (11.0, 8.0, 14.0, "undecided"),         # straddles the bound: this run cannot tell
    (4.0, 3.0, 5.0, "does not hold"),       # entirely outside
    (13.5, 12.5, 14.5, "undecided"),        # the mean outside, the interval still reaching in
])
def test_reproduction_reads_the_interval_not_the_point(value, low, high, answer) -> None:
    check = reproduce_claim(PAPER["C1"], {"C1": _with_interval(value, low, high)})
    assert check.verdict == answer and check.interval == [low, high]


@pytest.mark.parametrize("point,ci_high,reliability,answer", [
    (0.10, 0.29, 0.9, "holds"),          # every CI inside +-0.3, a score that measures
    (0.10, 0.31, 0.9, "undecided"),      # small point estimate, CI too wide to tell
    (0.35, 0.60, 0.9, "does not hold"),  # a correlation above the bound
    (0.10, 0.20, 0.4, "undecided"),      # unreliable causal score: nothing to conclude
    (0.10, 0.20, None, "undecided"),     # no reliability measured
])
def test_c4_holds_only_on_evidence_of_a_small_correlation(point, ci_high, reliability,
                                                           answer) -> None:
    entry = {"value": point, "abs_rho_ci_high": ci_high, "reliability": reliability}
    check = reproduce_claim(PAPER["C4"], {"C4": entry})
    assert check.verdict == answer
    assert answer == "holds" or "cannot tell" in check.detail or check.margin < 0


def test_c4_reliability_must_hold_over_its_whole_interval() -> None:
    entry = {"value": 0.1, "abs_rho_ci_high": 0.2, "reliability": 0.7,
             "spread": {"reliability": {"n": 3, "ci_low": 0.3, "ci_high": 1.1}}}
    assert reproduce_claim(PAPER["C4"], {"C4": entry}).verdict == "undecided"
    entry["spread"]["reliability"]["ci_low"] = 0.55
    assert reproduce_claim(PAPER["C4"], {"C4": entry}).verdict == "holds"


def _blessed(expected: float, band: float, contrary: str = "",
             interval: tuple[float, float] | None = None) -> object:
    from dataclasses import replace

    from repro.outputs.expected import Tolerance
    return replace(PAPER["C2"], expected=expected, tolerance=Tolerance(abs=band),
                   contrary=contrary, inconclusive_field="", requires=(), interval=interval)


@pytest.mark.parametrize("value,low,high,verdict", [
    (2.1, 1.5, 2.7, "pass"),          # the mean inside the band
    (3.0, 2.8, 3.2, "fail"),          # the whole interval outside: excluded
    (2.7, 2.4, 3.0, "inconclusive"),  # the mean outside, its interval reaching the band
])
def test_agreement_passes_inside_the_band_and_fails_when_the_interval_excludes_it(
        value, low, high, verdict) -> None:
    check = agree_claim(_blessed(2.0, 0.5), {"C2": _with_interval(value, low, high)})
    assert check.verdict == verdict


def test_a_band_that_would_pass_the_inverse_ratio_is_unchecked() -> None:
    """C2 blessed at 1.5 (its interval [1.3, 1.7] excludes 1: Wanda keeps more) with a band
    of 1.0: the inverse 0.67 (magnitude keeps more) would pass too."""
    claims = {"C2": _with_interval(1.5, 1.4, 1.6)}
    found = (1.3, 1.7)
    assert agree_claim(_blessed(1.5, 1.0, "inverse", found), claims).verdict == "unchecked"
    assert agree_claim(_blessed(1.5, 0.5, "inverse", found), claims).verdict == "pass"
    assert agree_claim(_blessed(1.5, 1.0, "", found), claims).verdict == "pass"  # no rule
    # a blessed 'no difference' (interval around 1) has no direction to tell apart
    assert agree_claim(_blessed(1.5, 1.0, "inverse", (0.9, 2.1)), claims).verdict == "pass"


def test_a_claim_band_covering_every_value_it_can_take_is_unchecked() -> None:
    """C4 (the largest |rho| bound, in [0, 1]) blessed at 0.87 with the small profile's band of
    2.97: every C4 there is would pass, a causal score read with its sign flipped included."""
    from dataclasses import replace

    from repro.outputs.expected import Tolerance
    claims = {"C4": _with_interval(0.2, 0.1, 0.3, PAPER["C4"].field)}
    for band, verdict in ((2.97, "unchecked"), (0.87, "unchecked"), (0.5, "fail"),
                          (0.7, "pass")):
        spec = replace(PAPER["C4"], expected=0.87, compare="near", tolerance=Tolerance(abs=band),
                       requires=(), inconclusive_field="", interval=(0.78, 0.97))
        check = agree_claim(spec, claims)
        assert check.verdict == verdict, (band, check.detail)
        assert ("covers every value C4 can take [0, 1]" in check.detail) == (
            verdict == "unchecked")


def _wide_survival_band(expected: Path, band: float) -> None:
    (expected / "tolerances.toml").write_text(
        f'[tiny.T3_survival]\nsurvival = {{ abs = {band} }}\n"*" = {{ abs = 0.5 }}\n'
        '[tiny.T1_pruning]\nperplexity = { abs = 1000 }\n')


def test_a_cell_band_covering_its_columns_whole_range_is_unchecked(tmp_path: Path,
                                                                    capsys) -> None:
    """A survival rate (in [0, 1]) blessed at 0.77 with a band of 1.0: the planted move to
    0.47 is inside the band, but so is every rate there is, so the cell is no check: UNCHECKED,
    listed on its own, counted neither way (the cell that is a check, 1.02 moved to 0.72 within
    its band, passes); a band of 0.4 still excludes some rates and is a check again.
    Perplexity has no upper bound: a band of 1000 on it stays a check."""
    run, expected = make_run(tmp_path, _survival_moved(-0.3))
    name = f"T3_survival[{RID}].survival"
    _wide_survival_band(expected, 1.0)
    assert main(["verify", str(run), "--expected", str(expected)]) == 0
    out = capsys.readouterr().out
    assert "verification PASS" in out and "3 unchecked (their bands cover every value)" in out
    assert f"UNCHECKED {name}" not in out  # folded, and only in verification.md
    result = verify_run(run, expected)
    md = (run / "verification.md").read_text()
    # three cells: the synthetic table's fourth rate, 1.02, is outside [0, 1] itself
    assert "- UNCHECKED T3_survival.survival: 3 cell(s) whose band (abs 1) covers every " \
        "value it can take [0, 1]: nothing could fail it" in md
    assert "## Unchecked (3)" in md and "## Failures" not in md
    checks = {c["name"]: c for c in result["checks"]}
    assert checks[name]["verdict"] == "unchecked"
    assert "covers every value survival can take [0, 1]" in checks[name]["detail"]
    assert checks["T3_survival"]["verdict"] == "pass"
    assert "3 unchecked (bands covering the whole range of survival)" in \
        checks["T3_survival"]["detail"]
    assert checks["T1_pruning[gemma-3-tiny/dense/0].perplexity"]["verdict"] == "pass"
    assert failures(result) == []
    _wide_survival_band(expected, 0.4)
    result = verify_run(run, expected)
    assert result["ok"], [c["name"] for c in result["checks"] if c["verdict"] in (
        "fail", "inconclusive")]


def _decided_by_reproduction(run: Path) -> None:
    (run / "study.toml").write_text('[study]\nname = "tiny"\n[verdict]\n'
                                    'decides = "reproduction"\n')


def test_undecided_fails_a_profile_decided_by_reproduction(tmp_path: Path, capsys) -> None:
    """The paper profile's exit code: every paper claim must hold, an undecided one fails."""
    run, expected = make_run(tmp_path)
    _decided_by_reproduction(run)
    claims = json.loads((run / "claims.json").read_text())
    claims["C1"]["value"], claims["C2"]["value"], claims["C3"]["value"] = 11, 3.7, 0.5
    claims["C4"].update(value=0.1, abs_rho_ci_high=0.2)
    claims["C4_per_firing"].update(value=0.1, abs_rho_ci_high=0.2, reliability=0.9)
    (run / "claims.json").write_text(json.dumps(claims))
    assert main(["verify", str(run), "--expected", str(expected)]) == 0
    assert "decided by the paper's claims in this run" in capsys.readouterr().out
    claims["C4"].update(abs_rho_ci_high=0.42)  # planted: a CI too wide to tell
    (run / "claims.json").write_text(json.dumps(claims))
    assert main(["verify", str(run), "--expected", str(expected)]) == 1
    out = capsys.readouterr().out
    assert "1 undecided" in out and "UNDECIDED C4" in out and "cannot tell" in out


def test_informational_claims_report_without_failing(tmp_path: Path) -> None:
    """The seed-control claims have no paper number: an answer in the detail, never a
    failure of the reproduction verdict."""
    run, expected = make_run(tmp_path)
    _decided_by_reproduction(run)
    claims = json.loads((run / "claims.json").read_text())
    claims["C1_control"]["value"] = 2  # far from the paper's 11
    (run / "claims.json").write_text(json.dumps(claims))
    checks = {c["name"]: c for c in verify_run(run, expected)["checks"]
              if c["kind"] == "reproduction"}
    assert checks["C1_control"]["verdict"] == "info"
    assert checks["C1_control"]["detail"].startswith("does not hold")
    assert checks["C2_control"]["verdict"] == "info"


def test_profile_claims_are_the_blessed_runs_own(tmp_path: Path) -> None:
    """A CPU profile checks its claims against its blessed run, each one able to fail."""
    run, expected = make_run(tmp_path)
    assert verify_run(run, expected)["ok"]
    specs = {c.name: c for c in load_claims(expected)}
    assert not any(c.informational for c in specs.values())
    assert specs["C1"].expected == 11 and specs["C4"].expected == 0.25
    for name, moved in (("C1", 10), ("C2", 3.5000001), ("C3", 0.4), ("C4", 0.26)):
        claims = json.loads(json.dumps(runfolder.CLAIMS))
        claims[name][specs[name].field] = moved
        (run / "claims.json").write_text(json.dumps(claims))
        result = verify_run(run, expected)
        assert failures(result) == [name], name


@pytest.mark.parametrize("text,message", [
    ("[tiny.T1_pruning\n", "not valid TOML"),
    ("[tiny.T1_pruning]\nperplexity = { abs = -1 }\n", "must be a finite number >= 0"),
    ("[tiny.T1_pruning]\nperplexity = { tol = 1 }\n", "unknown key"),
    ("[tiny.T1_pruning]\nperplexity = 0.1\n", "must be a table"),
    ("[tiny.T1_pruning]\nperplexity = { note = 'x' }\n", "needs abs, rel, log, angle or z"),
    ("tiny = 3\n", "must be a [profile.table] section"),
])
def test_malformed_tolerances_are_one_line_errors(tmp_path: Path, text: str,
                                                  message: str) -> None:
    path = tmp_path / "tolerances.toml"
    path.write_text(text)
    with pytest.raises(ReproError, match="tolerances.toml") as err:
        load_tolerances(path, "tiny")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_malformed_tolerances_exit_2_through_the_cli(tmp_path: Path) -> None:
    run, expected = make_run(tmp_path)
    (expected / "tolerances.toml").write_text(
        "[tiny.T3_survival]\nsurvival = { rel = 'x' }\n")
    res = subprocess.run([sys.executable, "-m", "repro", "verify", str(run), "--expected",
                          str(expected)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "survival.rel" in res.stderr


def test_bless_then_verify_passes_and_tolerances_are_kept(tmp_path: Path, capsys) -> None:
    run, expected = make_run(tmp_path, _survival_moved(0.5))
    assert not verify_run(run, expected)["ok"]
    fresh = tmp_path / "expected" / "fresh"
    assert main(["bless", str(run), "--expected", str(fresh)]) == 0
    assert main(["verify", str(run), "--expected", str(fresh)]) == 0
    prov = json.loads((fresh / "PROVENANCE.json").read_text())
    assert prov["code_version"] == "0.1.0+abc123" and prov["device"].startswith("cpu")
    assert prov["packages"]["pandas"] and set(prov["tables"]) == {f"{t}.csv" for t in TABLES}
    header = (fresh / "claims.toml").read_text().split("\n\n")[0]
    # what made the blessed run, never a folder of the machine it was blessed on
    assert "code version 0.1.0+abc123" in header and str(tmp_path) not in header
    assert "rel = 1e-6" in (fresh / "tolerances.toml").read_text()  # a new folder: round-off
    assert main(["bless", str(run), "--expected", str(expected)]) == 0
    tol = (expected / "tolerances.toml").read_text()
    assert tol == runfolder.TOLERANCES  # an existing file is kept as it is
    assert verify_run(run, expected)["ok"]


def test_a_failed_sanity_gate_stops_the_comparison(tmp_path: Path, capsys) -> None:
    """A model or SAE that loaded wrong: the verdict says so instead of comparing tables."""
    bad = [{**runfolder.GATES[0], "value": 195.0, "ok": False}]
    run, expected = make_run(tmp_path, _survival_moved(0.5), gates=bad)
    assert main(["verify", str(run), "--expected", str(expected)]) == 1
    out = capsys.readouterr().out
    assert "FAIL sanity: gemma-3-tiny: dense perplexity" in out
    assert "tables and claims not compared" in out
    result = json.loads((run / "verification.json").read_text())
    assert not [c for c in result["checks"] if c["kind"] in ("table", "cell", "claim")]
    run, expected = make_run(tmp_path / "good")  # the passing gate is a check of its own
    result = verify_run(run, expected)
    gate = next(c for c in result["checks"] if c["kind"] == "sanity")
    assert result["ok"] and gate["verdict"] == "pass" and gate["margin"] == pytest.approx(3.1)


def test_a_run_of_several_commits_is_blessed_only_when_every_stage_ran_the_checkouts_code(
        tmp_path: Path) -> None:
    """A run resumed after a commit carries two version labels; bless takes it from a clean
    checkout when each stage's recorded code hash is the checkout's, and names a stage that
    ran other code otherwise."""
    from repro.outputs.bless import STAGE_CODE, _check_clean, current_code

    run, _ = make_run(tmp_path)
    manifests = sorted(run.rglob("manifest.json"))
    for i, path in enumerate(manifests):
        doc = json.loads(path.read_text())
        kind = doc.get("stage") if doc.get("stage") in STAGE_CODE else "tables"
        doc["stage"] = kind
        doc.setdefault("inputs", {})["code"] = current_code(kind)
        doc.setdefault("provenance", {})["code_version"] = f"0.1.0+{'ab' if i % 2 else 'cd'}"
        path.write_text(json.dumps(doc))
    assert "every stage's code equals" in _check_clean(run, "0.1.0+ef")
    with pytest.raises(ReproError, match="2 code versions"):
        _check_clean(run, "0.1.0+ef-dirty")  # the checkout itself must be a commit
    doc = json.loads(manifests[0].read_text())
    doc["inputs"]["code"] = {"science": "0" * 64, "stage": "0" * 64}  # ran other code
    manifests[0].write_text(json.dumps(doc))
    stale = str(manifests[0].parent.relative_to(run))
    with pytest.raises(ReproError, match=f"1 stage\\(s\\) ran other code, e.g. {stale}"):
        _check_clean(run, "0.1.0+ef")


def test_bless_refuses_a_run_from_uncommitted_code_unless_told(tmp_path: Path) -> None:
    run, expected = make_run(tmp_path)
    manifest = run / "variants" / "x" / "prune" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["provenance"]["code_version"] += "-dirty"
    manifest.write_text(json.dumps(doc))
    before = sorted(p.read_bytes() for p in expected.iterdir())
    with pytest.raises(ReproError, match="uncommitted tree .*--allow-dirty"):
        bless_run(run, expected)
    assert sorted(p.read_bytes() for p in expected.iterdir()) == before
    assert bless_run(run, expected, allow_dirty=True)["tables"]
    assert json.loads((expected / "PROVENANCE.json").read_text())["allow_dirty"] is True


def test_bless_creates_default_tolerances_and_refuses_tampered_tables(tmp_path: Path) -> None:
    run, expected = make_run(tmp_path)
    (expected / "tolerances.toml").unlink()
    done = bless_run(run, expected)
    assert done["tolerances_created"]
    assert load_tolerances(done["tolerances"], "tiny").get("T1_pruning", "x").rel == 1e-6
    (run / "tables" / "T2_seed_stability.csv").write_text("id\nx\n")
    with pytest.raises(ReproError, match="refusing to bless .*T2_seed_stability.csv"):
        bless_run(run, expected)


def test_bless_takes_the_registrys_tables_and_refuses_a_missing_one(tmp_path: Path) -> None:
    """bless copies exactly repro.outputs.tables.TABLES: a stray CSV in tables/ stays out,
    and a run whose tables stage lacks a registered table is refused (the negative control)."""
    def extra(tables: Rows) -> None:
        tables["T7_extra"] = tables["T1_pruning"]
    run, expected = make_run(tmp_path / "a", extra)
    done = bless_run(run, expected)
    assert done["tables"] == sorted(f"{name}.csv" for name in TABLES)
    assert not (expected / "T7_extra.csv").exists()

    def drop(tables: Rows) -> None:
        del tables["T4_ratios"]
    run, expected = make_run(tmp_path / "b", drop)
    with pytest.raises(ReproError, match="tables/T4_ratios.csv is missing"):
        bless_run(run, expected)


def test_verification_json_spells_kinds_and_verdicts_as_plain_words(tmp_path: Path) -> None:
    """Kind and Verdict are StrEnums in the code; the file holds their words, which is what
    report, bless and older readers compare against."""
    from repro.outputs.check import Kind, Verdict

    run, expected = make_run(tmp_path, lambda t: row(t, "T3_survival", "llama-tiny/wanda/50")
                             .update(survival=0.0))
    verify_run(run, expected)
    text = (run / "verification.json").read_text()
    checks = json.loads(text)["checks"]
    assert {c["kind"] for c in checks} <= {k.value for k in Kind}
    assert {"pass", "fail"} <= {c["verdict"] for c in checks} <= {v.value for v in Verdict}
    assert "Verdict." not in text and "Kind." not in text


def test_a_table_nobody_expects_is_reported_not_failed(tmp_path: Path) -> None:
    def edit(tables: Rows) -> None:
        tables["T7_extra"] = tables["T1_pruning"]
    run, expected = make_run(tmp_path, edit)
    result = verify_run(run, expected)
    extra = next(c for c in result["checks"] if c["name"] == "T7_extra")
    assert result["ok"] and extra["verdict"] == "info"


def test_bless_and_verify_round_trip_through_one_folder_of_ones_own(tmp_path: Path,
                                                                      capsys) -> None:
    """`bless RUN --expected DIR` puts tables, claims and tolerances into DIR, and nowhere
    else; `verify RUN --expected DIR` then passes, and fails once a table is tampered with."""
    run, _ = make_run(tmp_path)
    mine = tmp_path / "mine" / "expected"
    package_files = sorted(p for p in EXPECTED_ROOT.rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in package_files]
    assert main(["bless", str(run), "--expected", str(mine), "--allow-dirty"]) == 0
    assert {"tolerances.toml", "claims.toml", "PROVENANCE.json", "T1_pruning.csv"} <= {
        p.name for p in mine.iterdir()}
    assert not (mine.parent / "tolerances.toml").exists()
    assert [p.stat().st_mtime_ns for p in package_files] == stamps  # the package untouched
    assert main(["verify", str(run), "--expected", str(mine)]) == 0
    path = run / "tables" / "T3_survival.csv"
    path.write_text(path.read_text().replace("0.6", "0.7", 1))  # planted: a changed number
    capsys.readouterr()
    assert main(["verify", str(run), "--expected", str(mine)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_a_missing_tolerances_file_is_one_line(tmp_path: Path, capsys) -> None:
    run, expected = make_run(tmp_path)
    code = main(["verify", str(run), "--expected", str(expected), "--tolerances",
                 str(tmp_path / "nope.toml")])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after make_run's own warnings
    assert code == 2 and err.startswith("repro: error: --tolerances") and "no such file" in err
    assert not (run / "verification.json").exists()


def test_a_yes_no_cell_compares_as_the_fraction_of_replicates_that_say_yes() -> None:
    """One replicate writes true/false, a mean of several the fraction 1.0, 0.667, 0: a run of
    one replicate (or an older run) verifies against a bless of several, and a flipped answer
    still fails where the band is exact."""
    from repro.outputs.expected import EXACT, Tolerance
    from repro.outputs.verify import compare_cell

    assert compare_cell("T4.ratio_usable", "1", "true", EXACT).verdict == "pass"
    assert compare_cell("T4.ratio_usable", "0", "false", EXACT).verdict == "pass"
    assert compare_cell("T4.ratio_usable", "1", "false", EXACT).verdict == "fail"
    one_flip = Tolerance(abs=1 / 3)
    assert compare_cell("T4.ratio_usable", "1", "0.6666666667", one_flip).verdict == "pass"
    assert compare_cell("T4.ratio_usable", "1", "0.3333333333", one_flip).verdict == "fail"
