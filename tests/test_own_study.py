"""A study of one's own, as a new user writes it: a Qwen2 model made from a config, saved with
the tiny tokenizer, a study file with a dense run, Wanda 50 % and magnitude 50 %.

`repro all` must end cleanly (exit code 0, "unverified"), `bless --expected DIR` must put
everything a verification needs into DIR, and a later run verified against DIR must pass,
while a tampered one fails. The same study on a tiny GPT-2 (Conv1D matrices, layers at
transformer.h) and a tiny GPT-NeoX (layers at gpt_neox.layers) runs end to end, its Wanda
masks those of the slow reference twin. About two minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repro.study.reader import PROFILES_DIR

pytestmark = pytest.mark.slow
TOKENIZER = (PROFILES_DIR.parents[1] / "assets" / "tiny" / "models" / "llama-tiny").resolve()

STUDY = """\
[study]
name = "byo-qwen2"
device = "cpu"
dtype = "float32"

[models.qwen2-tiny]
source = "models/qwen2-tiny"
architecture = "Qwen2ForCausalLM"
n_layers = 4
probe_layer = 2

[[conditions]]
model = "qwen2-tiny"
methods = ["wanda", "magnitude"]
sparsities = [0.5]

[sae]
width = 64
k = 4
lr = 1e-3
batch_tokens = 256

[thresholds]
frequency_bins = 3
causal_features_per_bin = 2
causal_sequences = 4

[data.calibration]
source = { kind = "tiny", split = "calibration" }
sampling = "windows"
n_sequences = 8
seq_len = 64
seed = 0

[data.sae_train]
source = { kind = "tiny", split = "sae_train" }
sampling = "packed"
n_sequences = 48
seq_len = 64

[data.eval]
source = { kind = "tiny", split = "eval" }
sampling = "packed"
n_sequences = 16
seq_len = 64

[data.perplexity]
source = { kind = "tiny", split = "ppl" }
sampling = "joined"
n_sequences = 8
seq_len = 64
"""


def _config(arch: str):
    """A tiny random config of each family, sized for the shipped tiny tokenizer."""
    import transformers

    ids = {"bos_token_id": 2, "eos_token_id": 1}
    if arch == "GPT2LMHeadModel":  # Conv1D matrices, layers at transformer.h
        return transformers.GPT2Config(vocab_size=2048, n_embd=64, n_layer=4, n_head=4,
                                       n_positions=128, **ids)
    if arch == "GPTNeoXForCausalLM":  # layers at gpt_neox.layers, parallel residual
        return transformers.GPTNeoXConfig(vocab_size=2048, hidden_size=64, intermediate_size=128,
                                          num_hidden_layers=4, num_attention_heads=4,
                                          max_position_embeddings=128, **ids)
    return transformers.Qwen2Config(vocab_size=2048, hidden_size=64, intermediate_size=128,
                                    num_hidden_layers=4, num_attention_heads=4,
                                    num_key_value_heads=2, max_position_embeddings=128,
                                    pad_token_id=0, **ids)


def _save_model(folder: Path, arch: str = "Qwen2ForCausalLM") -> None:
    """A randomly initialised model of `arch` saved with the tiny tokenizer, as a user would."""
    import torch
    import transformers

    torch.manual_seed(0)
    getattr(transformers, arch)(_config(arch)).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / name, folder / name)


def _repro(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repro", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=900, check=False)


def test_own_study_ends_cleanly_then_blesses_and_verifies_through_one_folder(
        tmp_path: Path) -> None:
    _save_model(tmp_path / "models" / "qwen2-tiny")
    (tmp_path / "study.toml").write_text(STUDY)  # the model path is relative, without ./
    first = _repro("all", "--study", "study.toml", "--out", "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "run complete, unverified: study byo-qwen2 has no expected outputs" in first.stdout
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Unverified:" in report and "Incomplete" not in report

    mine = tmp_path / "expected"
    blessed = _repro("bless", "run", "--expected", "expected", "--allow-dirty", cwd=tmp_path)
    assert blessed.returncode == 0, blessed.stderr
    assert {"T1_pruning.csv", "claims.toml", "tolerances.toml"} <= {p.name for p in
                                                                     mine.iterdir()}
    # a second, resumed `repro all` checks the same run against the folder, and passes
    again = _repro("all", "--study", "study.toml", "--out", "run", "--expected", "expected",
                   cwd=tmp_path)
    assert again.returncode == 0 and "verification PASS" in again.stdout, again.stdout[-2000:]

    claims = json.loads((tmp_path / "run" / "claims.json").read_text())
    claims["C1"]["value"] += 1  # planted: one more condition where rare features survive
    (tmp_path / "run" / "claims.json").write_text(json.dumps(claims))
    tampered = _repro("verify", "run", "--expected", "expected", cwd=tmp_path)
    assert tampered.returncode == 1 and "verification FAIL" in tampered.stdout


FAMILIES = [("gpt2", "GPT2LMHeadModel", "transformer.h.0.attn.c_attn"),
            ("neox", "GPTNeoXForCausalLM", "gpt_neox.layers.0.attention.dense")]


@pytest.mark.parametrize("key,arch,first", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_other_families_run_end_to_end_with_wanda_as_the_slow_twin(
        tmp_path: Path, key: str, arch: str, first: str) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from repro.bench import prune_paths
    from repro.inputs.families import prunable_matrices
    from repro.science import prune

    _save_model(tmp_path / "models" / f"{key}-tiny", arch)
    study = (STUDY.replace("qwen2", key).replace("Qwen2ForCausalLM", arch))
    (tmp_path / "study.toml").write_text(study)
    run = _repro("all", "--study", "study.toml", "--out", "run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"run complete, unverified: study byo-{key}" in run.stdout
    tables = {p.name for p in (tmp_path / "run" / "tables").iterdir()}
    assert {"T1_pruning.csv", "T3_survival.csv", "T5_transfer.csv"} <= tables

    variants = tmp_path / "run" / "variants" / f"{key}-tiny"
    wanda = prune.load_masks(variants / "wanda" / "50" / "prune" / "masks.safetensors")
    magnitude = prune.load_masks(variants / "magnitude" / "50" / "prune" / "masks.safetensors")
    assert next(iter(sorted(wanda))) == first and wanda.keys() == magnitude.keys()

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / f"{key}-tiny",
                                                 dtype=torch.float32).eval()
    dense = {n: m.weight.detach().clone() for n, m in prunable_matrices(model).items()}
    for name, keep in magnitude.items():  # no arithmetic involved: exactly the definition
        assert torch.equal(keep, prune.magnitude_mask(dense[name], 0.5)), name
    calibration = load_file(str(tmp_path / "run" / "tokens" / f"{key}-tiny" / "calibration"
                                / "tokens.safetensors"))["input_ids"]
    with torch.no_grad():
        reference = prune_paths.reference_wanda(model, calibration, 0.5)
    assert reference.keys() == wanda.keys()
    differ = sum(int((reference[n] != wanda[n]).sum()) for n in wanda)
    entries = sum(m.numel() for m in wanda.values())
    # one sequence at a time against the pipeline's batches: near-ties may round apart
    print(f"{key}: {differ} of {entries} Wanda mask entries differ from the twin")
    assert differ <= 1e-4 * entries, (differ, entries)
