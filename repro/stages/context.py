"""What every stage module shares, at the bottom of the stages: no stage module imports another.

`Context` is where a run writes, on what device, and how it reports; `ModelHolder` keeps one
dense model loaded and turns it into any variant; `load_tokens` and `upstream` read what an
earlier stage left; `retry_smaller_on_oom` halves the batch on CUDA out-of-memory.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from repro.errors import ReproError
from repro.inputs import models
from repro.inputs.families import prunable_matrices, weight_of
from repro.science import prune
from repro.stages import layout
from repro.stages.provenance import provenance
from repro.stages.store import fingerprint
from repro.study.methods import METHODS
from repro.study.sources import ModelSpec
from repro.study.spec import Study, Variant

if TYPE_CHECKING:
    from transformers import PreTrainedModel

STAGE_VERSION = {
    "tokens": 1,
    "prune": 3,
    "perplexity": 1,
    "activations": 1,
    "sae": 2,
    "evaluate": 2,
}
KEPT_WEIGHTS = "weights.safetensors"
"""In a variant's prune folder, beside masks.safetensors, when its method changes the weights it
keeps (SparseGPT): their values (repro.science.prune.save_kept_weights). Every other variant
is the dense model times its masks."""


@dataclass
class Context:
    """Everything a stage needs besides its own inputs: where, on what, and how to report."""

    study: Study
    out: Path
    device: torch.device
    force: bool = False
    quiet: bool = False
    started: float = field(default_factory=time.time)
    shrink: int = 1
    """Divides the batch size while a stage retries after running out of GPU memory."""
    expected: Path | None = None
    """The expected outputs to verify against (--expected), else the package's for the study."""

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self.started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def provenance(self, **extra: object) -> dict:
        return provenance(self.device, study=self.study.name, **extra)

    @property
    def batch_size(self) -> int:
        """Sequences per forward pass; small on CPU, where larger batches do not pay."""
        return max(1, (16 if self.device.type == "cuda" else 32) // self.shrink)

    def tokens_dir(self, model: str, stream: str) -> Path:
        return layout.tokens_dir(self.out, model, stream)

    def variant_dir(self, variant: Variant, stage: str) -> Path:
        return layout.variant_dir(self.out, variant, stage)


def check_output_dir(out: Path) -> None:
    """The output folder must be creatable and writable; say so in one line if not."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{id(out)}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ReproError(
            f"cannot write to output folder {out} ({exc.strerror}); choose another --out"
        ) from None


def load_tokens(ctx: Context, model: str, stream: str) -> torch.Tensor:
    return load_file(str(ctx.tokens_dir(model, stream) / "tokens.safetensors"))["input_ids"]


def upstream(folder: Path) -> str:
    """Downstream stages depend on an upstream stage through its fingerprint."""
    found = fingerprint(folder)
    if found is None:
        raise ReproError(f"{folder} has no manifest; rerun `repro all` to rebuild it")
    return found


class ModelHolder:
    """Keeps one dense model loaded and turns it into any of its variants on demand.

    The dense weights of the pruned matrices are kept aside, so switching from one variant to
    the next restores them and applies the next masks instead of reloading from disk.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.key: str | None = None
        self.model: PreTrainedModel | None = None
        self.tokenizers: dict[str, object] = {}
        self.dense: dict[str, torch.Tensor] = {}
        self.current: Variant | None = None

    def tokenizer_for(self, spec: ModelSpec):
        if spec.key not in self.tokenizers:
            self.tokenizers[spec.key] = models.load_tokenizer(spec)
        return self.tokenizers[spec.key]

    def dense_model(self, spec: ModelSpec) -> PreTrainedModel:
        if self.key != spec.key:
            self.model = models.load_model(spec, dtype=self.ctx.study.dtype, device=self.ctx.device)
            self.key = spec.key
            self.dense = {
                n: weight_of(m).detach().clone() for n, m in prunable_matrices(self.model).items()
            }
        else:
            self.restore()
        self.current = None
        return self._loaded

    @property
    def _loaded(self) -> PreTrainedModel:
        """The model loaded last (dense_model loads one before anything asks for it)."""
        assert self.model is not None, "no model loaded yet"
        return self.model

    def restore(self) -> None:
        with torch.no_grad():
            for name, mod in prunable_matrices(self._loaded).items():
                weight_of(mod).copy_(self.dense[name])

    def variant_model(self, variant: Variant) -> PreTrainedModel:
        """The model as the variant's prune stage left it: its stored masks applied to the
        dense weights, or its stored kept weights where its method updates them."""
        if self.current == variant:
            return self._loaded
        model = self.dense_model(self.ctx.study.models[variant.model])
        if not variant.is_dense:
            folder = self.ctx.variant_dir(variant, "prune")
            masks = prune.load_masks(folder / "masks.safetensors")
            if METHODS[variant.method].updates_weights:
                prune.apply_kept_weights(model, masks, folder / KEPT_WEIGHTS)
            else:
                prune.apply_masks(model, masks)
        self.current = variant
        return model


def retry_smaller_on_oom(ctx: Context, what: str,
                         work: Callable[[Path], dict | None]) -> Callable[[Path], dict | None]:
    """`work` that, on CUDA out-of-memory, starts again with half the batch size, down to 1.

    The outputs of the failed attempt are deleted first; the batch size used is recorded in the
    manifest's result. A stage that does not fit at batch size 1 stops with a one-line error.
    """

    def attempt(tmp: Path) -> dict | None:
        try:
            while True:
                try:
                    extra = work(tmp) or {}
                    return {**extra, "batch_size": ctx.batch_size} if ctx.shrink > 1 else extra
                except torch.OutOfMemoryError:
                    if ctx.batch_size == 1:
                        raise ReproError(f"{what}: out of GPU memory even at batch size 1; free "
                                         "the GPU or use one with more memory") from None
                    shutil.rmtree(tmp)
                    tmp.mkdir()
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    ctx.shrink *= 2
                    ctx.log(f"{what}: out of GPU memory; retrying with batch size "
                            f"{ctx.batch_size}")
        finally:
            ctx.shrink = 1

    return attempt
