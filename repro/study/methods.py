"""The pruning methods a study may name and the sparsity patterns each supports.

`repro list --profile beyond` shows them in use. These are the declarations the study, the CLI,
preflight and the estimate read; repro/science/prune.py binds each pruning method to its
function (`prune.PRUNERS`), and tests/test_prune.py checks that the two name the same methods,
so a method is added here and there and nowhere else.

A pattern is `unstructured` (any weights of a matrix may go, up to the sparsity) or `N:M`
(locuslab/wanda's semi-structured sparsity: in every group of M consecutive inputs of an
output, N weights are removed, so the sparsity is N/M; 2:4 is what sparse tensor cores run).
"""

from __future__ import annotations

from dataclasses import dataclass

from repro.errors import ReproError
from repro.study.rules import shown

UNSTRUCTURED = "unstructured"
N_M = "N:M"
"""The two kinds of pattern a method may support."""


@dataclass(frozen=True)
class Method:
    """One way of turning a dense model into a variant."""

    name: str
    """What study files, run ids and tables call it."""
    needs_calibration: bool
    """Whether it reads the calibration tokens (and runs the model over them)."""
    updates_weights: bool
    """Whether the weights it keeps differ from the dense ones (SparseGPT's reconstruction):
    then the pruned model is stored as weights, not as the dense model times a mask."""
    patterns: tuple[str, ...]
    """The kinds of pattern it supports: UNSTRUCTURED, N_M."""
    summary: str
    """One line for listings and messages."""


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("dense", False, False, (UNSTRUCTURED,), "the unpruned model"),
    Method("magnitude", False, False, (UNSTRUCTURED, N_M),
           "the smallest |W|: per matrix (unstructured) or per group of M inputs (N:M)"),
    Method("wanda", True, False, (UNSTRUCTURED, N_M),
           "the smallest |W_ij| * ||X_j|| per output row (Sun et al. 2023), layer by layer"),
    Method("sparsegpt", True, True, (UNSTRUCTURED, N_M),
           "OBS masks and reconstruction of the kept weights from the inputs' Hessian "
           "(Frantar and Alistarh 2023), layer by layer"),
)}
PRUNING_METHODS = tuple(name for name in METHODS if name != "dense")


def known_methods() -> str:
    """The pruning methods, comma-separated, for messages and help."""
    return ", ".join(PRUNING_METHODS)


@dataclass(frozen=True, order=True)
class Pattern:
    """A sparsity pattern: unstructured (n = m = 0) or N:M (n of every m inputs removed)."""

    n: int = 0
    m: int = 0

    @classmethod
    def parse(cls, text: object) -> Pattern:
        """`unstructured` or `N:M` with 0 < N < M; anything else is one ReproError line."""
        if text == UNSTRUCTURED:
            return cls()
        parts = text.split(":") if isinstance(text, str) else []
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            n, m = int(parts[0]), int(parts[1])
            if 0 < n < m:
                return cls(n, m)
        raise ReproError(f"pattern {shown(text)} is not known; use {UNSTRUCTURED} or N:M with "
                         "0 < N < M (e.g. 2:4)")

    @property
    def kind(self) -> str:
        return UNSTRUCTURED if self.m == 0 else N_M

    @property
    def sparsity(self) -> float | None:
        """The sparsity an N:M pattern implies (N/M); None for unstructured."""
        return self.n / self.m if self.m else None

    @property
    def tag(self) -> str:
        """What a run id adds after the method: '' or e.g. '2of4'."""
        return f"{self.n}of{self.m}" if self.m else ""

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.m else UNSTRUCTURED


UNSTRUCTURED_PATTERN = Pattern()
"""The unstructured pattern, as a default argument."""


def check_method(method: str, pattern: str) -> Method:
    """The declared method, once it and its pattern are known to go together; else one line
    naming the known methods and patterns."""
    if method not in METHODS:
        raise ReproError(f"method {shown(method)} is not known; use one of {known_methods()}")
    found = METHODS[method]
    kind = Pattern.parse(pattern).kind
    if kind not in found.patterns:
        raise ReproError(f"method {method!r} does not support pattern {shown(pattern)}; it "
                         f"supports {', '.join(found.patterns)}")
    return found
