"""Every method's function (pruning and quantization), bound to its declaration in
repro/study/methods.py.

`repro list --profile beyond` shows the methods in use; the prune stage
(repro/stages/pipeline.py) and `repro prune` call `prune_variant`. The study layer names the
methods (it may not import the science); this module is the one place that maps each name to
its function, and tests/test_prune.py checks that the two name the same methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from repro.errors import ReproError
from repro.science import prune, quantize, sparsegpt
from repro.study.methods import METHODS, Method, Pattern, check_method

PruneFn = Callable[[nn.Module, float, Pattern, "torch.Tensor | None", int], prune.Masks]
"""(model, sparsity, pattern, calibration tokens or None, batch size) -> keep-masks; prunes
the model in place."""


@dataclass(frozen=True)
class Pruner:
    """A declared method and the function that carries it out."""

    method: Method
    """Its declaration: name, calibration, weight updates, patterns."""
    run: PruneFn
    """The function."""


def _magnitude(model: nn.Module, sparsity: float, pattern: Pattern,
               _calibration: torch.Tensor | None, _batch: int) -> prune.Masks:
    return prune.prune_magnitude(model, sparsity, pattern)


def _wanda(model: nn.Module, sparsity: float, pattern: Pattern,
           calibration: torch.Tensor | None, batch: int) -> prune.Masks:
    assert calibration is not None  # the method needs calibration: the prune stage loads it
    return prune.prune_wanda(model, calibration, sparsity, batch_size=batch, pattern=pattern)


def _sparsegpt(model: nn.Module, sparsity: float, pattern: Pattern,
               calibration: torch.Tensor | None, batch: int) -> prune.Masks:
    assert calibration is not None  # the method needs calibration: the prune stage loads it
    return sparsegpt.prune_sparsegpt(model, calibration, sparsity, batch_size=batch,
                                     pattern=pattern)


def _rtn(model: nn.Module, _sparsity: float, pattern: Pattern,
         _calibration: torch.Tensor | None, _batch: int) -> prune.Masks:
    return quantize.quantize_rtn(model, pattern)


PRUNERS: dict[str, Pruner] = {
    name: Pruner(METHODS[name], fn)
    for name, fn in (("magnitude", _magnitude), ("wanda", _wanda), ("sparsegpt", _sparsegpt),
                     ("rtn", _rtn))
}


def pruner(method: str, pattern: str) -> Pruner:
    """The method's pruner, once the method and pattern are known; else one line listing them."""
    check_method(method, pattern)
    if method not in PRUNERS:
        raise ReproError(f"method {method!r} has no pruning function; use one of "
                         f"{', '.join(PRUNERS)}")
    return PRUNERS[method]


def prune_variant(model: nn.Module, method: str, sparsity: float, pattern: str,
                  calibration: torch.Tensor | None, batch_size: int) -> prune.Masks:
    """Prune (or quantize) the dense `model` in place into the variant; return its
    keep-masks."""
    found = pruner(method, pattern)
    if found.method.needs_calibration and calibration is None:
        raise ReproError(f"method {method} needs calibration tokens and got none")
    return found.run(model, sparsity, Pattern.parse(pattern), calibration, batch_size)

