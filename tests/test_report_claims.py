"""The report's first screen (repro.outputs.report_claims): numbers rounded to what they mean,
the banner by profile, C4's number named, the SAE-quality line, from synthetic run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from runfolder import make_run

from repro.outputs import report_claims as rc
from repro.outputs.verify import verify_run


@pytest.mark.parametrize("tolerance,expected,shown", [
    ("±1.02521e-06", 1.0242130750605327, "1.02 ± 1.0×10⁻⁶"),  # the unrounded band
    ("±2", 11.0, "11 ± 2"),                                    # counts as integers
    ("±0", 17.0, "17 (exact)"),
    ("±1.11", 3.7, "3.7 ± 1.1"),
    (">= 0.5", 0.5, "≥ 0.5"),
    ("<= 0.3", 0.3, "≤ 0.3"),
    ("±0.000123456", 0.25, "0.25 ± 1.2×10⁻⁴"),
    ("±0.0123456", 0.25, "0.25 ± 0.012"),
])
def test_bands_are_rounded_to_two_significant_digits(tolerance: str, expected: float,
                                                     shown: str) -> None:
    assert rc.band_text(tolerance, expected) == shown


def test_values_are_rounded_and_counts_stay_integers() -> None:
    assert [rc.value_text(x) for x in (0, 17.0, 0.6983111948147579, 1.0242130750605327,
                                       float("nan"), None, True)] == [
        "0", "17", "0.698", "1.02", "—", "—", "True"]
    assert rc.small_text(123456.0) == "1.2×10⁵" and rc.small_text(0.05) == "0.05"


def _study(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)


def test_the_banner_says_what_each_cpu_profile_can_show() -> None:
    tiny = rc.banner(_study('[study]\nname = "tiny"\ndevice = "cpu"\n'))
    small = rc.banner(_study('[study]\nname = "small"\ndevice = "cpu"\n'))
    own = rc.banner(_study('[study]\nname = "mine"\ndevice = "cpu"\n'))
    assert tiny.startswith("The tiny profile is a check of the code, not a test of the paper")
    assert "Shakespeare" in small and "indicative" in small
    assert own.startswith("The mine profile is a study whose verdict is agreement")
    # the paper profile (GPU, decided by reproduction) is the test of the paper: no banner
    assert rc.banner(_study('[study]\nname = "paper"\ndevice = "cuda"\n'
                            '[verdict]\ndecides = "reproduction"\n')) is None
    # a GPU study still decided by agreement checks agreement: it gets the banner
    assert rc.banner(_study('[study]\nname = "x"\ndevice = "cuda"\n')) is not None


def test_each_claim_row_names_its_number_and_both_answers(tmp_path: Path) -> None:
    run, expected = make_run(tmp_path)
    rows = {r.name: r for r in rc.claim_rows(verify_run(run, expected),
                                             json.loads((run / "claims.json").read_text()))}
    assert list(rows) == ["C1", "C1_of", "C2", "C3", "C4", "C4_per_firing", "C1_control",
                          "C2_control"]
    c1, c4 = rows["C1"], rows["C4"]
    assert (c1.value, c1.paper, c1.reproduction, c1.agreement) == ("11 of 17", "11 ± 2",
                                                                   "HOLDS", "PASS")
    assert c1.statement == "Rare SAE features survive pruning better than frequent ones"
    assert c1.full.endswith("rho = -1.0 in 11 of 17 conditions")
    # C4's number is a CI bound: the row says so and gives the point estimate beside it
    assert c4.value == "0.25" and c4.value_note == (
        "the largest upper 95 % bound of |ρ| over conditions; its point estimate: 0.12")
    assert rows["C1_of"].value_note == "" and rows["C2_control"].reproduction == "INFO"


def test_without_verification_every_claim_says_not_verified(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path)
    rows = rc.claim_rows(None, json.loads((run / "claims.json").read_text()))
    assert {r.reproduction for r in rows} == {"NOT VERIFIED"} and len(rows) == 8
    c2 = next(r for r in rows if r.name == "C2")
    assert (c2.value, c2.paper) == ("3.5", "3.7 ± 1.1") and c2.statement.startswith("Wanda")
    assert [r.name for r in rows][:3] == ["C1", "C1_of", "C2"]  # the paper's order


def test_sae_quality_reads_t5_t3_and_training_json(tmp_path: Path) -> None:
    t5 = pd.DataFrame([{"id": "m/dense/0", "model": "m", "method": "dense",
                        "dense_explained_variance": 0.8932809527, "dense_l0": 16.0,
                        "dense_dead_fraction": 0.111328125},
                       {"id": "m/wanda/50", "model": "m", "method": "wanda",
                        "dense_explained_variance": 0.5, "dense_l0": 16.0,
                        "dense_dead_fraction": 0.5}])
    t3 = pd.DataFrame([{"id": "m/wanda/50", "model": "m", "seed_floor": 0.8175824176}])
    folder = tmp_path / "runs" / "m" / "dense" / "0" / "sae"
    folder.mkdir(parents=True)
    (folder / "training.json").write_text(json.dumps({"width": 512, "k": 16}))
    assert rc.sae_quality(tmp_path, {"T5_transfer": t5, "T3_survival": t3}) == [
        "m: EV 0.89, L0 16 (k 16 of 512), dead 11 %, seed floor 0.82"]
    # without T3, the seed-to-seed share of T2 is the floor; without T5, no line at all
    t2 = pd.DataFrame([{"id": "p", "model": "m", "shared_fraction": 0.7956}])
    assert rc.sae_quality(tmp_path, {"T5_transfer": t5, "T2_seed_stability": t2})[0].endswith(
        "seed floor 0.8")
    assert rc.sae_quality(tmp_path, {}) == []
