"""Tables and claims: formatting that verify reads back, and C1-C4 from table rows."""

from __future__ import annotations

import math

import pytest

from repro.outputs.analysis import Analysis
from repro.outputs.claims import _highest_viable, claims
from repro.outputs.tables import to_csv, to_markdown
from repro.study.reader import load_study, profile_path


@pytest.fixture(scope="module")
def study():
    return load_study(profile_path("tiny"))


def test_csv_round_trips_numbers_bools_and_nan() -> None:
    rows = [{"id": "m/wanda/50", "x": 0.123456789012345, "ok": True, "n": 3, "r": float("nan")}]
    text = to_csv(rows)
    assert text.splitlines() == ["id,x,ok,n,r", "m/wanda/50,0.123456789,true,3,nan"]
    md = to_markdown("Table X", rows)
    assert md.startswith("### Table X") and "| m/wanda/50 | 0.1235 | true | 3 | nan |" in md


@pytest.mark.parametrize(
    "levels,expected",
    [
        ([(0.1, True), (0.3, True), (0.5, False)], 0.3),
        ([(0.1, False), (0.3, True)], 0.0),
        ([(0.3, True), (0.5, True)], 0.5),
        ([], None),
    ],
)
def test_highest_viable_stops_at_the_first_failure(levels, expected) -> None:
    assert _highest_viable(levels) == expected


def t3_row(model: str, method: str, s: float, survival: float, rho: float) -> dict:
    """A T3 row of 1000 alive features."""
    return {
        "id": f"{model}/{method}/{round(s * 100)}",
        "model": model,
        "method": method,
        "sparsity": s,
        "survival": survival,
        "n_survived": round(survival * 1000),
        "binned_rho": rho,
    }


def test_ratios_pair_methods_within_a_pattern_and_only_an_n_m_study_names_it(study) -> None:
    """C2's ratio compares Wanda with magnitude at the same pattern; the tiny study (all
    unstructured) keeps the paper's columns, the beyond study's rows carry `pattern`."""
    beyond = load_study(profile_path("beyond"))
    a = Analysis(beyond, profile_path("beyond").parent)
    assert all(a.head(v)["pattern"] == v.pattern for v in beyond.conditions)
    assert "pattern" not in Analysis(study, profile_path("tiny").parent).head(study.conditions[0])
    t3 = [{**t3_row("m", method, 0.5, survival, -1.0), "pattern": pattern}
          for method, pattern, survival in [("wanda", "unstructured", 0.6),
                                            ("magnitude", "unstructured", 0.2),
                                            ("wanda", "2:4", 0.3), ("magnitude", "2:4", 0.1),
                                            ("sparsegpt", "2:4", 0.9)]]
    t4 = a.t4_ratios(t3)
    assert [(r["id"], r["pattern"], r["ratio"]) for r in t4] == [
        ("m/50", "unstructured", pytest.approx(3.0)), ("m/2of4/50", "2:4", pytest.approx(3.0))]
    t3[3]["pattern"] = "unstructured"  # planted: magnitude's 2:4 row mislabelled, so it
    # shadows the unstructured one and Wanda's 2:4 row has no partner
    assert [(r["id"], r["ratio"]) for r in a.t4_ratios(t3)] == [("m/50", pytest.approx(6.0))]


def test_claims_from_rows(study) -> None:
    t3 = [
        t3_row("gemma-3-tiny", "wanda", 0.5, 0.6, -1.0),
        t3_row("gemma-3-tiny", "magnitude", 0.5, 0.2, -0.9),
        t3_row("gemma-2-tiny", "wanda", 0.5, 0.3, -1.0),
        t3_row("gemma-2-tiny", "magnitude", 0.5, 0.0, -1.0),
        # a ratio of 8 that rests on 8 and 1 features: reported, never used by C2
        t3_row("llama-tiny", "wanda", 0.5, 0.008, 0.5),
        t3_row("llama-tiny", "magnitude", 0.5, 0.001, 0.5),
    ]
    t4 = Analysis(study, profile_path("tiny").parent).t4_ratios(t3)
    assert {r["id"]: r["ratio"] for r in t4} == {
        "gemma-3-tiny/50": pytest.approx(3.0),
        "gemma-2-tiny/50": math.inf,
        "llama-tiny/50": pytest.approx(8.0),
    }
    assert [r["ratio_usable"] for r in t4] == [True, False, False]
    t5 = [
        {"model": "gemma-3-tiny", "method": "wanda", "sparsity": s, "pretrained_viable": v}
        for s, v in [(0.1, True), (0.2, True), (0.3, False)]
    ]
    t5 += [
        {"model": "gemma-2-tiny", "method": "wanda", "sparsity": s, "pretrained_viable": True}
        for s in (0.3, 0.5)
    ]
    nan = float("nan")
    t6 = [
        {"id": "a", "causal_rho": 0.1, "causal_ci_low": -0.2, "causal_ci_high": 0.35,
         "causal_reliability": 0.7},
        {"id": "b", "causal_rho": -0.4, "causal_ci_low": -0.5, "causal_ci_high": -0.3,
         "causal_reliability": 0.6},
        {"id": "c", "causal_rho": nan, "causal_ci_low": nan, "causal_ci_high": nan,
         "causal_reliability": 0.9},
    ]
    c = claims(study, t3, t4, t5, t6)
    assert c["C1"] == {"value": 3, "of": 6}
    # inf and the ratio of a handful of features are kept out of the maximum, counted beside
    assert c["C2"] == {"value": pytest.approx(3.0), "where": "gemma-3-tiny/50", "n_infinite": 1,
                       "n_unusable": 2, "of": 3}
    assert c["C3"] == {"value": 0.2, "model": "gemma-3-tiny"}  # the weakest model limits it
    assert c["C4"]["value"] == pytest.approx(0.4) and len(c["C4"]["per_condition"]) == 3
    # the widest CI bound in absolute value over the defined conditions, the least reliable
    assert c["C4"]["abs_rho_ci_high"] == 0.5 and c["C4"]["reliability"] == 0.6
