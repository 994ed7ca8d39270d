"""Study files: every model, condition, run and hyper-parameter of a profile, in one TOML file.

`repro list --profile paper` prints what a study holds; `--study FILE` loads any other file.
Everything the paper's abstract leaves open is declared as data; repro/study/reader.py reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from repro.errors import ReproError
from repro.study.methods import UNSTRUCTURED, Pattern, check_method

DTYPES = ("float32", "bfloat16", "float16")
DECIDES = ("agreement", "reproduction")
REPLICATE_SEED_STRIDE = 100_000
"""Replicate r of a run trains from the run's seed + r * this: far from every seed a study
names, so the SAEs of two replicates never share an initialisation or a data order."""


def _need(cond: bool, where: str, problem: str) -> None:
    if not cond:
        raise ReproError(f"study file: {where}: {problem}")


@dataclass(frozen=True)
class PretrainedSae:
    """A public (paper) or shipped (tiny) SAE that plays the pre-trained SAE of RQ3."""

    release: str = ""
    """sae-lens release name (e.g. gemma-scope-2b-pt-res-canonical); empty for a local SAE."""
    sae_id: str = ""
    """sae-lens SAE id inside the release (e.g. layer_12/width_16k/canonical)."""
    path: str = ""
    """Folder of an SAE saved by sae-lens (`SAE.load_from_disk`); absolute once loaded."""

    def __post_init__(self) -> None:
        _need(
            bool(self.path) != bool(self.release),
            "pretrained_sae",
            "give either path, or release and sae_id",
        )
        _need(
            bool(self.release) == bool(self.sae_id),
            "pretrained_sae",
            "release and sae_id go together",
        )


@dataclass(frozen=True)
class ModelSpec:
    """One language model of the study and where its residual stream is probed."""

    key: str
    """Short name used in run ids (e.g. gemma-3-1b)."""
    source: str
    """Hugging Face Hub id (org/name), a local folder (absolute once loaded), or
    `package:<name>`, a model repro.inputs.packaged installs by package name."""
    architecture: str
    """Expected transformers class, checked on load (e.g. Gemma3ForCausalLM)."""
    probe_layer: int
    """Decoder layer L whose output is probed: HF hidden_states[L + 1]."""
    n_layers: int
    """Number of decoder layers, to check probe_layer and the loaded config."""
    gated: bool = False
    """Whether the Hub repository needs an accepted licence and HF_TOKEN."""
    revision: str = "main"
    """Hub revision (branch, tag or commit) to pin."""
    pretrained_sae: PretrainedSae | None = None
    """The pre-trained SAE for RQ3, or None (the dense-trained SAE stands in)."""
    perplexity_range: tuple[float, float] | None = None
    """[low, high] the dense model's perplexity must land in: a sanity gate of the verdict
    (a model loaded wrong, e.g. without its BOS token, lands far outside)."""

    def __post_init__(self) -> None:
        where = f"models.{self.key}"
        if self.perplexity_range is not None:
            r = self.perplexity_range
            _need(isinstance(r, list | tuple) and len(r) == 2
                  and all(isinstance(x, int | float) and not isinstance(x, bool) for x in r)
                  and 0 < r[0] < r[1], where,
                  f"perplexity_range must be [low, high] with 0 < low < high, got {r!r}")
            object.__setattr__(self, "perplexity_range", (float(r[0]), float(r[1])))
        _need(bool(self.source), where, "source is empty")
        _need(self.n_layers > 0, where, f"n_layers must be positive, got {self.n_layers}")
        _need(
            0 <= self.probe_layer < self.n_layers,
            where,
            f"probe_layer {self.probe_layer} is outside 0..{self.n_layers - 1}",
        )

    @property
    def is_local(self) -> bool:
        return Path(self.source).is_absolute()

    @property
    def is_packaged(self) -> bool:
        """A model installed by package name (`package:<name>`, see repro.inputs.packaged)."""
        return self.source.startswith("package:")


@dataclass(frozen=True)
class TextSource:
    """Where a token stream's text comes from."""

    kind: str
    """'hub' (a `datasets` dataset), 'tiny' (the project's generated corpus) or 'package'
    (a text repro.inputs.packaged installs by package name; path names it, split picks
    documents)."""
    path: str = ""
    """Dataset id or local folder/file for `datasets.load_dataset`; unused for 'tiny'."""
    name: str = ""
    """Dataset configuration (e.g. wikitext-2-raw-v1); empty for none."""
    split: str = "train"
    """Dataset split, or the generated corpus's split name for 'tiny'."""
    data_files: str = ""
    """Optional data file pattern inside the dataset (e.g. one C4 shard)."""
    text_field: str = "text"
    """Column holding the text."""
    streaming: bool = False
    """Stream the dataset instead of downloading it whole."""

    def __post_init__(self) -> None:
        _need(
            self.kind in ("hub", "tiny", "package"),
            "text source",
            f"kind must be hub, tiny or package, got {self.kind!r}",
        )
        _need(self.kind == "tiny" or bool(self.path), "text source",
              f"a {self.kind} source needs path")


