"""The study file's inputs: the models it prunes (and their published SAEs) and the text
streams it reads, as declared in its `[models.KEY]` and `[data.STREAM]` sections.

The rest of a study (SAE training, verdict, variants, runs): repro/study/spec.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from repro.study.rules import (
    NAME,
    FieldError,
    check_fields,
    checked,
    choice,
    declare,
    flag,
    need,
    path_name,
    seed_value,
    text,
    whole,
)

MAX_LAYERS = 1000
"""More decoder layers than any released model has (the largest have about 130); the model's
config.json must agree with n_layers anyway."""
MAX_STREAM_TOKENS = 2**30
"""Tokens of one stream (n_sequences x seq_len): its ids are held in memory as int64, 8 GiB at
2^30; the paper's largest stream has 2^24 (16384 x 1024)."""
_ANY = re.compile(r"\S.*", re.DOTALL)
_NAME_OR_EMPTY = re.compile(f"(?:{NAME.pattern})?")
_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class PretrainedSae:
    """A public (paper) or shipped (tiny) SAE that plays the pre-trained SAE of RQ3."""

    release: str = declare(text("an sae-lens release name", pattern=re.compile(r"\S*"),
                                pattern_text="text without spaces"), "")
    """sae-lens release name (e.g. gemma-scope-2b-pt-res-canonical); empty for a local SAE."""
    sae_id: str = declare(text("an SAE id inside the release", pattern=re.compile(r"\S*"),
                               pattern_text="text without spaces"), "")
    """sae-lens SAE id inside the release (e.g. layer_12/width_16k/canonical)."""
    path: str = declare(text("a folder, relative to the study file"), "")
    """Folder of an SAE saved by sae-lens (`SAE.load_from_disk`); absolute once loaded."""

    def __post_init__(self) -> None:
        check_fields(self)
        if bool(self.path) == bool(self.release):
            raise FieldError("path", f"{self.path!r}: give either path, or release and sae_id")
        if bool(self.release) != bool(self.sae_id):
            raise FieldError("sae_id", f"{self.sae_id!r}: release and sae_id go together")


