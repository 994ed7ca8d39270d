"""`repro fetch` and `repro doctor` without network: local assets and their SHA256SUMS, the
Hub cache laid out by hand, text sources stored from local rows, and the one-line errors.

    .venv/bin/python -m pytest tests/test_fetch_doctor.py -q
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import make_model, word_tokenizer

from repro import cli
from repro.errors import ReproError
from repro.inputs import data, doctor, fetch, footprint, hubcache
from repro.outputs.shipped import NOT_YET_BLESSED, expected_checks
from repro.study.reader import load_study, profile_path
from repro.study.sources import StreamSpec, TextSource

ROOT = Path(__file__).resolve().parent.parent
WORDS = [f"w{i}" for i in range(40)]
TINY_ASSETS = ROOT / "repro" / "assets" / "tiny"


@pytest.fixture
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face home, no token, no offline flag, and a Hub that refuses."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return home


def write_study(folder: Path, model_table: str, data_source: str) -> Path:
    stream = ('source = {src}\nsampling = "packed"\nn_sequences = 4\nseq_len = 16\n')
    text = f"""[study]
name = "local"
device = "cpu"
[models.m]
{model_table}
architecture = "LlamaForCausalLM"
n_layers = 2
probe_layer = 1
[[conditions]]
model = "m"
methods = ["magnitude"]
sparsities = [0.5]
[sae]
width = 16
k = 2
lr = 1e-3
batch_tokens = 64
"""
    for name in ("calibration", "sae_train", "eval", "perplexity"):
        text += f"[data.{name}]\n" + stream.format(src=data_source)
    path = folder / "study.toml"
    path.write_text(text)
    return path


@pytest.fixture
def local_study(tmp_path: Path) -> Path:
    """A study whose model and corpus parameters are shipped files with a SHA256SUMS."""
    from repro.inputs.tiny_corpus import CorpusParams
    from repro.tiny.build import write_sha256sums

    assets = tmp_path / "assets"
    make_model("LlamaForCausalLM", n_layers=2).save_pretrained(assets / "models" / "m")
    word_tokenizer(WORDS).save_pretrained(assets / "models" / "m")
    (assets / "corpus.json").write_text(json.dumps(CorpusParams().to_dict()))
    write_sha256sums(assets)
    return write_study(tmp_path, 'source = "./assets/models/m"',
                       f'{{ kind = "tiny", split = "eval", path = "{assets / "corpus.json"}" }}')


def hub_study(tmp_path: Path, source: str = "google/gemma-2-2b") -> Path:
    """A study of one gated Hub model (its text is the generated corpus, nothing to fetch)."""
    from repro.inputs.tiny_corpus import CorpusParams

    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps(CorpusParams().to_dict()))
    return write_study(tmp_path, f'source = "{source}"\ngated = true',
                       f'{{ kind = "tiny", split = "eval", path = "{corpus}" }}')


# ---- fetch ------------------------------------------------------------------------------

def test_fetch_verifies_shipped_assets(local_study: Path, hf_home: Path) -> None:
    lines: list[str] = []
    sizes = fetch.fetch(load_study(local_study), log=lines.append)
    assert sizes["local"] > 0 and sizes["models"] == sizes["text"] == 0
    assert any("match SHA256SUMS" in line for line in lines)


def test_fetch_rejects_changed_or_missing_assets(local_study: Path, hf_home: Path) -> None:
    study = load_study(local_study)
    weights = next((local_study.parent / "assets" / "models" / "m").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ReproError, match="do not match SHA256SUMS.*differs"):
        fetch.fetch(study, log=lambda _: None)
    weights.unlink()
    with pytest.raises(ReproError, match="missing"):
        fetch.fetch(study, log=lambda _: None)


def test_gated_model_without_token_names_the_licence(tmp_path: Path, hf_home: Path) -> None:
    with pytest.raises(ReproError, match=r"gated and HF_TOKEN is not set: accept its licence "
                                         r"at https://huggingface.co/google/gemma-2-2b"):
        fetch.fetch(load_study(hub_study(tmp_path)), log=lambda _: None)


def test_offline_flag_and_no_network_are_one_line_errors(tmp_path: Path, hf_home: Path,
                                                         monkeypatch, capsys) -> None:
    study = hub_study(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ReproError, match="HF_HUB_OFFLINE is set"):
        fetch.fetch(load_study(study), log=lambda _: None)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert cli.main(["fetch", "--study", str(study)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "cannot reach the Hugging Face Hub" in err and "hf_not_a_real_token" not in err


def docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30))) for _ in range(n)]


def test_streamed_source_stores_exactly_the_consumed_prefix(hf_home: Path) -> None:
    tok = word_tokenizer(WORDS)
    source = TextSource(kind="hub", path="org/corpus", name="cfg", streaming=True)
    streams = [("eval", StreamSpec(source, n_sequences=6, seq_len=20, sampling="packed")),
               ("sae_train", StreamSpec(source, n_sequences=9, seq_len=20, sampling="packed",
                                        skip_documents=300))]
    rows = docs(5000)
    fetch.materialise(source, streams, {"m": tok}, log=lambda _: None, rows=iter(rows))
    stored = hubcache.read_materialised(hubcache.materialised_path(source))
    assert stored == rows[:len(stored)] and len(stored) < len(rows)
    info = hubcache.materialised_info(hubcache.materialised_path(source))
    needed = info["docs_needed"]["m/sae_train"]
    assert needed > 300 and len(stored) >= needed
    for name, spec in streams:  # the stored rows give what the whole stream would
        assert data.token_stream(spec, tok).equal(data._packed(spec, iter(rows), tok)), name
    data._packed(streams[1][1], iter(rows[:needed]), tok)  # exactly enough, one less is not
    with pytest.raises(ReproError, match="tokens available"):
        data._packed(streams[1][1], iter(rows[:needed - 1]), tok)
    lines: list[str] = []
    fetch.materialise(source, streams, {"m": tok}, log=lines.append, rows=iter([]))
    assert "already stored" in lines[0]


class CountingTokenizer:
    """A tokenizer that remembers how many texts it was asked to tokenize."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.texts = tokenizer, 0
        self.bos_token_id = tokenizer.bos_token_id

    def __call__(self, batch: list[str]):
        self.texts += len(batch)
        return self.tokenizer(batch)


