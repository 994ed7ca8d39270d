"""Bad input, exhaustively: each case is one line on stderr, exit code 2, no traceback, and
nothing written (the folder the command ran in holds exactly what the test put there).

Study-file cases run `repro all --study bad.toml` in this process (fast); the cases that
depend on the environment (token, offline mode, Hugging Face cache) run in a subprocess with
an empty HF_HOME, since huggingface_hub reads those variables once, at import. Output folders,
run folders and the files verify, bless and report read: tests/test_bad_run_folder.py. Inputs
no list names, generated: tests/test_input_properties.py and tests/test_containment.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from badinput import ASSETS, TINY, check_refused, files, run_in_process  # noqa: E402
from runfolder import make_run  # noqa: E402

SAE2 = f'pretrained_sae = {{ path = "{ASSETS}/saes/gemma-2-tiny" }}'
LLAMA = ('[models.llama-tiny]', 'model = "llama-tiny"')
"""The llama model's section and its condition's reference: renamed together."""


def _rename_llama(key: str) -> list[tuple[str, str]]:
    return [(LLAMA[0], f"[models.{json.dumps(key)}]"), (LLAMA[1], f"model = {json.dumps(key)}")]


# (case, (text to replace, replacement) or a list of them in the tiny study, what the one line
# must say)
STUDY_EDITS = [
    ("not TOML", ("[sae]", "[sae"), "not valid TOML"),
    ("unknown model key", ("probe_layer = 3\n", "probe_layer = 3\nprobe_layr = 3\n"),
     "unknown key(s) probe_layr"),
    ("probe layer a string", ("probe_layer = 3", 'probe_layer = "3"'),
     "probe_layer = '3': text, not a number"),
    ("SAE section missing a field", ("k = 16\n", ""), "missing 1 required"),
    ("no conditions", ("[[conditions]]", "[[nonditions]]"), "conditions"),
    ("unknown top-level table", ("[sae]", "[saes]"), "unknown key(s) saes"),
    ("seed a string", ("seed = 0\n\n[models", 'seed = "zero"\n\n[models'),
     "study.seed = 'zero': text, not a number; allowed: a whole number in [0, 4294967295]"),
    ("device unknown", ('device = "cpu"', 'device = "tpu"'),
     "study.device = 'tpu': not a known choice; allowed: one of cuda, cpu"),
    ("dtype unknown", ('dtype = "float32"', 'dtype = "int8"'),
     "study.dtype = 'int8': not a known choice"),
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
    ("int pattern on a pruning method", ('methods = ["wanda"]',
                                         'methods = ["wanda"]\npatterns = ["int4"]'),
     "method 'wanda' does not support pattern 'int4'; give it unstructured, N:M (e.g. 2:4), or "
     "use rtn for int4"),
    ("rtn with an N:M pattern", ('methods = ["wanda"]\nsparsities = [0.3, 0.5]',
                                 'methods = ["rtn"]\npatterns = ["2:4"]'),
     "method 'rtn' does not support pattern '2:4'; give it int<bits>[/g<group>] (e.g. int4)"),
    ("rtn without a pattern", ('methods = ["wanda"]\nsparsities = [0.3, 0.5]',
                               'methods = ["rtn"]'),
     "method 'rtn' does not support pattern 'unstructured'; give it int<bits>"),
    ("rtn bits out of range", ('methods = ["wanda"]\nsparsities = [0.3, 0.5]',
                               'methods = ["rtn"]\npatterns = ["int16"]'),
     "pattern 'int16' asks for 16-bit integers; allowed: int2 to int8"),
    ("rtn at a sparsity", ('methods = ["wanda"]', 'methods = ["rtn"]\npatterns = ["int4"]'),
     "method rtn removes no weights, so its sparsity is 0, not 0.3; write sparsities = [0]"),
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
     "sae.control_seed = 'x': text, not a number"),
    ("perplexity range upside down", ('architecture = "LlamaForCausalLM"\n'
                                      'perplexity_range = [2.0, 12.0]',
                                      'architecture = "LlamaForCausalLM"\n'
                                      'perplexity_range = [12.0, 2.0]'),
     "perplexity_range must be [low, high]"),
    ("SAE lr a string", ("lr = 1e-3", 'lr = "fast"'),
     "sae.lr = 'fast': text, not a number; allowed: a number in (0, 1]"),
    ("SAE width zero", ("width = 512", "width = 0"),
     "sae.width = 0: below the allowed range; allowed: a whole number in [1, 65536]"),
    ("threshold not a number", ("fragile_r = 0.5", 'fragile_r = "half"'),
     "thresholds.fragile_r = 'half': text, not a number"),
    ("frequency bins zero", ("frequency_bins = 5", "frequency_bins = 0"),
     "thresholds.frequency_bins = 0: below the allowed range; allowed: a whole number in [2, 100]"),
    ("threshold misspelt", ("fragile_r = 0.5", "fragile = 0.5"),
     "thresholds: unknown key(s) fragile; allowed: causal_features_per_bin, "
     "causal_sequences, curve_flat_ev_gain, fragile_r"),
    ("model path neither a folder nor a Hub id", (f'"{ASSETS}/models/llama-tiny"',
                                                  '"my models/llama-tiny"'),
     "'my models/llama-tiny' is neither a folder"),
    ("stream sampling unknown", ('sampling = "packed"', 'sampling = "random"'),
     "data.sae_train.sampling = 'random': not a known choice"),
    ("stream of zero sequences", ("n_sequences = 32", "n_sequences = 0"),
     "data.calibration.n_sequences = 0: below the allowed range"),
    ("text source of an unknown kind", ('source = { kind = "tiny", split = "calibration" }',
                                        'source = { kind = "web", split = "calibration" }'),
     "data.calibration.source.kind = 'web': not a known choice"),
    ("generated corpus missing", ('source = { kind = "tiny", split = "calibration" }',
                                  'source = { kind = "tiny", split = "calibration", '
                                  'path = "/nonexistent/corpus.json" }'), "corpus.json is missing"),
    # names that become paths (issue 26): one pattern, repro.study.rules.NAME
    ("model key climbing out of --out", _rename_llama("../../../escape"),
     "model key = '../../../escape': not allowed here; allowed: a name of letters, digits"),
    ("model key empty (a run id from /)", _rename_llama(""), "model key = '': not allowed here"),
    ("model key hidden", _rename_llama(".partial"), "model key = '.partial': not allowed here"),
    ("model key with a slash", _rename_llama("llama/tiny"), "model key = 'llama/tiny': not"),
    ("model keys equal but for case", _rename_llama("GEMMA-3-TINY"), "differ only in case"),
    ("study name a path", ('name = "tiny"', 'name = "../../tiny"'),
     "study.name = '../../tiny': not allowed here"),
    ("split name a path", ('split = "calibration"', 'split = "../../calibration"'),
     "data.calibration.source.split = '../../calibration': not allowed here"),
    # seeds within numpy's range, booleans are not numbers
    ("seed above 2^32 - 1", ("seed = 0\n\n[models", "seed = 4294967296\n\n[models"),
     "study.seed = 4294967296: above the allowed range; allowed: a whole number in [0, 42949"),
    ("seed negative", ("seed = 0\n\n[models", "seed = -1\n\n[models"),
     "study.seed = -1: below the allowed range"),
    ("seed a boolean", ("seed = 0\n\n[models", "seed = true\n\n[models"),
     "study.seed = true: a boolean, not a number"),
    ("extra seed a boolean", ("seeds = [1, 2]", "seeds = [true, 2]"),
     "extra_seeds[0].seeds[0] = true: a boolean, not a number"),
    ("extra seeds not a list", ("seeds = [1, 2]", "seeds = 5"),
     "extra_seeds[0]: seeds must be a list of whole numbers"),
    ("extra_seeds a table, not [[entries]]", ("[[extra_seeds]]", "[extra_seeds]"),
     "extra_seeds: must be [[extra_seeds]] entries (tables)"),
    ("stream seed huge", ("seq_len = 128\nseed = 0", "seq_len = 128\nseed = 99999999999"),
     "data.calibration.seed = 99999999999: above the allowed range"),
    # finite, bounded numbers; fractions, not percentages
    ("SAE lr infinite", ("lr = 1e-3", "lr = inf"), "sae.lr = inf: not a finite number"),
    ("SAE lr NaN", ("lr = 1e-3", "lr = nan"), "sae.lr = nan: not a finite number"),
    ("SAE lr above 1", ("lr = 1e-3", "lr = 10"), "sae.lr = 10: above the allowed range"),
    ("SAE width absurd", ("width = 512", "width = 1000000000"),
     "sae.width = 1000000000: above the allowed range; allowed: a whole number in [1, 65536]"),
    ("SAE k a boolean", ("k = 16", "k = true"), "sae.k = true: a boolean, not a number"),
    ("SAE epochs fractional", ("k = 16", "k = 16\nepochs = 1.5"),
     "sae.epochs = 1.5: not a whole number"),
    ("10^12 sequences", ("n_sequences = 512", "n_sequences = 1000000000000"),
     "data.sae_train.n_sequences = 1000000000000: above the allowed range"),
    ("stream of 2^36 tokens", ("n_sequences = 512\nseq_len = 128",
                                "n_sequences = 500000000\nseq_len = 128"),
     "that is 64000000000 tokens; allowed: at most 2^30 tokens per stream"),
    ("survival threshold in percent", ("survival_threshold = 0.7", "survival_threshold = 70"),
     "sae.survival_threshold = 70: above the allowed range; allowed: a number in (0, 1]"),
    ("L0 band in percent", ("sanity_l0_rel = 0.25", "sanity_l0_rel = 25"),
     "thresholds.sanity_l0_rel = 25: above the allowed range; allowed: a number in [0, 1)"),
    ("perplexity range to infinity", ("perplexity_range = [2.0, 12.0]",
                                      "perplexity_range = [2.0, inf]"),
     "perplexity_range must be [low, high] with 0 < low < high, got [2.0, inf]"),
    ("gated a string", (f"probe_layer = 3\n{SAE2}", f'probe_layer = 3\ngated = "yes"\n{SAE2}'),
     "models.gemma-2-tiny.gated = 'yes': text, not true or false"),
    ("model source a number", (f'source = "{ASSETS}/models/llama-tiny"', "source = 5"),
     "models.llama-tiny.source = 5: a whole number, not text"),
    ("pretrained SAE not a table", (SAE2, 'pretrained_sae = "x"'),
     "models.gemma-2-tiny.pretrained_sae: must be a table"),
    ("study without a name", ('name = "tiny"\n', ""), "[study] has no name; add name = "),
    ("nested beyond the parser", ("[sae]", "deep = " + "[" * 5000 + "]" * 5000 + "\n[sae]"),
     "is not valid TOML"),
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
    ("output folder the root", ["--out", "/"], "--out / is the root of the file system"),
    ("run id climbing out", ["--runs", "../../x"], "unknown run id '../../x'"),
    ("expected outputs mistyped", ["--expected", "/nowhere/tiny"],
     "--expected /nowhere/tiny is not a folder; check the path"),
    ("expected outputs an empty folder", ["--expected", "{tmp}"],
     "holds no expected tables (*.csv) and no claims.toml"),
]


@pytest.mark.parametrize("case,edit,message", STUDY_EDITS, ids=[c[0] for c in STUDY_EDITS])
def test_bad_study_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                        edit: tuple[str, str] | list[tuple[str, str]], message: str) -> None:
    text = TINY
    for old, new in edit if isinstance(edit, list) else [edit]:
        assert old in text, f"{case}: the tiny study no longer contains {old!r}"
        text = text.replace(old, new, 1)
    study = tmp_path / "bad.toml"
    study.write_text(text)
    before = files(tmp_path)
    code, err = run_in_process(
        ["all", "--study", str(study), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    check_refused(code, err, message, tmp_path, before)


@pytest.mark.parametrize("case,args,message", ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                       args: list[str], message: str) -> None:
    study = tmp_path / "tiny.toml"
    study.write_text(TINY)
    args = [a.format(tmp=tmp_path) for a in args]
    if "--study" not in args:
        args = ["--study", str(study), *args]
    before = files(tmp_path)
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    code, err = run_in_process(["all", *args, *out, "--quiet"], capsys)
    check_refused(code, err, message, tmp_path, before)


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
    """The tiny Llama's tokenizer (2048 tokens) beside a model of its shape with 50."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    config.vocab_size = 50
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return "LlamaForCausalLM"


