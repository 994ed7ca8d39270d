"""What every value given to repro must be, declared once: the one place refusals come from.

A spec dataclass declares each field's rule beside it, one line per field:

    width: int = field(metadata=checked(whole(1, 2**16, "latents per SAE; ...")))
    epochs: int = declare(whole(1, 100, "..."), 1)

(a field without a default, then one with a default) and its `__post_init__` calls
`check_fields(self)`, which refuses the first field that breaks its rule with one line: the
field, the value, what is allowed and why, and the fix. The study reader says where the field
sits (`study file F: sae.width = 0: ...`); the command line and the environment hold their
numbers to the same rules (`Rule.check`). Booleans are never numbers, numbers are never text,
and no number is infinite or NaN. docs/input-contract.md lists every bound and the reason for
it.

`NAME` is the one pattern for every name that becomes part of a path (model keys, the study's
name, stream and split names); run ids are built from such names, methods and numbers only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from repro.errors import ReproError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A name that becomes one path component under --out (or under expected_outputs/): a letter
or digit first (so never `.`, `..` or a hidden name like the store's `.partial` folders), then
letters, digits, `.`, `_`, `-` (no `/`, no space, nothing a shell or another file system reads
differently), at most 64 characters (run ids nest four of them under a path limit of 4096)."""
NAME_TEXT = "a name of letters, digits, '.', '_' and '-', starting with a letter or digit, " \
            "at most 64 characters"

SEED_MAX = 2**32 - 1
"""numpy's generators take seeds in [0, 2^32 - 1]; torch's would take more, but every seed
here also seeds numpy (repro.science.seeding)."""


class FieldError(ReproError):
    """A value that breaks its rule; `at` puts it in context (file and section)."""

    def __init__(self, name: str, detail: str, fix: str = "") -> None:
        self.name, self.detail, self.fix = name, detail, fix
        super().__init__(f"{name} = {detail}; {fix or f'change {name}'}")

    def at(self, context: str, section: str = "", fix: str = "") -> ReproError:
        """The same refusal as `context: section.name = value: ...; fix`."""
        full = f"{section}.{self.name}" if section else self.name
        return ReproError(f"{context}: {full} = {self.detail}; "
                          f"{fix or self.fix or f'change {full}'}")


def shown(value: Any) -> str:
    """A value as the user wrote it, cut short when long."""
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Rule:
    """What one value may be: its kind, its bounds or choices, and why."""

    kind: str
    """'whole', 'number', 'text', 'flag' or 'choice'."""
    why: str
    """Why the bound is what it is (shown in every refusal)."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """True when `low` itself is not allowed."""
    high_open: bool = False
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    pattern_text: str = ""
    optional: bool = False
    """None (the key left out) is allowed."""

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "flag":
            return "true or false"
        if self.kind == "text":
            return self.pattern_text or "text"
        what = "a whole number" if self.kind == "whole" else "a number"
        if self.low is None and self.high is None:
            return what
        low = "-inf" if self.low is None else _bound(self.low)
        high = "inf" if self.high is None else _bound(self.high)
        return (f"{what} in {'(' if self.low_open or self.low is None else '['}{low}, "
                f"{high}{')' if self.high_open or self.high is None else ']'}")

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value`, or None when it is allowed."""
        if value is None:
            return None if self.optional else "missing"
        if self.kind == "flag":
            return None if isinstance(value, bool) else f"{_kind_of(value)}, not true or false"
        if self.kind in ("text", "choice"):
            if not isinstance(value, str):
                return f"{_kind_of(value)}, not text"
            if "\x00" in value:  # no name, path or id holds one; the OS refuses it in a path
                return "text with a NUL character"
            if self.kind == "choice":
                return None if value in self.choices else "not a known choice"
            if self.pattern is not None and not self.pattern.fullmatch(value):
                return "not allowed here"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{_kind_of(value)}, not a number"
        if not math.isfinite(value):
            return "not a finite number"
        if self.kind == "whole" and not isinstance(value, int):
            return "not a whole number (write it without a decimal point)"
        return self._out_of_range(value)

    def _out_of_range(self, value: float) -> str | None:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return "below the allowed range"
        if self.high is not None and (value > self.high or
                                      (self.high_open and value == self.high)):
            return "above the allowed range"
        return None

    def check(self, name: str, value: Any, fix: str = "") -> None:
        """Raise FieldError naming `name` when `value` breaks the rule."""
        problem = self.problem(value)
        if problem is not None:
            raise FieldError(name, f"{shown(value)}: {problem}; allowed: {self.allowed()} "
                             f"({self.why})", fix)


