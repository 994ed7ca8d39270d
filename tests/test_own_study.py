"""A study of one's own, as a new user writes it: a Qwen2 model made from a config, saved with
the tiny tokenizer, a study file with a dense run, Wanda 50 % and magnitude 50 %.

`repro all` must end cleanly (exit code 0, "unverified"), `bless --expected DIR` must put
everything a verification needs into DIR, and a later run verified against DIR must pass,
while a tampered one fails. About a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repro.study_file import PROFILES_DIR

pytestmark = pytest.mark.slow
TOKENIZER = (PROFILES_DIR.parent / "assets" / "tiny" / "models" / "llama-tiny").resolve()

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


def _qwen2(folder: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=2048, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=4, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=128,
                                      bos_token_id=2, eos_token_id=1, pad_token_id=0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / name, folder / name)


def _repro(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repro", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=900, check=False)


def test_own_study_ends_cleanly_then_blesses_and_verifies_through_one_folder(
        tmp_path: Path) -> None:
    _qwen2(tmp_path / "models" / "qwen2-tiny")
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
