"""The layout is the architecture: imports run one way, from the top of the data's journey down.

Every import in repro/ is read from the source (those inside functions too, with the same
parser the stage code hash uses), and each must go to a lower layer or stay in its own
subpackage; no two modules may reach each other through imports (no cycle), and the map in
docs/layout.md must name exactly the subpackages on disk.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import repro
from repro.stages.codehash import _imported

PACKAGE = Path(repro.__file__).resolve().parent
LAYOUT_DOC = PACKAGE.parent / "docs" / "layout.md"
"""The page whose map of the code (its section "## The map") this file keeps true."""

FOUNDATIONS = {"repro", "repro.errors", "repro.files"}
"""What every layer may import: the package itself, its one error type, atomic file writes."""
RANK = {"study": 1, "inputs": 2, "science": 3, "stages": 4, "outputs": 5, "bench": 5, "tiny": 5}
"""Subpackages in the order a run's data passes through them; a module may import its own
subpackage and any of lower rank (bench and tiny are tools beside the outputs)."""
TOP = {"repro.cli", "repro.cli_parser", "repro.__main__"}
"""The entry points (the command line and its parser): they may import anything, and nothing
below them imports them."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "assets" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The repro modules `name` imports, `from <module> import f` resolved to the module."""
    path = MODULES[name]
    raw = _imported(name, ast.parse(path.read_text(encoding="utf-8")),
                    path.name == "__init__.py")
    return {m for m in raw if m in MODULES} - {name}


def _layer(name: str) -> str:
    if name in FOUNDATIONS:
        return "foundation"
    if name in TOP:
        return "top"
    return name.split(".")[1]


def test_every_module_belongs_to_a_known_layer() -> None:
    assert {_layer(m) for m in MODULES} == {"foundation", "top", *RANK}


IMPORTS = {m: _imports(m) for m in MODULES}
"""Each module's repro imports, read once for every test below."""


def _upward(name: str, targets: set[str]) -> list[str]:
    """The imports of `name` that break the rule, each said in a line."""
    layer, broken = _layer(name), []
    for target in sorted(targets):
        to = _layer(target)
        if target in FOUNDATIONS or layer == "top":
            continue
        if to == "top":
            broken.append(f"{name} imports the entry point {target}")
        elif layer == "foundation":
            broken.append(f"foundation {name} imports {target}")
        elif to != layer and RANK[to] >= RANK[layer]:
            broken.append(f"{name} ({layer}) imports {target} ({to}): upward")
    return broken


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_downward(name: str) -> None:
    assert _upward(name, IMPORTS[name]) == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop of `graph` (module -> the modules it imports), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_module_reaches_itself_through_imports() -> None:
    found = _cycle(IMPORTS)
    assert found is None, " -> ".join(found)


def test_the_rule_catches_an_upward_import_and_a_cycle() -> None:
    """Negative control: planted in the parsed imports, an upward import and a two-module
    loop are both found."""
    planted = {"repro.science.prune": {"repro.stages.store"},
               "repro.stages.store": {"repro.stages.locks"},
               "repro.stages.locks": {"repro.stages.store"}}
    graph = {m: IMPORTS[m] | planted.get(m, set()) for m in IMPORTS}
    assert any("upward" in line for line in _upward("repro.science.prune",
                                                    graph["repro.science.prune"]))
    assert set(_cycle(graph) or []) == {"repro.stages.store", "repro.stages.locks"}


def test_every_subpackage_says_what_it_holds_and_may_import() -> None:
    for pkg in RANK:
        doc = ast.get_docstring(ast.parse((PACKAGE / pkg / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), pkg


def test_the_layout_map_matches_the_tree() -> None:
    text = LAYOUT_DOC.read_text(encoding="utf-8")
    section = text.split("## The map", 1)[1].split("\n## ", 1)[0]
    mapped = set(re.findall(r"`repro/([a-z_]+)/`", section))
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert mapped == on_disk
    order = [m for m in re.findall(r"`repro/([a-z_]+)/`", section) if m in RANK]
    firsts = list(dict.fromkeys(order))
    assert [RANK[m] for m in firsts] == sorted(RANK[m] for m in firsts)
