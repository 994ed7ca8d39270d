"""Another CPU's tables verify against the tiny expected outputs, with the bands in force.

tests/data/cross_cpu/<cpu>/ holds the six tables of a pinned tiny run made on a CPU other
than the one the expected outputs were blessed on (see its SOURCE.md). The pins make a run
bit-identical on one machine, not across CPU vendors (repro/science/numerics.py): these tables
differ from the blessed ones in the last bits of the SAEs and, from there, in survival statistics.
The bands of repro/expected_outputs/tolerances.toml come from runs perturbed on one machine
(scripts/measure_spread.py); this test is their check on a real second machine.

When a change of the science moves the tiny tables, the tables here no longer describe the
code: replace them with those of a pinned run of the new code on another CPU, or, with no
other CPU at hand, of measure_spread's `perturbed-1-thread` run, and say which in SOURCE.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.outputs.expected import EXPECTED_ROOT, TOLERANCES, Tolerance, Tolerances, load_tolerances
from repro.outputs.verify import compare_tables, read_table

EXPECTED = EXPECTED_ROOT / "tiny"
OTHER_CPUS = sorted(p for p in (Path(__file__).parent / "data" / "cross_cpu").iterdir()
                    if p.is_dir())
TABLES = sorted(p.name for p in EXPECTED.glob("*.csv"))


def _failures(cpu: Path, tols: Tolerances) -> list[str]:
    failed = []
    for name in TABLES:
        checks = compare_tables(Path(name).stem, read_table(EXPECTED / name),
                                read_table(cpu / name), tols)
        failed += [f"{c.name}: expected {c.expected}, got {c.got}" for c in checks
                   if c.verdict != "pass"]
    return failed


def test_there_is_another_cpu_and_it_has_every_table() -> None:
    assert OTHER_CPUS, "tests/data/cross_cpu holds no other CPU's tables"
    for cpu in OTHER_CPUS:
        assert sorted(p.name for p in cpu.glob("*.csv")) == TABLES, cpu
        assert (cpu / "SOURCE.md").is_file(), f"{cpu} does not say where its tables come from"


@pytest.mark.parametrize("cpu", OTHER_CPUS, ids=lambda p: p.name)
def test_another_cpus_tables_pass_within_the_bands(cpu: Path) -> None:
    tols = load_tolerances(EXPECTED_ROOT / TOLERANCES, "tiny")
    assert _failures(cpu, tols) == []


@pytest.mark.parametrize("cpu", OTHER_CPUS, ids=lambda p: p.name)
def test_they_do_differ_beyond_round_off(cpu: Path) -> None:
    """The control: with the round-off floor alone (what bands measured under the pins were)
    the same tables fail, so the test above passes on the bands, not on identical numbers."""
    tols = load_tolerances(EXPECTED_ROOT / TOLERANCES, "tiny")
    floor = Tolerances({t: {c: Tolerance(abs=1e-9, rel=1e-6) for c in cols}
                        for t, cols in tols.by_table.items()}, None)
    assert len(_failures(cpu, floor)) > 0
