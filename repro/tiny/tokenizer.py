"""Byte-level BPE tokenizer for the tiny models, saved as a transformers tokenizer folder.

Byte level means no <unk> is ever produced, as with Gemma's and Llama's tokenizers; the
<unk> token exists only so configs that expect one find it. Encoding prepends <bos> (a
TemplateProcessing post-processor), as the real models' tokenizers do, so code that calls
`tokenizer(text)` sees the same layout on the tiny and the paper profile.

    python -c "from repro.tiny.tokenizer import *; print(train_tokenizer(['a b'], 300))"
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
# Order fixes the ids: pad=0, eos=1, bos=2 as in the Gemma configs; unk=3.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, EOS, BOS, UNK)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts`; deterministic for the same texts and vocab_size."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=256,
        add_bos_token=True,
        add_eos_token=False,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> list[str]:
    """Write the tokenizer files that AutoTokenizer.from_pretrained reads offline."""
    folder.mkdir(parents=True, exist_ok=True)
    return [str(p) for p in tokenizer.save_pretrained(str(folder))]