def test_prefix_counter_tokenizes_no_skipped_document(hf_home: Path) -> None:
    """The counts equal a document-by-document walk (the slow twin), and the documents that
    only a stream's skip covers (here 300-999) are never tokenized."""
    tok = word_tokenizer(WORDS)
    source = TextSource(kind="hub", path="org/corpus", streaming=True)
    streams = [("eval", StreamSpec(source, n_sequences=3, seq_len=20, sampling="packed")),
               ("sae_train", StreamSpec(source, n_sequences=9, seq_len=20, sampling="packed",
                                        skip_documents=1000))]
    rows = docs(4000)
    counting = CountingTokenizer(tok)
    counter = fetch.PrefixCounter(streams, {"m": counting})
    for start in range(0, len(rows), fetch.BATCH_DOCS):
        counter.feed(rows[start:start + fetch.BATCH_DOCS])
        if counter.done:
            break

    def walk(skip: int, need: int) -> int:
        have = 0
        for i, text in enumerate(rows[skip:], start=skip):
            ids = tok(text)["input_ids"]
            have += len(ids) + (ids[:1] != [tok.bos_token_id])
            if have >= need:
                return i + 1
        raise AssertionError("not enough text")

    eval_docs, train_docs = walk(0, 3 * 19), walk(1000, 9 * 19)
    assert counter.docs_needed == {("m", "eval"): eval_docs, ("m", "sae_train"): train_docs}
    batches = -(-train_docs // fetch.BATCH_DOCS) * fetch.BATCH_DOCS  # the last batch read
    assert eval_docs <= fetch.BATCH_DOCS < 1000
    assert counting.texts == fetch.BATCH_DOCS + (batches - 1000)


def test_whole_source_and_interrupted_write(hf_home: Path) -> None:
    source = TextSource(kind="hub", path="org/wiki", split="test")
    spec = StreamSpec(source, n_sequences=2, seq_len=8, sampling="joined")

    def broken():
        yield from docs(600)
        raise ConnectionError("stream cut")

    with pytest.raises(ConnectionError):
        fetch.materialise(source, [("perplexity", spec)], {}, log=lambda _: None, rows=broken())
    path = hubcache.materialised_path(source)
    assert not path.exists() and not list(path.parent.glob("*.part"))
    fetch.materialise(source, [("perplexity", spec)], {}, log=lambda _: None, rows=iter(docs(700)))
    assert list(data.documents(source)) == docs(700)
    assert hubcache.materialised_info(path)["complete"] is True


def test_streamed_source_cannot_feed_windows(hf_home: Path) -> None:
    source = TextSource(kind="hub", path="org/c", streaming=True)
    spec = StreamSpec(source, n_sequences=2, seq_len=8, sampling="windows")
    with pytest.raises(ReproError, match="set streaming = false"):
        fetch.materialise(source, [("calibration", spec)], {}, rows=iter([]))


@pytest.mark.parametrize("streaming", [False, True])
def test_fetch_stores_dataset_rows_then_doctor_sees_them(tmp_path: Path, hf_home: Path,
                                                        local_study: Path, streaming: bool) -> None:
    """The whole path through `datasets`, on its packaged json builder (a local file)."""
    rows = docs(3000, seed=1)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps({"text": r, "id": i}) + "\n" for i, r in enumerate(rows)))
    flag = "true" if streaming else "false"
    study_file = write_study(tmp_path / "assets", 'source = "./models/m"',
                             f'{{ kind = "hub", path = "json", data_files = "{jsonl}", '
                             f'streaming = {flag} }}')
    study = load_study(study_file)
    before = doctor.run_checks(study, tmp_path / "out", "--study s")
    assert [c.ok for c in before if c.what.startswith("text json")] == [False]
    lines: list[str] = []
    sizes = fetch.fetch(study, log=lines.append)
    assert sizes["text"] > 0 and any("documents stored" in line for line in lines)
    stored = hubcache.read_materialised(hubcache.materialised_path(study.data.eval.source))
    assert stored == (rows[:len(stored)] if streaming else rows)
    assert len(stored) < len(rows) if streaming else True
    after = doctor.run_checks(study, tmp_path / "out", "--study s")
    assert all(c.ok for c in after), "\n".join(c.line() for c in after)