def _config(change):
    """A spoiler that rewrites config.json: `change` takes the config and returns the new one."""
    def spoil(folder: Path) -> str:
        path = folder / "config.json"
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
        return "LlamaForCausalLM"
    return spoil


def _config_loop(folder: Path) -> str:
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("config.json")
    return "LlamaForCausalLM"


def _generation_config_list(folder: Path) -> str:
    (folder / "generation_config.json").write_text("[]")
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
    # config.json as transformers' own config class reads it (issue 26)
    ("config a list", _config(lambda c: [c]), "config.json holds list, not a JSON object"),
    ("dtype unknown", _config(lambda c: {**c, "dtype": "float33"}),
     "config.json: dtype = 'float33' is not a torch dtype"),
    ("zero heads", _config(lambda c: {**c, "num_attention_heads": 0}),
     "config.json: num_attention_heads = 0: below the allowed range"),
    ("a string for an integer", _config(lambda c: {**c, "hidden_size": "96"}),
     "config.json: hidden_size = '96': text, not a number"),
    ("a boolean for an integer", _config(lambda c: {**c, "num_hidden_layers": True}),
     "config.json: num_hidden_layers = true: a boolean, not a number"),
    ("sizes that disagree with the weights", _config(lambda c: {**c, "intermediate_size": 768}),
     "holds model.layers.0.mlp.down_proj.weight as [96, 384], config.json builds [96, 768] "
     "(from intermediate_size = 768)"),
    ("heads not a multiple of key/value heads", _config(lambda c: {**c, "num_key_value_heads": 3}),
     "num_attention_heads = 4 is not a multiple of num_key_value_heads = 3"),
    ("a field transformers' config class refuses", _config(lambda c: {**c, "rms_norm_eps": "x"}),
     "Field 'rms_norm_eps' expected float, got str"),
    ("model type unknown", _config(lambda c: {**c, "model_type": "llama9"}),
     "transformers cannot build a causal LM from"),
    ("architectures not a list", _config(lambda c: {**c, "architectures": "LlamaForCausalLM"}),
     "architectures = 'LlamaForCausalLM' is not a list of class names"),
    ("config.json a symlink loop", _config_loop, "config.json is a loop of symbolic links"),
    ("generation config a list", _generation_config_list,
     "transformers cannot read", ),
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
    before = files(tmp_path)
    code, err = run_in_process(
        ["all", "--study", str(study), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    check_refused(code, err, message, tmp_path, before)


def test_a_source_neither_a_folder_nor_on_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped relative model path reads as a Hub id: preflight asks the Hub for its
    config.json (here a stand-in that answers as the Hub does for a repository it does not
    have) and refuses before the run writes."""
    import huggingface_hub

    def not_found(repo_id: str, filename: str, **_: object) -> str:
        raise huggingface_hub.errors.EntryNotFoundError(f"404 Client Error: {repo_id}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_found)
    study = tmp_path / "bad.toml"
    study.write_text(TINY.replace(f'"{ASSETS}/models/llama-tiny"', '"modles/llama-tiny"'))
    before = files(tmp_path)
    code, err = run_in_process(
        ["all", "--study", str(study), "--out", str(tmp_path / "out"), "--quiet"], capsys)
    check_refused(code, err, "'modles/llama-tiny' is not a folder next to the study file and "
                  "the Hugging Face Hub does not give its config.json (EntryNotFoundError: 404",
                  tmp_path, before)


# (case, environment variables, message): what repro parses from the environment
PARSED_ENV = [
    ("launcher variable not a number", {"LOCAL_WORLD_SIZE": "two"},
     "LOCAL_WORLD_SIZE='two' is not an integer"),
    ("world size zero", {"WORLD_SIZE": "0"}, "WORLD_SIZE = 0: below the allowed range"),
    ("rank past the world", {"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
    ("local rank negative", {"LOCAL_RANK": "-1"}, "LOCAL_RANK = -1: below the allowed range"),
    ("numerics mode unknown", {"REPRO_NUMERICS": "fast"},
     "REPRO_NUMERICS='fast': use one of pinned, native"),
]


@pytest.mark.parametrize("case,env,message", PARSED_ENV, ids=[c[0] for c in PARSED_ENV])
@pytest.mark.parametrize("command", ["all", "prune"])
def test_bad_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch, case: str, env: dict[str, str],
                         message: str, command: str) -> None:
    """repro all and repro prune read the same variables, before anything else."""
    study = tmp_path / "tiny.toml"
    study.write_text(TINY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = files(tmp_path)
    run = ["--run", "gemma-3-tiny/wanda/50"] if command == "prune" else []
    code, err = run_in_process([command, "--study", str(study), "--out", str(tmp_path / "out"),
                                *run, "--quiet"], capsys)
    check_refused(code, err, message, tmp_path, before)


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
    before = files(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "repro", "all", "--profile", "paper", "--device", "cpu",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**clean, "HF_HOME": str(home), **env})
    check_refused(res.returncode, res.stderr, message, tmp_path, before)
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
        before = files(tmp_path)
        code, err = run_in_process(["verify", str(run), "--expected", str(expected)], capsys)
        check_refused(code, err, message, tmp_path, before)


def test_the_cases_the_readme_counts() -> None:
    assert (len(STUDY_EDITS), len(ARG_CASES), len(MODEL_CASES), len(PARSED_ENV) * 2,
            len(ENV_CASES) + 4) == (74, 12, 17, 10, 6)  # as docs/input-contract.md says
