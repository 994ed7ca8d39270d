"""The code a stage runs, as a hash in its input: an upgraded `repro` redoes what it changed.

`code_hash("repro.science.evaluate")` is the sha256 over the code of that module and of every
`repro` module it imports, directly or through others (at the top or inside a function), read
from the files Python would import. "The code" is the module's syntax tree without its
docstrings (`_code`): comments, docstrings, blank lines and line breaks change no hash, so
editing what the code says about itself redoes nothing, and a one-token change of what it
does redoes its stages. A stage puts `stage_code(science, binding)` into its
input hash: the transitive hash of its science module and the source of the module that
binds it to folders. Editing `repro/science/evaluate.py` redoes every evaluate stage and, through
their fingerprints, the analysis after them, and nothing before them; editing a module that
no stage runs (the CLI, verify, the report) redoes nothing. Package versions are recorded in
every manifest's provenance instead.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, AttributeError, ValueError):  # `from a.module import name`: no module
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imported(module: str, tree: ast.AST, is_package: bool) -> set[str]:
    """The repro modules a module's code imports (absolute or relative, any nesting)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "repro"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            if base.split(".")[0] != "repro":
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}  # `from repro import saes`
    return found


@functools.cache
def imported_modules(module: str) -> tuple[str, ...]:
    """`module` and every repro module it reaches through imports, sorted."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _source(name) if name not in seen else None
        if path is None:
            continue
        seen.add(name)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        todo += sorted(_imported(name, tree, path.name == "__init__.py") - seen)
    return tuple(sorted(seen))


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _code(path: Path) -> bytes:
    """What a source file does: its syntax tree without docstrings or positions. A string
    statement right after an attribute (a field's docstring) is dropped too: it does nothing."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        kept = [stmt for i, stmt in enumerate(body)
                if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                        and isinstance(stmt.value.value, str)
                        and (i == 0 and isinstance(node, _DOCUMENTED)
                             or i > 0 and isinstance(body[i - 1], ast.Assign | ast.AnnAssign)))]
        body[:] = kept or [ast.Pass()]  # node.body, in place
    return ast.dump(tree, include_attributes=False).encode()


@functools.cache
def code_hash(module: str) -> str:
    """sha256 over the code (`_code`) of `imported_modules(module)`, each named by its module."""
    digest = hashlib.sha256()
    for name in imported_modules(module):
        path = _source(name)
        assert path is not None  # imported_modules keeps only modules with a source file
        digest.update(name.encode() + b"\0" + _code(path) + b"\0")
    return digest.hexdigest()


SHARED_BINDING = "repro.stages.context"
"""What every stage module binds through (the loaded model and its variants, token loading):
part of every stage's code key, as if it were written in each stage module."""


def stage_code(science: str, binding: str) -> dict[str, str]:
    """A stage's code key: its science module with what that imports, and the source of the
    stage module itself (which holds the stage's settings and sampling choices) together with
    the stage context it binds through."""
    stage = hashlib.sha256((_file_hash(binding) + _file_hash(SHARED_BINDING)).encode())
    return {"science": code_hash(science), "stage": stage.hexdigest()}


@functools.cache  # every stage of a run asks: hash each stage module once per process
def _file_hash(module: str) -> str:
    path = _source(module)
    return hashlib.sha256(_code(path)).hexdigest() if path else ""