def _bound(x: float) -> str:
    """A bound as written: whole numbers in full (4294967295, not 4.29e+09)."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {str: "text", int: "a whole number", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def whole(low: int | None, high: int | None, why: str, *, optional: bool = False) -> Rule:
    """A whole number in [low, high] (None: unbounded on that side)."""
    return Rule("whole", why, low, high, optional=optional)


def number(low: float | None, high: float | None, why: str, *, low_open: bool = False,
           high_open: bool = False, optional: bool = False) -> Rule:
    """A finite number (a whole number is fine too) between low and high."""
    return Rule("number", why, low, high, low_open, high_open, optional=optional)


def text(why: str, *, pattern: re.Pattern[str] | None = None, pattern_text: str = "",
         optional: bool = False) -> Rule:
    """Text, matching `pattern` in full when one is given."""
    return Rule("text", why, pattern=pattern, pattern_text=pattern_text, optional=optional)


def path_name(why: str, *, optional: bool = False) -> Rule:
    """A name that becomes a path component: NAME."""
    return text(why, pattern=NAME, pattern_text=NAME_TEXT, optional=optional)


def choice(choices: tuple[str, ...], why: str) -> Rule:
    return Rule("choice", why, choices=choices)


def flag(why: str) -> Rule:
    return Rule("flag", why)


def seed_value(why: str = "numpy takes seeds in [0, 2^32 - 1]", *, optional: bool = False) -> Rule:
    return whole(0, SEED_MAX, why, optional=optional)


def checked(rule: Rule) -> dict[str, Rule]:
    """The metadata of a dataclass field checked by `rule` (in `check_fields`). A field without
    a default is written `field(metadata=checked(rule))`, not through a helper like `declare`:
    type checkers take `dataclasses.field()` without a default for a required field, and any
    other call for one with a default."""
    return {"rule": rule}


def declare(rule: Rule, default: Any) -> Any:
    """A dataclass field with a default, checked by `rule` (in `check_fields`)."""
    return field(default=default, metadata=checked(rule))


SECTION: Mapping[str, bool] = MappingProxyType({"section": True})
"""The metadata of a field of Study read from the study file's table of the same name ([sae],
...) into its spec dataclass: declaring the field is all the reader needs
(repro.study.reader.SECTIONS). Without a default (`field(metadata=SECTION)`) the table is
required; with one (`section(default)`) it may be left out."""


def section(default: Any) -> Any:
    """A field of Study read from the study file's table of the same name, which may be left
    out (then `default`); see SECTION."""
    return field(default=default, metadata=SECTION)


def check_fields(obj: Any) -> None:
    """Check every declared field of a spec dataclass; the first that breaks its rule raises."""
    for f in fields(obj):
        rule = f.metadata.get("rule")
        if rule is not None:
            rule.check(f.name, getattr(obj, f.name))


def rule_of(cls: type, name: str) -> Rule:
    """The rule declared for field `name` of `cls` (for messages and tests)."""
    return next(f.metadata["rule"] for f in fields(cls) if f.name == name)


def need(cond: bool, where: str, problem: str) -> None:
    """Refuse a study file whose `where` breaks a rule between fields (one line: the problem
    and its fix), where no single field's rule can say it."""
    if not cond:
        raise ReproError(f"study file: {where}: {problem}")
