"""Study files: every model, condition, run and hyper-parameter of a profile, in one TOML file.

`repro list --profile paper` prints what a study holds; `--study FILE` loads any other file.
Everything the paper's abstract leaves open is declared as data; repro/study/reader.py reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from repro.errors import ReproError
from repro.study.methods import METHODS, UNSTRUCTURED, Pattern, check_method
from repro.study.rules import (
    NAME,
    SECTION,
    check_fields,
    checked,
    choice,
    declare,
    flag,
    need,
    number,
    path_name,
    section,
    seed_value,
    whole,
)
from repro.study.sources import DataSpec, ModelSpec
from repro.study.thresholds import SURVIVAL_TAU, Thresholds

DTYPES = ("float32", "bfloat16", "float16")
DECIDES = ("agreement", "reproduction")
NUMERICS = ("pinned", "native")
REPLICATE_SEED_STRIDE = 100_000
"""Replicate r of a run trains from the run's seed + r * this: far from every seed a study
names, so the SAEs of two replicates never share an initialisation or a data order."""
@dataclass(frozen=True)
class SaeSpec:
    """Hyper-parameters of the SAEs the project trains (sae-lens TopK)."""

    width: int = field(metadata=checked(whole(1, 2**16, "matching holds width x width cosines, "
                                              "22 bytes each, 90 GiB at 2^16; the paper uses "
                                              "2^14")))
    """Number of latents (paper: 16384)."""
    k: int = field(metadata=checked(whole(1, 2**16, "active latents per token, at most width")))
    """Active latents per token (TopK)."""
    lr: float = field(metadata=checked(number(0, 1, "Adam moves each weight by about lr per "
                                              "step; above 1 a step overwrites the unit-norm "
                                              "decoder", low_open=True)))
    """Adam learning rate."""
    batch_tokens: int = field(metadata=checked(whole(1, 2**20, "a step holds batch_tokens x "
                                                     "width latent activations: 64 GiB at "
                                                     "2^20 x 2^14")))
    """Activations per training step."""
    epochs: int = declare(whole(1, 100, "each epoch replays the recorded activations; the "
                                "paper uses 1"), 1)
    """Passes over the SAE-training activations (paper: 1; the model runs once, later epochs
    replay its activations reshuffled, for budgets where more tokens cost too much)."""
    lr_decay: float = declare(number(0, 1, "the share of the steps, at the end, over which the "
                                     "learning rate falls linearly to 0; 0 keeps it constant"),
                              0.0)
    """Share of the training steps, at the end, over which the learning rate decays linearly
    to 0 (sae-lens's `lr_decay_steps` with `lr_end = 0`); 0: constant."""
    autocast: bool = declare(flag("the encoder's dense product in bfloat16, float32 "
                                  "accumulation: where a GPU's tensor cores or a CPU's "
                                  "AVX-512 BF16 or AMX multiply it natively"), False)
    """Whether each SAE step's encoder product, the one dense (batch x d) x (d x width)
    product, runs in bfloat16 (sae-lens's `autocast`; repro.science.sae_batch); the rest of
    the step stays float32."""
    survival_threshold: float = declare(number(0, 1, "a cosine: 0.7 is the paper's tau",
                                               low_open=True), SURVIVAL_TAU)
    """Matched decoder cosine at or above which a feature survives (tau)."""
    control_seed: int | None = declare(seed_value(optional=True), None)
    """Seed of the control SAEs: every variant (dense and pruned) gets one more SAE from this
    seed, so survival can be measured between SAEs that share no initialisation and no data
    order (the seed control of RQ2); None trains none."""

    def __post_init__(self) -> None:
        check_fields(self)
        need(self.k <= self.width, "sae", f"k ({self.k}) must not exceed width ({self.width})")


@dataclass(frozen=True)
class VerdictSpec:
    """How a run reaches its verdict: how often every SAE is trained, and which answer decides."""

    replicates: int = declare(whole(1, 100, "every replicate trains and measures every SAE "
                                    "again; 3 give an interval, 100 would take 100 runs"), 1)
    """Times every SAE of the study is trained and measured, each time from other seeds
    (replicate 0 is the study's own seeds): every number of the tables and claims is the mean
    over replicates, with its standard deviation and a 95 % interval beside it."""
    decides: str = declare(choice(DECIDES, "which answer sets the exit code"), "agreement")
    """Which of the two answers sets the exit code: 'agreement' (does this run agree with the
    stored expected outputs? the CPU profiles) or 'reproduction' (do the paper's claims hold
    in this run? the paper profile)."""
    min_features: int = declare(whole(1, 10**6, "the fewest features a survival rate may "
                                      "rest on before C2 uses a ratio of two"), 10)
    """Fewest features a survival rate may rest on before a ratio of two rates (C2) uses it:
    a rate of 2 of 1,639 features moves by half with one feature."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, order=True)
class Variant:
    """One model as it is analysed: dense, or pruned by one method at one sparsity and pattern."""

    model: str = field(metadata=checked(path_name("the model key")))
    """Model key."""
    method: str = field(metadata=checked(choice(tuple(METHODS), "the methods of the registry, "
                                                "repro/study/methods.py")))
    """'dense' or a method of repro.study.methods.METHODS."""
    sparsity: float = field(metadata=checked(number(0, 1, "a fraction of each matrix's "
                                                    "weights: write 0.5 for 50 %",
                                                    high_open=True)))
    """Fraction of weights removed per pruned matrix, in [0, 1); 0 for dense and quantized."""
    pattern: str = UNSTRUCTURED
    """'unstructured', 'N:M' (N of every M consecutive inputs of an output removed) or
    'int<bits>[/g<group>]' (quantized to bits-bit integers, one scale per group of inputs)."""

    def __post_init__(self) -> None:
        check_fields(self)
        where = f"condition {self.model}/{self.method}"
        try:
            check_method(self.method, self.pattern)
        except ReproError as exc:
            raise ReproError(f"study file: {where}: {exc}") from None
        object.__setattr__(self, "pattern", str(Pattern.parse(self.pattern)))  # 02:4 -> 2:4
        need(
            METHODS[self.method].prunes == (self.sparsity > 0.0),
            where,
            "dense and quantized runs have sparsity 0 and pruned runs a sparsity above 0",
        )
        implied = Pattern.parse(self.pattern).sparsity
        if implied is not None:
            need(math.isclose(implied, self.sparsity), where,
                  f"pattern {self.pattern} removes {implied:g} of the weights, not "
                  f"{self.sparsity:g}; give it in a [[conditions]] entry with sparsities = "
                  f"[{implied:g}]")

    @property
    def id(self) -> str:
        """model/method/percent, the method tagged with an N:M or int pattern (wanda-2of4,
        rtn-int4/0, rtn-int4-g64/0)."""
        tag = Pattern.parse(self.pattern).tag
        method = f"{self.method}-{tag}" if tag else self.method
        return f"{self.model}/{method}/{round(self.sparsity * 100, 6):g}"

    @property
    def is_dense(self) -> bool:
        return self.method == "dense"


@dataclass(frozen=True, order=True)
class Run:
    """One SAE training: a variant and a seed. The 22 runs of the paper are these."""

    variant: Variant
    """The model variant the SAE is trained on."""
    seed: int = field(metadata=checked(seed_value()))
    """SAE initialisation and shuffling seed."""
    is_extra_seed: bool = False
    """True for the additional seeds of the dense model (RQ1)."""
    is_control: bool = False
    """True for a control SAE (the study's control_seed): trained, matched, never evaluated."""
    replicate: int = 0
    """0 for the study's own run; r > 0 for its r-th replicate, which trains from seed
    base seed + r * REPLICATE_SEED_STRIDE (the `seed` above) and is measured the same way."""

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def base_seed(self) -> int:
        """The seed the study names for this run (replicate 0's seed)."""
        return self.seed - self.replicate * REPLICATE_SEED_STRIDE

    @property
    def id(self) -> str:
        if self.is_control:
            name = f"{self.variant.id}/control-seed-{self.base_seed}"
        else:
            name = self.variant.id + (f"/seed-{self.base_seed}" if self.is_extra_seed else "")
        return name + (f"/replicate-{self.replicate}" if self.replicate else "")

    def replicated(self, replicate: int) -> Run:
        """The same run in replicate `replicate` (its own seed, its own folder)."""
        return Run(self.variant, self.base_seed + replicate * REPLICATE_SEED_STRIDE,
                   self.is_extra_seed, self.is_control, replicate)

    @property
    def dense_reference(self) -> Run:
        """The dense run of the same model, seed and replicate, whose SAE a pruned run is
        compared with."""
        return Run(Variant(self.variant.model, "dense", 0.0), self.seed, replicate=self.replicate)

    @property
    def is_evaluated(self) -> bool:
        """Whether the run has an evaluate stage (every run but the control SAEs)."""
        return not self.is_control


@dataclass(frozen=True)
class Study:
    """A whole profile: models, data, SAE settings and the list of runs."""

    name: str = field(metadata=checked(path_name("the study's name picks "
                                                 "expected_outputs/<name>/ and keys its "
                                                 "tolerances")))
    """Profile name (paper, tiny or a user's)."""
    path: Path
    """The study file it was read from."""
    device: str = field(metadata=checked(choice(("cuda", "cpu"),
                                                "where the profile is meant to run")))
    """'cuda' or 'cpu': where the profile is meant to run."""
    dtype: str = field(metadata=checked(choice(DTYPES, "the model dtypes repro runs in")))
    """Model dtype for pruning and capture (bfloat16 on GPU, float32 on CPU)."""
    seed: int = field(metadata=checked(seed_value()))
    """Base seed of the study."""
    models: dict[str, ModelSpec]
    """Model registry of the study, by key."""
    data: DataSpec
    """Token streams."""
    sae: SaeSpec = field(metadata=SECTION)
    """SAE hyper-parameters ([sae])."""
    runs: tuple[Run, ...]
    """Every run, dense references first for each model."""
    thresholds: Thresholds = section(Thresholds())
    """Analysis thresholds ([thresholds]: viable_ce_score, fragile_r, ...)."""
    verdict: VerdictSpec = section(VerdictSpec())
    """Replicates and which answer decides the exit code ([verdict])."""
    numerics: str = declare(choice(NUMERICS, "the CPU arithmetic: the same bits on one "
                                   "machine, or the machine's own kernels"), "pinned")
    """CPU arithmetic (repro.science.numerics): 'pinned', the same bits on one machine
    whatever its threads and ISA, or 'native', the machine's own kernels (several times
    faster, not bit-stable); REPRO_NUMERICS in the environment overrides it."""

    def __post_init__(self) -> None:
        check_fields(self)
        ids = [r.id for r in self.runs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        need(not dupes, "runs", f"duplicate run ids: {', '.join(dupes)}")
        folded = [k.lower() for k in self.models]
        twins = sorted({k for k in self.models if folded.count(k.lower()) > 1})
        need(not twins, "models", f"keys {', '.join(twins)} differ only in case, and name the "
              "same folder on a case-insensitive disk; rename one")
        # Every path under --out is built from these parts: none may climb out of it.
        bad = next((i for i in ids if not all(NAME.fullmatch(p) for p in i.split("/"))), None)
        need(bad is None, "runs", f"run id {bad!r} has a part that is not a plain name")

    def replicate_runs(self, replicate: int) -> tuple[Run, ...]:
        """The runs of one replicate (0: the study's own seeds), in study order."""
        return tuple(r for r in self.runs if r.replicate == replicate)

    @property
    def variants(self) -> tuple[Variant, ...]:
        """Distinct variants in run order: each is pruned and captured once."""
        return tuple(dict.fromkeys(r.variant for r in self.runs))

    @property
    def conditions(self) -> tuple[Variant, ...]:
        """Pruned variants: the paper's experimental conditions."""
        return tuple(v for v in self.variants if not v.is_dense)

    def run(self, run_id: str) -> Run:
        for r in self.runs:
            if r.id == run_id:
                return r
        raise ReproError(
            f"unknown run id {run_id!r}; `repro list --study {self.path}` shows the ids"
        )