@dataclass(frozen=True)
class ModelSpec:
    """One language model of the study and where its residual stream is probed."""

    key: str = field(metadata=checked(path_name("the model key names its folders under "
                                                "tokens/, variants/ and runs/ of --out and "
                                                "starts every run id")))
    """Short name used in run ids (e.g. gemma-3-1b)."""
    source: str = field(metadata=checked(text("a Hub id, a folder or package:<name>",
                                              pattern=_ANY, pattern_text="non-empty text")))
    """Hugging Face Hub id (org/name), a local folder (absolute once loaded), or
    `package:<name>`, a model repro.inputs.packaged installs by package name."""
    architecture: str = field(metadata=checked(text(
        "a transformers model class, checked against config.json", pattern=_CLASS,
        pattern_text="a class name like LlamaForCausalLM")))
    """Expected transformers class, checked on load (e.g. Gemma3ForCausalLM)."""
    probe_layer: int = field(metadata=checked(whole(0, MAX_LAYERS - 1, "a decoder layer index, "
                                                    "below n_layers")))
    """Decoder layer L whose output is probed: HF hidden_states[L + 1]."""
    n_layers: int = field(metadata=checked(whole(1, MAX_LAYERS, "no released model has more "
                                                 "layers; config.json must agree")))
    """Number of decoder layers, to check probe_layer and the loaded config."""
    gated: bool = declare(flag("whether HF_TOKEN is needed"), False)
    """Whether the Hub repository needs an accepted licence and HF_TOKEN."""
    revision: str = declare(text("a Hub branch, tag or commit", pattern=re.compile(r"\S+"),
                                 pattern_text="non-empty text without spaces"), "main")
    """Hub revision (branch, tag or commit) to pin."""
    pretrained_sae: PretrainedSae | None = None
    """The pre-trained SAE for RQ3, or None (the dense-trained SAE stands in)."""
    perplexity_range: tuple[float, float] | None = None
    """[low, high] the dense model's perplexity must land in: a sanity gate of the verdict
    (a model loaded wrong, e.g. without its BOS token, lands far outside)."""

    def __post_init__(self) -> None:
        check_fields(self)
        where = f"models.{self.key}"
        if self.perplexity_range is not None:
            r = self.perplexity_range
            need(isinstance(r, list | tuple) and len(r) == 2
                  and all(isinstance(x, int | float) and not isinstance(x, bool)
                          and math.isfinite(x) for x in r)
                  and 0 < r[0] < r[1], where,
                  f"perplexity_range must be [low, high] with 0 < low < high, got {r!r}")
            object.__setattr__(self, "perplexity_range", (float(r[0]), float(r[1])))
        need(
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

    kind: str = field(metadata=checked(choice(("hub", "tiny", "package"),
                                              "where the text comes from")))
    """'hub' (a `datasets` dataset), 'tiny' (the project's generated corpus) or 'package'
    (a text repro.inputs.packaged installs by package name; path names it, split picks
    documents)."""
    path: str = declare(text("a dataset id, folder or file"), "")
    """Dataset id or local folder/file for `datasets.load_dataset`; unused for 'tiny'."""
    name: str = declare(text("a dataset configuration names the stored copy of its rows",
                             pattern=_NAME_OR_EMPTY, pattern_text="empty, or a name of "
                             "letters, digits, '.', '_' and '-'"), "")
    """Dataset configuration (e.g. wikitext-2-raw-v1); empty for none."""
    split: str = declare(path_name("a split names the stored copy of its rows"), "train")
    """Dataset split, or the generated corpus's split name for 'tiny'."""
    data_files: str = declare(text("a file pattern inside the dataset"), "")
    """Optional data file pattern inside the dataset (e.g. one C4 shard)."""
    text_field: str = declare(text("a column name", pattern=_ANY,
                                   pattern_text="non-empty text"), "text")
    """Column holding the text."""
    streaming: bool = declare(flag("stream or download"), False)
    """Stream the dataset instead of downloading it whole."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.kind != "tiny" and not self.path:
            raise FieldError("path", f"'': a {self.kind} source needs a path")


@dataclass(frozen=True)
class StreamSpec:
    """A deterministic token stream: n_sequences x seq_len tokens."""

    source: TextSource
    """Text the stream is cut from."""
    n_sequences: int = field(metadata=checked(whole(1, MAX_STREAM_TOKENS // 2, "with seq_len, at "
                                                    "most 2^30 tokens per stream: int64 ids, "
                                                    "8 GiB")))
    """Number of sequences."""
    seq_len: int = field(metadata=checked(whole(2, 2**17, "tokens per sequence: a next-token "
                                                "loss needs 2; no model here takes more than "
                                                "2^17 positions")))
    """Tokens per sequence."""
    sampling: str = declare(choice(("windows", "packed", "joined"), "how sequences are cut"),
                            "packed")
    """'windows': random windows of random long documents (the Wanda reference's C4
    calibration); 'packed': documents in order, each opened by BOS, concatenated and cut
    into sequences (SAE training and evaluation); 'joined': all texts joined by blank lines,
    tokenized once and cut into consecutive sequences (the reference's WikiText-2 perplexity)."""
    seed: int = declare(seed_value(), 0)
    """Seed of the document and window choice."""
    skip_documents: int = declare(whole(0, 10**9, "more documents than any corpus read "
                                        "here holds"), 0)
    """Documents skipped first, so that streams drawn from one source do not overlap."""

    def __post_init__(self) -> None:
        check_fields(self)
        if self.n_tokens > MAX_STREAM_TOKENS:
            raise FieldError("n_sequences", f"{self.n_sequences}: with seq_len = {self.seq_len} "
                             f"that is {self.n_tokens} tokens; allowed: at most 2^30 tokens per "
                             "stream (its ids are held in memory as int64, 8 GiB)",
                             "lower n_sequences or seq_len")

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
