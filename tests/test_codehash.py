"""The stage cache knows the code: which modules a stage's code hash covers, and that an edit
to one changes exactly the hashes of the modules that import it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import repro
from repro.stages.codehash import code_hash, imported_modules

PACKAGE = Path(repro.__file__).resolve().parent
SCIENCE = ("repro.inputs.data", "repro.science.prune", "repro.science.perplexity",
           "repro.science.activations", "repro.science.saes", "repro.science.sae_batch",
           "repro.science.evaluate",
           "repro.outputs.analysis", "repro.outputs.claims", "repro.outputs.tables",
           "repro.outputs.figures")


def test_a_science_module_covers_what_it_imports_and_not_the_cli() -> None:
    evaluate = imported_modules("repro.science.evaluate")
    assert {"repro.science.evaluate", "repro.science.saes", "repro.science.activations",
            "repro.inputs.models"} <= set(evaluate)
    assert not {"repro.cli", "repro.outputs.verify", "repro.outputs.report",
                "repro.outputs.analysis"} & set(evaluate)
    assert "repro.science.stats" in imported_modules("repro.outputs.analysis")
    assert code_hash("repro.science.evaluate") != code_hash("repro.outputs.analysis")


def _hashes(root: Path) -> dict[str, str]:
    code = ("import json, sys; from repro.stages.codehash import code_hash; "
            f"print(json.dumps({{m: code_hash(m) for m in {list(SCIENCE)!r}}}))")
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(root)}, cwd=root,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_an_edit_changes_the_hash_of_exactly_its_importers(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "repro", ignore=shutil.ignore_patterns("assets"))
    before = _hashes(tmp_path)
    stats = tmp_path / "repro" / "science" / "stats.py"
    original = stats.read_text()
    # what the code says about itself: docstrings (module, function, field), comments
    stats.write_text(original.replace('"""', '"""Reworded. ', 1)
                     .replace('"""(n_bins,) mean', '"""Reworded: (n_bins,) mean', 1)
                     .replace("    if n_bins < 1:", "    # a comment\n    if n_bins < 1:", 1)
                     + "\n# an edit\n")
    assert stats.read_text().count("Reworded") == 2
    assert _hashes(tmp_path) == before
    stats.write_text(original + "\n_AN_EDIT = 1\n")  # one statement: what it does changed
    after = _hashes(tmp_path)
    changed = sorted(m for m in SCIENCE if after[m] != before[m])
    expected = sorted(m for m in SCIENCE if "repro.science.stats" in imported_modules(m))
    assert changed == expected and "repro.outputs.analysis" in changed
    assert "repro.science.prune" not in changed
