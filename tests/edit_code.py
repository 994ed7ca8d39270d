"""Rerun `repro all` on a run folder as if one module's source had been edited.

    python tests/edit_code.py MODULE RUN_DIR [code|docstring]
                                             (prints the stage folders redone, as JSON)

The module's source is copied with one edit, and repro.stages.codehash reads that copy for
it: `code` appends a statement (a one-token change of what the module does), `docstring`
rewrites its docstring and adds a comment (nothing it does changes). The code that runs is
unchanged, so every stage that is redone must give the same bytes. Used by
tests/test_end_to_end.py.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from repro.cli import main
from repro.stages import codehash


def manifests(run_dir: Path) -> dict[str, bytes]:
    found = {}
    for path in run_dir.rglob("manifest.json"):
        rel = path.parent.relative_to(run_dir)
        if not any(part.startswith(".") for part in rel.parts):
            found[str(rel)] = path.read_bytes()
    return found


EDITS = {
    "code": lambda text: text + "\n_EDITED_BY_TEST = 1\n",
    "docstring": lambda text: text.replace('"""', '"""Edited. ', 1) + "\n# edited\n",
}


def rerun_edited(module: str, run_dir: Path, edit: str = "code") -> list[str]:
    original = codehash._source(module)
    edited = Path(tempfile.mkdtemp()) / original.name
    edited.write_text(EDITS[edit](original.read_text(encoding="utf-8")), encoding="utf-8")
    real = codehash._source
    codehash._source = lambda name: edited if name == module else real(name)
    before = manifests(run_dir)
    code = main(["all", "--profile", "tiny", "--out", str(run_dir), "--quiet"])
    if code != 0:
        raise SystemExit(f"repro all exited {code}")
    after = manifests(run_dir)
    return sorted(k for k in after if after[k] != before.get(k))


if __name__ == "__main__":
    print(json.dumps(rerun_edited(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:4])))
