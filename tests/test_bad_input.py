"""Bad input, exhaustively: each case is one line on stderr, exit code 2, no traceback, and
nothing written (the folder the command ran in holds exactly what the test put there).

Study-file cases run `repro all --study bad.toml` in this process (fast); the cases that
depend on the environment (token, offline mode, Hugging Face cache) run in a subprocess with
an empty HF_HOME, since huggingface_hub reads those variables once, at import.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro import cli
from repro.study.reader import PROFILES_DIR, profile_path

sys.path.insert(0, str(Path(__file__).parent))
from runfolder import make_run  # noqa: E402

ASSETS = (PROFILES_DIR.parents[1] / "assets" / "tiny").resolve()
TINY = profile_path("tiny").read_text().replace('"../../assets/tiny', f'"{ASSETS}')

# (case, (text to replace, replacement) in the tiny study, what the one line must say)
STUDY_EDITS = [
    ("not TOML", ("[sae]", "[sae"), "not valid TOML"),
    ("unknown model key", ("probe_layer = 3\n", "probe_layer = 3\nprobe_layr = 3\n"),
     "unknown key(s) probe_layr"),
    ("probe layer a string", ("probe_layer = 3", 'probe_layer = "3"'), "probe_layer must be int"),
    ("SAE section missing a field", ("k = 16\n", ""), "missing 1 required"),
    ("no conditions", ("[[conditions]]", "[[nonditions]]"), "conditions"),
    ("unknown top-level table", ("[sae]", "[saes]"), "unknown key(s) saes"),
    ("seed a string", ("seed = 0\n\n[models", 'seed = "zero"\n\n[models'), "seed must be"),
    ("device unknown", ('device = "cpu"', 'device = "tpu"'), "device must be cuda or cpu"),
    ("dtype unknown", ('dtype = "float32"', 'dtype = "int8"'), "dtype must be one of"),
    ("architecture not the model's", ('architecture = "LlamaForCausalLM"',
                                      'architecture = "MistralForCausalLM"'),
     "config.json says LlamaForCausalLM"),
    ("n_layers not the model's", ("n_layers = 6\nprobe_layer = 3\n\n[[",
                                  "n_layers = 8\nprobe_layer = 3\n\n[["), "config.json has 6"),
    ("probe layer past the last", ("probe_layer = 3\n\n[[", "probe_layer = 6\n\n[["),
     "outside 0..5"),
    ("model folder missing", ("models/llama-tiny", "models/llama-huge"), "llama-huge"),
    ("pretrained SAE folder missing", ("saes/gemma-2-tiny", "saes/gemma-2-none"),
     "gemma-2-none is missing"),
    ("unknown method", ('methods = ["wanda"]', 'methods = ["obd"]'),
     "use one of magnitude, wanda, sparsegpt"),
    ("unknown pattern", ('methods = ["wanda"]', 'methods = ["wanda"]\npatterns = ["2of4"]'),
     "pattern '2of4' is not known; use unstructured or N:M"),
    ("N:M pattern at another sparsity", ('methods = ["wanda"]',
                                         'methods = ["wanda"]\npatterns = ["2:4"]'),
     "pattern 2:4 removes 0.5 of the weights, not 0.3"),
    ("N:M groups that do not divide the widths", (
        'methods = ["wanda", "magnitude"]\nsparsities = [0.5]',
        'methods = ["wanda", "magnitude"]\npatterns = ["2:5"]\nsparsities = [0.4]'),
     "pattern N:5 needs every matrix's inputs in whole groups of 5"),
    ("sparsity 1.0", ("sparsities = [0.3, 0.5]", "sparsities = [0.3, 1.0]"), "outside (0, 1)"),
    ("sparsity 0", ("sparsities = [0.3, 0.5]", "sparsities = [0.0, 0.5]"), "outside (0, 1)"),
    ("sparsity negative", ("sparsities = [0.3, 0.5]", "sparsities = [-0.3, 0.5]"),
     "outside (0, 1)"),
    ("sparsity in percent", ("sparsities = [0.3, 0.5]", "sparsities = [30, 50]"), "write 0.5"),
    ("sparsity a string", ("sparsities = [0.3, 0.5]", 'sparsities = ["half"]'), "not a number"),
    ("condition on an unknown model", ('model = "llama-tiny"', 'model = "llama-huge"'),
     "not among [models]"),
    ("extra seed equals base seed", ("seeds = [1, 2]", "seeds = [0, 2]"), "base seed"),
    ("SAE k above width", ("k = 16", "k = 4096"), "must not exceed width"),
    ("control seed equals a run's seed", ("control_seed = 1000", "control_seed = 2"),
     "already a seed of the study"),
    ("control seed a string", ("control_seed = 1000", 'control_seed = "x"'),
     "control_seed must be an integer"),
    ("perplexity range upside down", ('architecture = "LlamaForCausalLM"\n'
                                      'perplexity_range = [2.0, 12.0]',
                                      'architecture = "LlamaForCausalLM"\n'
                                      'perplexity_range = [12.0, 2.0]'),
     "perplexity_range must be [low, high]"),
    ("SAE lr a string", ("lr = 1e-3", 'lr = "fast"'), "lr must be float"),
    ("SAE width zero", ("width = 512", "width = 0"), "must be positive"),
    ("threshold not a number", ("fragile_r = 0.5", 'fragile_r = "half"'),
     "thresholds.fragile_r: must be a number"),
    ("frequency bins zero", ("frequency_bins = 5", "frequency_bins = 0"),
     "thresholds.frequency_bins: must be in [2, 100]"),
    ("threshold misspelt", ("fragile_r = 0.5", "fragile = 0.5"),
     "thresholds.fragile: unknown threshold"),
    ("model path neither a folder nor a Hub id", (f'"{ASSETS}/models/llama-tiny"',
                                                  '"my models/llama-tiny"'),
     "'my models/llama-tiny' is neither a folder"),
    ("stream sampling unknown", ('sampling = "packed"', 'sampling = "random"'), "sampling must"),
    ("stream of zero sequences", ("n_sequences = 32", "n_sequences = 0"), "must be positive"),
    ("text source of an unknown kind", ('source = { kind = "tiny", split = "calibration" }',
                                        'source = { kind = "web", split = "calibration" }'),
     "kind must be hub, tiny or package"),
    ("generated corpus missing", ('source = { kind = "tiny", split = "calibration" }',
                                  'source = { kind = "tiny", split = "calibration", '
                                  'path = "/nonexistent/corpus.json" }'), "corpus.json is missing"),
]

# (case, extra arguments of `repro all --study <the unedited tiny study>`, message)
ARG_CASES = [
    ("unknown run id", ["--runs", "gemma-3-tiny/wanda/55"], "unknown run id"),
    ("shard out of range", ["--shard", "3/2"], "need 0 <= i < n"),
    ("shard not i/n", ["--shard", "half"], "not of the form i/n"),
    ("device unknown", ["--device", "tpu"], "use cpu, cuda, cuda:N or auto"),
    ("CUDA asked, none present", ["--device", "cuda"], "needs a CUDA GPU"),
    ("option misspelt", ["--shrad", "0/2"], "unrecognized arguments"),
    ("study file missing", ["--study", "/no/such/study.toml"], "does not exist"),
    ("output folder empty", ["--out", ""], "--out is empty"),
]


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def _check_refused(code: int, err: str, message: str, root: Path, before: set[Path]) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert _files(root) == before, sorted(map(str, _files(root) - before))


def _run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse usage errors exit from inside parse_args
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case,edit,message", STUDY_EDITS, ids=[c[0] for c in STUDY_EDITS])
def test_bad_study_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                        edit: tuple[str, str], message: str) -> None:
    old, new = edit
    assert old in TINY, f"{case}: the tiny study no longer contains {old!r}"
    study = tmp_path / "bad.toml"
    study.write_text(TINY.replace(old, new, 1))
    before = _files(tmp_path)
    code, err = _run_in_process(
        ["all", "--study", str(study), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    _check_refused(code, err, message, tmp_path, before)


@pytest.mark.parametrize("case,args,message", ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                       args: list[str], message: str) -> None:
    study = tmp_path / "tiny.toml"
    study.write_text(TINY)
    if "--study" not in args:
        args = ["--study", str(study), *args]
    before = _files(tmp_path)
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    code, err = _run_in_process(["all", *args, *out, "--quiet"], capsys)
    _check_refused(code, err, message, tmp_path, before)


def _opt(folder: Path) -> str:
    """A layout repro does not know: OPT keeps its layers at model.decoder.layers."""
    import transformers

    transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=2048, hidden_size=32, num_hidden_layers=6, ffn_dim=64,
        num_attention_heads=4, word_embed_proj_dim=32)).save_pretrained(folder)
    return "OPTForCausalLM"


def _short_gpt2(folder: Path) -> str:
    """A supported family whose learned positions end before the study's seq_len of 128."""
    import transformers

    transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=2048, n_positions=64, n_embd=32, n_layer=6, n_head=4, bos_token_id=1,
        eos_token_id=2)).save_pretrained(folder)
    return "GPT2LMHeadModel"


