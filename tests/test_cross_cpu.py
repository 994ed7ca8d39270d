"""Another machine's (or another arithmetic's) tables verify against a profile's expected
outputs, with the bands in force; with round-off bands alone they do not.

tests/data/cross_cpu/<profile>-<setting>/ holds the six tables of a run of <profile> made at
arithmetic other than the blessed run's, each with a SOURCE.md saying what differed:

- tiny: a run with the pins off and one thread against the pinned bless. The pins make a run
  bit-identical on one machine, not across CPU vendors (repro/science/numerics.py); the tiny
  bands come from runs perturbed on one machine (scripts/measure_spread.py), and this is
  their check on arithmetic they were not measured from.
- small: native float32 with AVX-512 kernels against a bless made with AVX2 kernels (or the
  other way round): other SAE weights in their last bits, which training, TopK and matching
  turn into another draw of the SAE noise. Its bands come from the bless's replicates
  (repro/outputs/bands.py), and this is their check on a run they never saw.

When a change of the science moves a profile's tables, the tables here no longer describe the
code: replace them with those of a run of the new code on another CPU or at another
arithmetic setting, and say which in SOURCE.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.outputs.expected import EXPECTED_ROOT, TOLERANCES, Tolerance, Tolerances, load_tolerances
from repro.outputs.verify import compare_tables, read_table

CASES = sorted(p for p in (Path(__file__).parent / "data" / "cross_cpu").iterdir()
               if p.is_dir())


def _profile(case: Path) -> str:
    return case.name.split("-", 1)[0]


def _tables(case: Path) -> list[str]:
    return sorted(p.name for p in (EXPECTED_ROOT / _profile(case)).glob("*.csv"))


def _checks(case: Path, tols: Tolerances) -> list:
    expected = EXPECTED_ROOT / _profile(case)
    return [c for name in _tables(case)
            for c in compare_tables(Path(name).stem, read_table(expected / name),
                                    read_table(case / name), tols)]


def _failures(case: Path, tols: Tolerances) -> list[str]:
    """Every cell that is not PASS, but for the UNCHECKED ones: bands the bless made wider
    than their column's range, no check of this or any run (docs/verdict.md)."""
    return [f"{c.name}: {c.verdict} expected {c.expected}, got {c.got}"
            for c in _checks(case, tols) if c.verdict not in ("pass", "unchecked")]


def _round_off(tols: Tolerances) -> Tolerances:
    return Tolerances({t: {c: Tolerance(abs=1e-9, rel=1e-6) for c in cols}
                       for t, cols in tols.by_table.items()}, None)


def test_every_statistical_profile_has_a_case_with_every_table() -> None:
    assert {_profile(c) for c in CASES} >= {"tiny", "small"}, CASES
    for case in CASES:
        assert sorted(p.name for p in case.glob("*.csv")) == _tables(case), case
        assert (case / "SOURCE.md").is_file(), f"{case} does not say where its tables come from"


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_the_other_settings_tables_pass_within_the_bands(case: Path) -> None:
    """Every cell that is a check passes, and nearly all are checks: a band wider than its
    column's range (UNCHECKED) passes anything, so it may not be what makes this test pass."""
    tols = load_tolerances(EXPECTED_ROOT / TOLERANCES, _profile(case))
    assert _failures(case, tols) == []
    cells = [c for c in _checks(case, tols) if c.kind == "cell"]
    unchecked = [c for c in cells if c.verdict == "unchecked"]
    assert len(unchecked) <= len(cells) // 5, (len(unchecked), len(cells))


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_they_do_differ_beyond_round_off(case: Path) -> None:
    """The control: with the round-off floor alone the same tables fail, so the test above
    passes on the bands, not on identical numbers."""
    tols = load_tolerances(EXPECTED_ROOT / TOLERANCES, _profile(case))
    assert len(_failures(case, _round_off(tols))) > 0
