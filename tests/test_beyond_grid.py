"""The beyond profile's grid end to end on a tiny model: magnitude, Wanda and SparseGPT, each
unstructured and 2:4, with the seed control and three replicates, as `repro all` runs it.

The run must end cleanly (unverified), carry the pattern in its ids and tables, store kept
weights for SparseGPT alone, and `repro bless RUN --expected DIR` followed by `repro verify RUN
--expected DIR` must agree on every number it can check (the numbers whose bands cover their
whole range are UNCHECKED: listed, counted neither way), while a planted mistake fails as a
disagreement; the same study run again with the pins off (native arithmetic) verifies PASS
against the pinned bless and fails with round-off bands; scripts/method_comparison.py draws
its figure from the run. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_own_study import STUDY, _repro, _save_model

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "method_comparison.py"
GRID = STUDY.replace(
    'methods = ["wanda", "magnitude"]\nsparsities = [0.5]',
    'methods = ["magnitude", "wanda", "sparsegpt"]\npatterns = ["unstructured", "2:4"]\n'
    'sparsities = [0.5]',
).replace("[thresholds]", "control_seed = 1000\n\n[verdict]\nreplicates = 3\n\n[thresholds]")


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _disagreements(run: Path) -> set[str]:
    """The cells and claims that FAIL or are INCONCLUSIVE."""
    result = json.loads((run / "verification.json").read_text())
    return {c["name"] for c in result["checks"] if c["kind"] in ("cell", "claim")
            and c["verdict"] in ("fail", "inconclusive")}


def test_the_beyond_grid_runs_blesses_and_verifies(tmp_path: Path) -> None:
    assert GRID != STUDY and "sparsegpt" in GRID and "replicates = 3" in GRID
    _save_model(tmp_path / "models" / "qwen2-tiny")
    (tmp_path / "study.toml").write_text(GRID)
    first = _repro("all", "--study", "study.toml", "--out", "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "unverified" in first.stdout

    run = tmp_path / "run"
    t1 = _rows(run / "tables" / "T1_pruning.csv")
    assert {(r["method"], r["pattern"]) for r in t1} == {
        ("dense", "unstructured"), *((m, p) for m in ("magnitude", "wanda", "sparsegpt")
                                     for p in ("unstructured", "2:4"))}
    assert "qwen2-tiny/sparsegpt-2of4/50" in {r["id"] for r in t1}
    assert all(float(r["achieved_sparsity"]) >= 0.5 for r in t1 if r["method"] != "dense")
    t4 = _rows(run / "tables" / "T4_ratios.csv")
    assert [(r["id"], r["pattern"]) for r in t4] == [("qwen2-tiny/50", "unstructured"),
                                                    ("qwen2-tiny/2of4/50", "2:4")]
    stored = {str(p.relative_to(run / "variants").parent.parent)
              for p in (run / "variants").rglob("weights.safetensors")}
    assert stored == {"qwen2-tiny/sparsegpt/50", "qwen2-tiny/sparsegpt-2of4/50"}

    blessed = _repro("bless", "run", "--expected", "expected", "--allow-dirty", cwd=tmp_path)
    assert blessed.returncode == 0, blessed.stderr
    # A random tiny model's RQ5 (15 sampled features) moves so much between replicates that
    # its bands cover every value a correlation can take: verify calls those cells
    # UNCHECKED, not PASS, and says how many. Everything else agrees with the bless.
    verified = _repro("verify", "run", "--expected", "expected", cwd=tmp_path)
    assert verified.returncode == 0 and "verification PASS" in verified.stdout
    assert "unchecked (their bands cover every value)" in verified.stdout
    assert _disagreements(run) == set()
    claims = json.loads((run / "claims.json").read_text())
    # planted: two more conditions where rare features survive (C1's band is one condition)
    claims["C1"]["value"] += 2
    (run / "claims.json").write_text(json.dumps(claims))
    tampered = _repro("verify", "run", "--expected", "expected", cwd=tmp_path)
    assert tampered.returncode == 1 and "verification FAIL" in tampered.stdout
    assert _disagreements(run) == {"C1"}

    _native_against_the_pinned_bless(tmp_path)

    drawn = subprocess.run([sys.executable, str(SCRIPT), "run", "--out", "figure"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300,
                           check=False)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    lines = [ln for ln in drawn.stdout.splitlines() if ln.startswith("| qwen2-tiny/")]
    assert len(lines) == 6 and (tmp_path / "figure" / "method_comparison.png").is_file()


def _native_against_the_pinned_bless(tmp_path: Path) -> None:
    """The same study again with the pins off (REPRO_NUMERICS=native: the machine's own
    kernels, as another CPU or a GPU would compute): other bits, the same science. It
    verifies PASS against the pinned run's bless, and fails once every band is cut to
    round-off, so the pass comes from the bands, not from equal numbers."""
    import os

    # the pins off and ATen's scalar kernels: on this model's small matrices the pins off
    # alone (or on one thread) gave the same bits; the scalar kernels sum in another order
    env = {**os.environ, "REPRO_NUMERICS": "native", "ATEN_CPU_CAPABILITY": "default"}
    native = subprocess.run([sys.executable, "-m", "repro", "all", "--study", "study.toml",
                             "--out", "native"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=900, check=False, env=env)
    assert native.returncode == 0, native.stderr[-3000:]
    differ = [name for name in ("T1_pruning", "T3_survival", "T6_fragility_causal")
              if (tmp_path / "run" / "tables" / f"{name}.csv").read_text()
              != (tmp_path / "native" / "tables" / f"{name}.csv").read_text()]
    assert len(differ) == 3, f"the pins off gave the same bits in {differ}: nothing was tested"
    verified = _repro("verify", "native", "--expected", "expected", cwd=tmp_path)
    assert verified.returncode == 0 and "verification PASS" in verified.stdout, verified.stdout
    assert _disagreements(tmp_path / "native") == set()
    tolerances = (tmp_path / "expected" / "tolerances.toml").read_text()
    roundoff = "\n".join(
        line.split(" = {")[0] + ' = { abs = 1e-9, rel = 1e-6 }' if " = { " in line else line
        for line in tolerances.splitlines())
    (tmp_path / "roundoff.toml").write_text(roundoff)
    cut = _repro("verify", "native", "--expected", "expected", "--tolerances", "roundoff.toml",
                 cwd=tmp_path)
    assert cut.returncode == 1 and len(_disagreements(tmp_path / "native")) >= 5, cut.stdout