def _truncated(folder: Path) -> str:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    return "LlamaForCausalLM"


def _no_tokenizer(folder: Path) -> str:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    return "LlamaForCausalLM"


def _small_embedding(folder: Path) -> str:
    import json

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 50}))
    return "LlamaForCausalLM"


# (case, how the copy of the tiny Llama folder is spoilt, returning the architecture, message)
MODEL_CASES = [
    ("weights truncated", _truncated, "model.safetensors is truncated"),
    ("no tokenizer files", _no_tokenizer, "no usable tokenizer in"),
    ("tokenizer larger than the embedding", _small_embedding, "the model's embedding only 50"),
    ("unknown layout (OPT, layers at model.decoder.layers)", _opt,
     "OPTForCausalLM has none of the decoder layouts repro knows (looked for model.layers"),
    ("streams longer than the model's positions (GPT-2)", _short_gpt2,
     "a token stream has seq_len 128, the model takes at most 64 positions"),
]


@pytest.mark.parametrize("case,spoil,message", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                          spoil, message: str) -> None:
    """Found in preflight, before the output folder exists or a token is computed."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(ASSETS / "models" / "llama-tiny", folder)
    if spoil in (_opt, _short_gpt2):
        (folder / "model.safetensors").unlink()
        (folder / "config.json").unlink()
    arch = spoil(folder)
    capsys.readouterr()  # what making the folder printed
    study = tmp_path / "bad.toml"
    study.write_text(TINY.replace(f'"{ASSETS}/models/llama-tiny"', f'"{folder}"').replace(
        'architecture = "LlamaForCausalLM"', f'architecture = "{arch}"'))
    before = _files(tmp_path)
    code, err = _run_in_process(
        ["all", "--study", str(study), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    _check_refused(code, err, message, tmp_path, before)


SENTINEL = "hf_SENTINEL0000secret0000token"

ENV_CASES = [
    ("gated model, no token", {}, "is gated and HF_TOKEN is not set"),
    ("offline, nothing cached", {"HF_HUB_OFFLINE": "1", "HF_TOKEN": SENTINEL},
     "is not in the cache and HF_HUB_OFFLINE is set"),
]


@pytest.mark.parametrize("case,env,message", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_paper_profile_without_access(tmp_path: Path, case: str, env: dict[str, str],
                                      message: str) -> None:
    """The paper profile on a machine with no cache: refused before anything is written, and
    the token, when there is one, is not in the message."""
    home = tmp_path / "hf"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("HF_", "HUGGING_FACE")) and k != "XDG_CACHE_HOME"}
    before = _files(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "repro", "all", "--profile", "paper", "--device", "cpu",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**clean, "HF_HOME": str(home), **env})
    _check_refused(res.returncode, res.stderr, message, tmp_path, before)
    assert SENTINEL not in res.stderr + res.stdout


def test_malformed_tolerances_are_refused(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An expected-outputs folder whose tolerances file is broken: verify writes no verdict."""
    run, expected = make_run(tmp_path)
    capsys.readouterr()
    cases = [("[tiny.T3_survival]\nsurvival = { abs = -0.1 }\n", "must be a finite number >= 0"),
             ("[tiny.T3_survival\n", "not valid TOML"),
             ("[tiny.T3_survival]\nsurvival = { absolute = 0.1 }\n", "absolute"),
             ("[tiny.T3_survivl]\nsurvival = { abs = 0.1 }\n", "names no expected table")]
    for text, message in cases:
        (expected / "tolerances.toml").write_text(text)
        before = _files(tmp_path)
        code, err = _run_in_process(["verify", str(run), "--expected", str(expected)], capsys)
        _check_refused(code, err, message, tmp_path, before)


def test_at_least_twenty_cases() -> None:
    total = len(STUDY_EDITS) + len(ARG_CASES) + len(ENV_CASES) + len(MODEL_CASES) + 4
    assert total == 55  # as the README says
