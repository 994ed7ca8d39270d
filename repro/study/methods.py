"""The methods a study may name and the patterns each supports: pruning and quantization.

`repro list --profile beyond` shows them in use. These are the declarations the study, the CLI,
preflight and the estimate read; repro/science/pruners.py binds each method to its function
(`pruners.PRUNERS`), and tests/test_prune.py checks that the two name the same methods, so a
method is added here and there and nowhere else. The prune stage runs every one of them, so
"pruning method" in names here means any method that turns the dense model into a variant.

A pattern is `unstructured` (any weights of a matrix may go, up to the sparsity), `N:M`
(locuslab/wanda's semi-structured sparsity: in every group of M consecutive inputs of an
output, N weights are removed, so the sparsity is N/M; 2:4 is what sparse tensor cores run),
or `int<bits>[/g<group>]` (round-to-nearest quantization to signed integers of that many bits,
one scale per group of that many consecutive inputs of an output, 128 when left out: `int4`
is `int4/g128`; docs/beyond.md). A quantized variant removes no weight: its sparsity is 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from repro.errors import ReproError
from repro.study.rules import shown

UNSTRUCTURED = "unstructured"
N_M = "N:M"
INT = "int<bits>[/g<group>]"
"""The three kinds of pattern a method may support."""
EXAMPLE = {UNSTRUCTURED: UNSTRUCTURED, N_M: "2:4", INT: "int4"}
"""One pattern of each kind, for messages."""
BITS = (2, 8)
"""The integer widths a quantized pattern may name: 2 bits is the fewest with a level besides
zero (-1, 0, 1); 8 bits fill a byte, the widest integer type quantized weights are kept in."""
GROUP = 128
"""Inputs per quantization group of a pattern that names none (`int4` is `int4/g128`): the
group size GPTQ and AWQ report their 4-bit results at."""
MAX_GROUP = 2**16
"""The largest group a pattern may name: wider than any model's matrices, so one scale per
output row."""
_INT = re.compile(r"int([0-9]{1,3})(?:/g([0-9]{1,6}))?")


@dataclass(frozen=True)
class Method:
    """One way of turning a dense model into a variant."""

    name: str
    """What study files, run ids and tables call it."""
    needs_calibration: bool
    """Whether it reads the calibration tokens (and runs the model over them)."""
    updates_weights: bool
    """Whether the weights it keeps differ from the dense ones (SparseGPT's reconstruction,
    quantization): then the variant is stored as weights, not as the dense model times a mask."""
    patterns: tuple[str, ...]
    """The kinds of pattern it supports: UNSTRUCTURED, N_M, INT."""
    summary: str
    """One line for listings and messages."""
    prunes: bool = True
    """Whether it removes weights, so its variants have a sparsity above 0 (dense and
    quantization: sparsity 0)."""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("dense", False, False, (UNSTRUCTURED,), "the unpruned model", prunes=False),
    Method("magnitude", False, False, (UNSTRUCTURED, N_M),
           "the smallest |W|: per matrix (unstructured) or per group of M inputs (N:M)"),
    Method("wanda", True, False, (UNSTRUCTURED, N_M),
           "the smallest |W_ij| * ||X_j|| per output row (Sun et al. 2023), layer by layer"),
    Method("sparsegpt", True, True, (UNSTRUCTURED, N_M),
           "OBS masks and reconstruction of the kept weights from the inputs' Hessian "
           "(Frantar and Alistarh 2023), layer by layer"),
    Method("rtn", False, True, (INT,),
           "symmetric round-to-nearest quantization per group of inputs, stored dequantized",
           prunes=False),
)}
PRUNING_METHODS = tuple(name for name in METHODS if name != "dense")
"""The methods a condition may name: every method but the dense reference."""


def known_methods() -> str:
    """The methods a condition may name, comma-separated, for messages and help."""
    return ", ".join(PRUNING_METHODS)


def known_patterns() -> str:
    """The pattern syntax, for messages and help."""
    return f"{UNSTRUCTURED}, {N_M} or {INT}"


@dataclass(frozen=True, order=True)
class Pattern:
    """A pattern: unstructured (all fields 0), N:M (n of every m inputs removed) or a
    quantization to `bits`-bit integers with one scale per `group` inputs."""

    n: int = 0
    m: int = 0
    bits: int = 0
    group: int = 0

    @classmethod
    def parse(cls, text: object) -> Pattern:
        """`unstructured`, `N:M` with 0 < N < M, or `int<bits>[/g<group>]` with bits in 2..8;
        anything else is one ReproError line."""
        if text == UNSTRUCTURED:
            return cls()
        if isinstance(text, str) and (quantized := _INT.fullmatch(text)):
            return cls._quantized(text, int(quantized[1]), int(quantized[2] or GROUP))
        parts = text.split(":") if isinstance(text, str) else []
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            n, m = int(parts[0]), int(parts[1])
            if 0 < n < m:
                return cls(n, m)
        raise ReproError(f"pattern {shown(text)} is not known; use {UNSTRUCTURED} or N:M with "
                         "0 < N < M (e.g. 2:4) to prune, int<bits>[/g<group>] (e.g. int4, "
                         "int8/g64) to quantize")

    @classmethod
    def _quantized(cls, text: str, bits: int, group: int) -> Pattern:
        low, high = BITS
        if not low <= bits <= high:
            raise ReproError(f"pattern {shown(text)} asks for {bits}-bit integers; allowed: "
                             f"int{low} to int{high} (1 bit leaves no level but 0; 8 fill a "
                             "byte)")
        if not 1 <= group <= MAX_GROUP:
            raise ReproError(f"pattern {shown(text)} asks for groups of {group} inputs; "
                             f"allowed: 1 to {MAX_GROUP} (/g{GROUP} when left out)")
        return cls(bits=bits, group=group)

    @property
    def kind(self) -> str:
        return INT if self.bits else N_M if self.m else UNSTRUCTURED

    @property
    def sparsity(self) -> float | None:
        """The sparsity the pattern implies: N/M, 0 for a quantization; None for unstructured."""
        return self.n / self.m if self.m else 0.0 if self.bits else None

    @property
    def tag(self) -> str:
        """What a run id adds after the method: '', e.g. '2of4', 'int4' or 'int4-g64'."""
        if self.bits:
            return f"int{self.bits}" + (f"-g{self.group}" if self.group != GROUP else "")
        return f"{self.n}of{self.m}" if self.m else ""

    def __str__(self) -> str:
        if self.bits:
            return f"int{self.bits}" + (f"/g{self.group}" if self.group != GROUP else "")
        return f"{self.n}:{self.m}" if self.m else UNSTRUCTURED


UNSTRUCTURED_PATTERN = Pattern()
"""The unstructured pattern, as a default argument."""


def check_method(method: str, pattern: str) -> Method:
    """The declared method, once it and its pattern are known to go together; else one line
    naming the kinds of pattern it takes and the methods that take this one."""
    if method not in METHODS:
        raise ReproError(f"method {shown(method)} is not known; use one of {known_methods()}")
    found = METHODS[method]
    kind = Pattern.parse(pattern).kind
    if kind not in found.patterns:
        others = " or ".join(name for name in PRUNING_METHODS if kind in METHODS[name].patterns)
        takes = ", ".join(k if EXAMPLE[k] == k else f"{k} (e.g. {EXAMPLE[k]})"
                          for k in found.patterns)
        raise ReproError(f"method {method!r} does not support pattern {shown(pattern)}; give "
                         f"it {takes}, or use {others} for {pattern}")
    return found