def test_paper_saes_resolve_through_the_sae_lens_registry() -> None:
    study = load_study(profile_path("paper"))
    assert {(i.repo_id, i.allow) for i in hubcache.sae_items(study)} == {
        ("google/gemma-scope-2b-pt-res", ("layer_12/width_16k/average_l0_82/*",)),
        ("google/gemma-scope-2-1b-pt", ("resid_post/layer_13_width_16k_l0_medium/*",))}
    with pytest.raises(ReproError, match="not in sae-lens release"):
        hubcache.sae_location("gemma-scope-2b-pt-res-canonical", "layer_99/nope")


# ---- doctor -----------------------------------------------------------------------------

def test_doctor_passes_on_a_complete_local_study(local_study: Path, hf_home: Path) -> None:
    checks = doctor.run_checks(load_study(local_study), local_study.parent / "out", "--study x")
    assert all(c.ok for c in checks), "\n".join(c.line() for c in checks)
    assert any(c.what.startswith("assets ") for c in checks)


@pytest.mark.skipif(not (TINY_ASSETS / "SHA256SUMS").is_file(),
                    reason="the tiny assets are not built in this checkout")
def test_doctor_passes_on_the_tiny_profile(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "repro", "doctor", "--profile", "tiny", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert all(line.startswith("OK") for line in run.stdout.splitlines()[:-1])


def test_doctor_explains_a_gated_uncached_model(tmp_path: Path, hf_home: Path, capsys) -> None:
    study = hub_study(tmp_path)
    assert cli.main(["doctor", "--study", str(study), "--out", str(tmp_path / "o")]) == 2
    out = capsys.readouterr().out
    token = next(line for line in out.splitlines() if "HF_TOKEN" in line)
    assert token.startswith("FAIL") and "https://huggingface.co/google/gemma-2-2b" in token
    assert "export HF_TOKEN" in token
    model = next(line for line in out.splitlines() if line.startswith("FAIL model m "))
    assert f"-> repro fetch --study {study}" in model


def test_doctor_sees_a_cached_model(tmp_path: Path, hf_home: Path) -> None:
    snapshot = hf_home / "hub" / "models--org--tiny" / "snapshots" / ("a" * 40)
    make_model("LlamaForCausalLM", n_layers=2).save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    study = load_study(hub_study(tmp_path, source="org/tiny"))
    checks = {c.what.split(":")[0]: c for c in doctor.run_checks(study, tmp_path, "--study s")}
    assert checks["model m (org/tiny@main)"].ok
    assert checks["HF_TOKEN"].ok and "not needed" in checks["HF_TOKEN"].what
    facts = footprint.model_facts(study.models["m"])
    assert facts.origin == "files" and facts.d_model == 32
    lines: list[str] = []  # a complete snapshot is kept as it is, without asking the Hub
    assert fetch.download(hubcache.model_item(study.models["m"]), lines.append) > 0
    assert "cached" in lines[0]


def test_package_check_names_the_differences(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text(f"pytest=={metadata.version('pytest')} \\\n    --hash=sha256:00\n")
    assert doctor.check_packages(lock).ok
    lock.write_text(lock.read_text() + "numpy==0.0.1 \\\n    --hash=sha256:00\nnot-a-pkg==1\n")
    check = doctor.check_packages(lock)
    assert not check.ok and "numpy" in check.what and "not-a-pkg missing" in check.what
    assert "--require-hashes" in check.fix


def test_paper_estimates_follow_their_derivation(hf_home: Path) -> None:
    study = load_study(profile_path("paper"))
    facts = {k: footprint.KNOWN_MODELS[s.source] for k, s in study.models.items()}
    parts = footprint.out_bytes(study, facts)
    assert parts["activations"] == 256 * 1024 * 2 * (1152 * 13 + 2304 * 4 + 2048 * 3)
    # each model's runs plus one control-seed SAE per variant (13, 4 and 3), per replicate
    assert study.verdict.replicates == 3
    assert parts["saes"] == 3 * 2 * 16384 * 4 * (
        1152 * (15 + 13) + 2304 * (4 + 4) + 2048 * (3 + 3))
    assert footprint.gpu_need_gib(study) == 34
    assert footprint.gpu_need_gib(load_study(profile_path("tiny"))) == 0
    # paper-plus: SparseGPT's kept weights in bf16 beside its masks (6 + 2 + 1 unstructured
    # variants at the paper's sparsities, one 2:4 per model at 0.5)
    plus = load_study(profile_path("paper-plus"))
    masks = footprint.out_bytes(plus, facts)["masks"]
    n = {k: f.n_params for k, f in facts.items()}
    kept = (sum(int((1 - s) * n["gemma-3-1b"]) * 2 for s in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6))
            + sum(int(0.5 * n[k]) * 2 for k in n) + int(0.7 * n["gemma-2-2b"]) * 2
            + int(0.5 * n["gemma-2-2b"]) * 2 + int(0.5 * n["llama-3.2-1b"]) * 2)
    bits = sum(n[v.model] // 8 for v in plus.conditions)
    assert masks == bits + kept
    assert footprint.gpu_need_gib(plus) == 34


def test_doctor_paper_lists_everything_missing_here(hf_home: Path) -> None:
    import torch

    checks = doctor.run_checks(load_study(profile_path("paper")), hf_home / "o", "--profile paper")
    failed = [c for c in checks if not c.ok]
    names = {c.what.split(":")[0].split(" (")[0] for c in failed}
    assert {"HF_TOKEN", "model gemma-3-1b", "model gemma-2-2b", "model llama-3.2-1b"} <= names
    assert sum(c.what.startswith("sae ") for c in failed) == 2
    assert sum(c.what.startswith("text ") for c in failed) == 3
    disk = next(c.what for c in checks if c.what.startswith("disk --out"))
    assert "models not fetched yet: sizes from their published configs" in disk
    if not torch.cuda.is_available():
        assert "--gpus all" in next(c.fix for c in failed if c.what.startswith("device"))


# ---- the expected outputs the verdict needs (package data) --------------------------------

def test_doctor_finds_each_profiles_expected_outputs(tmp_path: Path) -> None:
    from repro.outputs.expected import EXPECTED_ROOT

    run = subprocess.run([sys.executable, "-m", "repro", "doctor", "--profile", "small", "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert f"OK   expected outputs: {EXPECTED_ROOT / 'small'}: 6 blessed tables, " in run.stdout
    checks = expected_checks(load_study(profile_path("paper")))
    assert [c.ok for c in checks] == [True]
    assert "paper: no tables (claims only), 8 claim checks" in checks[0].what
    for name in NOT_YET_BLESSED:  # blessing one means taking it off the list
        assert not (EXPECTED_ROOT / name).exists(), name
        check = expected_checks(load_study(profile_path(name)))[0]
        assert check.ok and "has not yet been run and blessed" in check.what, name


def test_doctor_fails_on_missing_or_changed_expected_outputs(tmp_path: Path) -> None:
    """Negative controls: a changed blessed table, a lost claims file and a lost folder of a
    shipped profile each fail, naming what; a study of one's own needs none."""
    import shutil

    from repro.outputs.expected import EXPECTED_ROOT

    root = tmp_path / "expected_outputs"
    shutil.copytree(EXPECTED_ROOT, root)
    tiny = load_study(profile_path("tiny"))
    assert [c.ok for c in expected_checks(tiny, root)] == [True]
    table = root / "tiny" / "T3_survival.csv"
    table.write_text(table.read_text().replace("0.", "0.9", 1))
    bad = expected_checks(tiny, root)[0]
    assert not bad.ok and "1 of 6 tables" in bad.what and "T3_survival.csv" in bad.what
    shutil.copy(EXPECTED_ROOT / "tiny" / "T3_survival.csv", table)
    (root / "tiny" / "claims.toml").unlink()
    assert "has blessed tables but no claims.toml" in expected_checks(tiny, root)[0].what
    shutil.rmtree(root / "tiny")
    gone = expected_checks(tiny, root)[0]
    assert not gone.ok and "would end unverified" in gone.what and "reinstall" in gone.fix
    own = tmp_path / "tiny.toml"
    own.write_text(profile_path("tiny").read_text().replace('"../../assets', '"' + str(
        profile_path("tiny").parent.parent.parent / "assets")))
    assert [c.ok for c in expected_checks(load_study(own), root)] == [True]