@dataclass(frozen=True)
class StreamSpec:
    """A deterministic token stream: n_sequences x seq_len tokens."""

    source: TextSource
    """Text the stream is cut from."""
    n_sequences: int
    """Number of sequences."""
    seq_len: int
    """Tokens per sequence."""
    sampling: str = "packed"
    """'windows': random windows of random long documents (the Wanda reference's C4
    calibration); 'packed': documents in order, each opened by BOS, concatenated and cut
    into sequences (SAE training and evaluation); 'joined': all texts joined by blank lines,
    tokenized once and cut into consecutive sequences (the reference's WikiText-2 perplexity)."""
    seed: int = 0
    """Seed of the document and window choice."""
    skip_documents: int = 0
    """Documents skipped first, so that streams drawn from one source do not overlap."""

    def __post_init__(self) -> None:
        _need(
            self.n_sequences > 0, "stream", f"n_sequences must be positive, got {self.n_sequences}"
        )
        _need(self.seq_len > 1, "stream", f"seq_len must be at least 2, got {self.seq_len}")
        _need(
            self.sampling in ("windows", "packed", "joined"),
            "stream",
            f"sampling must be windows, packed or joined, got {self.sampling!r}",
        )
        _need(self.skip_documents >= 0, "stream", "skip_documents must be >= 0")

    @property
    def n_tokens(self) -> int:
        return self.n_sequences * self.seq_len


