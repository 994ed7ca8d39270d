"""Hypothesis strategies of hostile values and a TOML writer, for the property tests of bad
input (tests/test_input_properties.py, tests/test_containment.py)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from repro import cli

FRAGMENTS = ["..", ".", "/", "", " ", "~", "\\", "-", "_", "a", "Z", "9", "é", "\x00", "\n",
             ":", "*", "%", "$HOME", "\u202e", "x" * 70]
"""Pieces of names that a path reads differently from a name."""

names = st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join),
                  st.text(max_size=70))
"""Names most of which must not become a path component."""

SPECIAL = [0, -1, 1, 2, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, -(2**63), 0.0, -0.0,
           0.5, 1.0, 1.5, 100.0, 1e-300, 1e300, math.inf, -math.inf, math.nan, True, False,
           "", "0", "1e-3", "../..", "/", "~", "cpu", "cuda", "wanda", "magnitude", "dense",
           "float16", "bfloat16", "tiny", "hub", "package:x", "windows", "joined", "\x00"]
"""Values each a field somewhere takes, and their nearest neighbours out of range or type."""

scalars = st.one_of(st.sampled_from(SPECIAL), st.integers(-(2**63), 2**63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), names)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=2)), max_leaves=4)
"""Anything TOML can hold (no null)."""
json_values = st.one_of(values, st.none())


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(x)}"
                           for k, x in v.items()) + "}"


def dump_toml(doc: dict[str, Any]) -> str:
    """A TOML document of top-level keys whose tables are written inline: it reads back (with
    tomllib) as `doc`, whatever `doc` holds."""
    return "".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n"
                   for k, v in doc.items())


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a nested document (dict keys and list indices)."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += paths(v, (*prefix, i))
    return found


def mutate(doc: Any, where: tuple, op: str, value: Any, key: str) -> Any:
    """A copy of `doc` with the place `where` replaced by `value`, deleted, or given a sibling
    `key` (op: replace, delete, add)."""
    doc = json.loads(json.dumps(doc))  # a deep copy (floats, NaN included)
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    last = where[-1]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[key] = value
    else:
        parent.insert(last, value)
    return doc


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """`repro ARGS` in this process: exit code, stdout, stderr. Anything but a clean exit
    (a traceback) propagates to the test."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(args)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_promise(code: int, out: str, err: str) -> None:
    """Exit 0, or exit 2 with exactly one line on stderr; nothing else (no traceback)."""
    assert code in (0, 2), (code, out, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("repro: error: "), err
        assert out == "", out
    else:
        assert err == "" and out.startswith("check: the "), (out, err)