@dataclass(frozen=True)
class DataSpec:
    """The four token streams of a study."""

    calibration: StreamSpec
    """Wanda calibration (paper: C4, 128 x 2048, seed 0)."""
    sae_train: StreamSpec
    """SAE training tokens, identical for every run of a model."""
    eval: StreamSpec
    """Evaluation tokens: firing rates, fragility, transfer, causal importance."""
    perplexity: StreamSpec
    """Perplexity tokens (paper: WikiText-2 test)."""

    @property
    def streams(self) -> dict[str, StreamSpec]:
        """The four streams by name, in the order above (the order they are tokenized in)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SaeSpec:
    """Hyper-parameters of the SAEs the project trains (sae-lens TopK)."""

    width: int
    """Number of latents (paper: 16384)."""
    k: int
    """Active latents per token (TopK)."""
    lr: float
    """Adam learning rate."""
    batch_tokens: int
    """Activations per training step."""
    epochs: int = 1
    """Passes over the SAE-training activations (paper: 1; the model runs once, later epochs
    replay its activations reshuffled, for budgets where more tokens cost too much)."""
    survival_threshold: float = 0.7
    """Matched decoder cosine at or above which a feature survives (tau)."""
    control_seed: int | None = None
    """Seed of the control SAEs: every variant (dense and pruned) gets one more SAE from this
    seed, so survival can be measured between SAEs that share no initialisation and no data
    order (the seed control of RQ2); None trains none."""

    def __post_init__(self) -> None:
        _need(self.width > 0 and self.k > 0, "sae", "width and k must be positive")
        _need(self.control_seed is None or (isinstance(self.control_seed, int)
                                            and not isinstance(self.control_seed, bool)),
              "sae", f"control_seed must be an integer, got {self.control_seed!r}")
        _need(self.k <= self.width, "sae", f"k ({self.k}) must not exceed width ({self.width})")
        _need(self.lr > 0, "sae", f"lr must be positive, got {self.lr}")
        _need(self.batch_tokens > 0, "sae", "batch_tokens must be positive")
        _need(isinstance(self.epochs, int) and not isinstance(self.epochs, bool)
              and self.epochs >= 1, "sae",
              f"epochs must be a positive integer, got {self.epochs!r}")
        _need(0 < self.survival_threshold <= 1, "sae", "survival_threshold must be in (0, 1]")


@dataclass(frozen=True)
class VerdictSpec:
    """How a run reaches its verdict: how often every SAE is trained, and which answer decides."""

    replicates: int = 1
    """Times every SAE of the study is trained and measured, each time from other seeds
    (replicate 0 is the study's own seeds): every number of the tables and claims is the mean
    over replicates, with its standard deviation and a 95 % interval beside it."""
    decides: str = "agreement"
    """Which of the two answers sets the exit code: 'agreement' (does this run agree with the
    stored expected outputs? the CPU profiles) or 'reproduction' (do the paper's claims hold
    in this run? the paper profile)."""
    min_features: int = 10
    """Fewest features a survival rate may rest on before a ratio of two rates (C2) uses it:
    a rate of 2 of 1,639 features moves by half with one feature."""

    def __post_init__(self) -> None:
        _need(isinstance(self.replicates, int) and not isinstance(self.replicates, bool)
              and 1 <= self.replicates <= 100, "verdict",
              f"replicates must be a whole number in [1, 100], got {self.replicates!r}")
        _need(self.decides in DECIDES, "verdict",
              f"decides must be one of {', '.join(DECIDES)}, got {self.decides!r}")
        _need(isinstance(self.min_features, int) and not isinstance(self.min_features, bool)
              and self.min_features >= 1, "verdict",
              f"min_features must be a whole number >= 1, got {self.min_features!r}")


@dataclass(frozen=True, order=True)
class Variant:
    """One model as it is analysed: dense, or pruned by one method at one sparsity and pattern."""

    model: str
    """Model key."""
    method: str
    """'dense' or a pruning method of repro.study.methods.METHODS."""
    sparsity: float
    """Fraction of weights removed per pruned matrix, in [0, 1); 0 for dense."""
    pattern: str = UNSTRUCTURED
    """'unstructured', or 'N:M' (N of every M consecutive inputs of an output removed)."""

    def __post_init__(self) -> None:
        where = f"condition {self.model}/{self.method}"
        try:
            check_method(self.method, self.pattern)
        except ReproError as exc:
            raise ReproError(f"study file: {where}: {exc}") from None
        object.__setattr__(self, "pattern", str(Pattern.parse(self.pattern)))  # 02:4 -> 2:4
        _need(
            0.0 <= self.sparsity < 1.0,
            where,
            f"sparsity {self.sparsity} is outside [0, 1); write 0.5 for 50 %",
        )
        _need(
            (self.method == "dense") == (self.sparsity == 0.0),
            where,
            "dense runs have sparsity 0 and pruned runs a sparsity above 0",
        )
        implied = Pattern.parse(self.pattern).sparsity
        if implied is not None:
            _need(math.isclose(implied, self.sparsity), where,
                  f"pattern {self.pattern} removes {implied:g} of the weights, not "
                  f"{self.sparsity:g}; give it in a [[conditions]] entry with sparsities = "
                  f"[{implied:g}]")

    @property
    def id(self) -> str:
        """model/method/percent, the method tagged with an N:M pattern (wanda-2of4)."""
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
    seed: int
    """SAE initialisation and shuffling seed."""
    is_extra_seed: bool = False
    """True for the additional seeds of the dense model (RQ1)."""
    is_control: bool = False
    """True for a control SAE (the study's control_seed): trained, matched, never evaluated."""
    replicate: int = 0
    """0 for the study's own run; r > 0 for its r-th replicate, which trains from seed
    base seed + r * REPLICATE_SEED_STRIDE (the `seed` above) and is measured the same way."""

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

    name: str
    """Profile name (paper, tiny or a user's)."""
    path: Path
    """The study file it was read from."""
    device: str
    """'cuda' or 'cpu': where the profile is meant to run."""
    dtype: str
    """Model dtype for pruning and capture (bfloat16 on GPU, float32 on CPU)."""
    seed: int
    """Base seed of the study."""
    models: dict[str, ModelSpec]
    """Model registry of the study, by key."""
    data: DataSpec
    """Token streams."""
    sae: SaeSpec
    """SAE hyper-parameters."""
    runs: tuple[Run, ...]
    """Every run, dense references first for each model."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """Analysis thresholds (e.g. viable_ce_score, fragile_r)."""
    verdict: VerdictSpec = field(default_factory=VerdictSpec)
    """Replicates and which answer decides the exit code."""

    def __post_init__(self) -> None:
        _need(
            self.device in ("cuda", "cpu"),
            "study",
            f"device must be cuda or cpu, got {self.device!r}",
        )
        _need(self.dtype in DTYPES, "study", f"dtype must be one of {', '.join(DTYPES)}")
        ids = [r.id for r in self.runs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        _need(not dupes, "runs", f"duplicate run ids: {', '.join(dupes)}")

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
