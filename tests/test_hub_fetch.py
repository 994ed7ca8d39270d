"""`repro fetch` for the paper against a local server that speaks the Hub's protocol.

The server (tests/hubserver.py) holds the paper's repositories with stand-in content
(tests/paper_hub.py): the tiny models under the paper's ids, C4 / FineWeb / WikiText-2 in
their Hub layouts, the two Gemma Scope SAEs. `repro` runs in subprocesses whose HF_ENDPOINT
points at it and whose HF_HOME is the test's own, so huggingface_hub, datasets and sae-lens
are the real clients. The study is paper.toml with the stand-ins' layer counts and small
streams (paper_hub.derived_study): the paper's own sizes would make the fetch tokenize 16.8M
FineWeb tokens per model, minutes here (docs/fetch.md).

    .venv/bin/python -m pytest tests/test_hub_fetch.py -q
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paper_hub
import pyarrow.parquet as pq
import pytest
import torch
from hubserver import HubServer
from safetensors.torch import load as load_tensors
from safetensors.torch import load_file
from transformers import AutoTokenizer

from repro.inputs import data
from repro.study.reader import load_study

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "hf_SENTINELtoken4f1e9c0a7b3d"
"""The token the server grants every gated repository; it must appear in no output."""
SAE_1 = "resid_post/layer_13_width_16k_l0_medium/params.safetensors"
"""Gemma Scope 2's weights (12.7 MB): large enough that huggingface_hub writes a 10 MiB
block of it before the transfer ends, so a cut or a kill leaves something on disk."""
BLOCK = 10 * 2**20
"""What huggingface_hub reads before it writes (constants.DOWNLOAD_CHUNK_SIZE)."""
MODEL_REPOS = tuple(paper_hub.MODELS)


@pytest.fixture(scope="module")
def repos() -> list:
    return paper_hub.paper_repos()


@pytest.fixture
def hub(repos: list) -> HubServer:
    server = paper_hub.serve(repos, token=SENTINEL)
    yield server
    server.stop()


def repro_env(hub: HubServer, home: Path, token: str | None = SENTINEL, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "REPRO_KILL_AT")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(home), HF_HUB_ETAG_TIMEOUT="10",
               HF_HUB_DOWNLOAD_TIMEOUT="10", **extra)
    if token:
        env["HF_TOKEN"] = token
    return env


def repro(args: list[str], env: dict, fsize: int | None = None,
          timeout: int = 300) -> subprocess.CompletedProcess:
    def limit() -> None:  # a full disk, as test_faults.py simulates it: EFBIG past fsize
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "repro", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit if fsize else None)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    """The run failed with exit 2 and one `repro: error:` line, its last, no traceback."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert [line for line in lines if line.startswith("repro: error:")] == lines[-1:], lines[-5:]
    return lines[-1]


def files_holding(folder: Path, text: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
            and text.encode() in p.read_bytes()]


def doctor_lines(env: dict, study: list[str], out: Path) -> list[str]:
    res = repro(["doctor", *study, "--out", str(out)], env)
    return res.stdout.splitlines()[:-1]


# ---- the paper's fetch, end to end ---------------------------------------------------------

def _kill_while_sae_arrives(hub: HubServer, env: dict, study: Path, home: Path) -> Path:
    """Start the fetch with Gemma Scope 2's weights stalling after 11 MB, SIGKILL it once
    the first 10 MiB block of them is on disk; returns the partial file it left."""
    hub.faults.stall[SAE_1] = [11_000_000, 1]
    env = {**env, "HF_HUB_DOWNLOAD_TIMEOUT": "120"}  # it waits for the stalled file, not retries
    blobs = home / "hub" / "models--google--gemma-scope-2-1b-pt" / "blobs"
    with open(home.parent / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "repro", "fetch", "--study", str(study)],
                                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(1200):  # at most 120 s
                partial = [p for p in blobs.glob("*.incomplete") if p.stat().st_size >= BLOCK]
                if partial or proc.poll() is not None:
                    break
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert partial, (home.parent / "killed.log").read_text()[-3000:]
    return partial[0]


def test_paper_fetch_survives_a_kill_then_the_run_reads_only_the_cache(hub: HubServer,
                                                                      tmp_path: Path) -> None:
    study = paper_hub.derived_study(tmp_path)
    home, out = tmp_path / "hf", tmp_path / "out"
    env = repro_env(hub, home)
    said: list[str] = []

    # 1. killed while the first SAE arrives: the models are complete, the SAE is not
    partial = _kill_while_sae_arrives(hub, env, study, home)
    assert partial.stat().st_size == BLOCK  # one block written, the rest never arrived
    state = doctor_lines(env, ["--study", str(study)], out)
    assert sum(line.startswith("OK   model ") for line in state) == 3, state
    assert any(line.startswith("FAIL sae gemma-scope-2-1b") and "partly downloaded" in line
               for line in state), state

    # 2. the same command again downloads only what is missing, and cleans up the partial file
    hub.clear()
    res = repro(["fetch", "--study", str(study)], env)
    said += [res.stdout, res.stderr]
    assert res.returncode == 0, res.stderr[-3000:]
    served = [e.file for e in hub.content_requests()]
    assert served.count(SAE_1) == 1 and not [e for e in hub.content_requests() if e.range
                                               and e.file == SAE_1]
    again = [f for f in served if f in ("model.safetensors", "config.json", "tokenizer.json")]
    assert again == [], again  # no model file twice
    assert "removed 10.5 MB an interrupted download left" in res.stdout
    assert not list(home.rglob("*.incomplete"))
    assert "original/consolidated.00.pth" not in served  # Meta's original/ folder is skipped
    # the token goes to the Hub's origin, never to the CDN the LFS downloads are sent to
    lfs = [e for e in hub.log if e.path.startswith("/_lfs/")]
    assert lfs and not [e for e in lfs if e.auth]
    assert [e for e in hub.log if "/resolve/" in e.path and e.auth]

    # 3. the doctor finds everything; on paper.toml itself only FineWeb's prefix is too short
    #    for its 16,384 x 1,024-token SAE stream (and there is no GPU here)
    assert all(line.startswith("OK") for line in doctor_lines(env, ["--study", str(study)], out))
    paper = doctor_lines(env, ["--profile", "paper"], out)
    failed = [line for line in paper if not line.startswith("OK")]
    device = [line for line in failed if line.startswith("FAIL device:")]
    assert len(device) == (0 if torch.cuda.is_available() else 1), paper
    assert [line.split(" (")[0] for line in failed if line not in device] == [
        "FAIL text HuggingFaceFW/fineweb sample-10BT train: stored prefix too short"], paper

    # 4. a second fetch asks the server nothing at all
    hub.clear()
    res = repro(["fetch", "--study", str(study)], env)
    said += [res.stdout, res.stderr]
    assert res.returncode == 0 and hub.log == [], [e.path for e in hub.log]
    assert res.stdout.count(": cached, ") == 5 and res.stdout.count("already stored") == 3

    # 5. offline: preflight, the tokens of every stream, prune and perplexity of a dense model,
    #    stopped where activations begin (REPRO_KILL_AT), with no request to the server
    offline = {**env, "HF_HUB_OFFLINE": "1", "REPRO_KILL_AT": "stage:*/activations:begin"}
    runs = ["gemma-3-1b/dense/0", "gemma-2-2b/dense/0", "llama-3.2-1b/dense/0"]
    res = repro(["all", "--study", str(study), "--device", "cpu", "--out", str(out), "--runs",
                 *runs], offline)
    said += [res.stdout, res.stderr]
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert hub.log == [] and "perplexity: done" in res.stderr
    _check_tokens(load_study(study), out, hub)

    # negative control: the stored FineWeb prefix removed, the offline preflight refuses
    stored = next((home / "repro-datasets").glob("HuggingFaceFW--fineweb*.parquet"))
    stored.rename(stored.with_suffix(".away"))
    res = repro(["all", "--study", str(study), "--device", "cpu", "--out", str(tmp_path / "o2"),
                 "--runs", runs[0]], offline)
    assert "text HuggingFaceFW/fineweb is not stored and HF_HUB_OFFLINE is set" in \
        one_error_line(res)
    stored.with_suffix(".away").rename(stored)

    # 6. offline too, sae-lens loads both SAEs from what fetch stored (RQ3's first step)
    res = subprocess.run([sys.executable, "-c", LOAD_SAES], env=offline, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    said += [res.stdout, res.stderr]
    assert res.returncode == 0 and hub.log == [], res.stderr[-3000:]
    assert res.stdout.split() == [
        "13", "96", "16384", *_served_w_enc(hub, "google/gemma-scope-2-1b-pt"),
        "12", "2304", "16384", *_served_w_enc(hub, "google/gemma-scope-2b-pt-res")]

    # the token is in no output and no file of the cache or the run
    said.append((tmp_path / "killed.log").read_text())
    assert not [s for s in said if SENTINEL in s]
    assert files_holding(home, SENTINEL) == [] and files_holding(out, SENTINEL) == []


LOAD_SAES = """
from repro.science.pretrained_saes import load_pretrained
from repro.study.reader import load_study, profile_path
for spec in load_study(profile_path("paper")).models.values():
    if spec.pretrained_sae is not None:
        sae = load_pretrained(spec.pretrained_sae, "cpu", spec.probe_layer)
        print(spec.probe_layer, sae.cfg.d_in, sae.cfg.d_sae, f"{float(sae.W_enc[0, 1]):.6f}")
"""
"""The paper's public SAEs through repro's loader (sae-lens's registry), at the paper's layers."""


def _served_w_enc(hub: HubServer, repo_id: str) -> list[str]:
    """W_enc[0, 1] of the SAE the study reads from this repository, as the server has it."""
    files = hub.repos[("models", repo_id)].files
    if repo_id.endswith("2-1b-pt"):
        value = float(load_tensors(files[SAE_1])["w_enc"][0, 1])
    else:
        npz = np.load(io.BytesIO(files["layer_12/width_16k/average_l0_82/params.npz"]))
        value = float(npz["W_enc"][0, 1])
    return [f"{value:.6f}"]


def _check_tokens(study, out: Path, hub: HubServer) -> None:
    """Every stream of every model was tokenized offline, from exactly the served text."""
    served = hub.repos[("datasets", "HuggingFaceFW/fineweb")].files
    docs = [t for name in sorted(served) if name.startswith("sample/10BT/")
            for t in pq.read_table(io.BytesIO(served[name])).column("text").to_pylist()]
    tokenizer = AutoTokenizer.from_pretrained(paper_hub.TINY / "gemma-3-tiny")
    for key in study.models:
        for name, (n, seq_len) in paper_hub.STREAM_SIZES.items():
            folder = out / "tokens" / key / name
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["result"]["shape"] == [n, seq_len], (key, name)
    for name in ("eval", "sae_train"):  # the packed FineWeb streams, rebuilt from the served rows
        ids = load_file(str(out / "tokens" / "gemma-3-1b" / name / "tokens.safetensors"))
        spec = getattr(study.data, name)
        assert ids["input_ids"].equal(data._packed(spec, iter(docs), tokenizer)), name


# ---- what a reviewer meets: one line each ----------------------------------------------------

GATED_SAE = '{ release = "gemma-scope-2-1b-pt-res", sae_id = "layer_13_width_16k_l0_medium" }'

CASES = {
    # id: (study options, token, faults, file-size limit, the error's words)
    "gated, no token (study says gated)": (
        {}, None, {}, None, r"is gated and HF_TOKEN is not set: accept its licence at "
                            r"https://huggingface.co/google/gemma-2-2b"),
    "gated, no token (401 from the Hub)": (
        {"gated": False}, None, {}, None, r"is gated and HF_TOKEN is not set"),
    "gated, token without access (403)": (
        {}, "hf_noaccessSENTINEL", {}, None, r"is gated and access was refused: accept"),
    "token the Hub rejects (401)": (
        {}, "hf_unknownSENTINEL", {}, None, r"HF_TOKEN was rejected \(401\) for google/gemma"),
    "repository that does not exist (404)": (
        {"source": "google/gemma-2-2b-typo"}, SENTINEL, {}, None,
        r"google/gemma-2-2b-typo was not found on the Hub; check the id"),
    "revision that does not exist (404)": (
        {"revision": "v9"}, SENTINEL, {}, None, r"google/gemma-2-2b has no revision 'v9'"),
    "connection dropped mid-file, every time": (
        {}, SENTINEL, {"drop": {"model.safetensors": [1_000_000, 100]}}, None,
        r"the connection to the Hub broke while downloading google/gemma-2-2b \(peer closed"),
    "file whose sha256 does not match": (
        {}, SENTINEL, {"corrupt": {"model.safetensors"}}, None,
        r"google/gemma-2-2b/model.safetensors arrived with sha256 [0-9a-f]{12}\.\.\., but the "
        r"Hub lists [0-9a-f]{12}\.\.\.; the file was removed"),
    "disk full during a model download": (
        {}, SENTINEL, {}, 1_000_000, r"the disk of .*/hf/hub filled up while fetching "
                                     r"google/gemma-2-2b \(\[Errno 27\]"),
    "disk full while storing text": (
        {"source": str(paper_hub.TINY / "gemma-2-tiny"), "hub_text": True}, SENTINEL, {},
        60_000, r"filled up while storing text allenai/c4 train"),
    "streamed parquet that is damaged": (
        {"source": str(paper_hub.TINY / "gemma-2-tiny"), "hub_text": True}, SENTINEL,
        {"corrupt": {"001_00000.parquet"}}, None,
        r"dataset HuggingFaceFW/fineweb \(sample-10BT, train\): reading it failed after "
        r"10,500 rows \(.*Parquet"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fetch_failure_is_one_line(case: str, hub: HubServer, tmp_path: Path) -> None:
    options, token, faults, fsize, words = CASES[case]
    hub.tokens["hf_noaccessSENTINEL"] = set()
    for kind, table in faults.items():
        setattr(hub.faults, kind, table)
    study = paper_hub.one_model_study(tmp_path, **options)
    home = tmp_path / "hf"
    res = repro(["fetch", "--study", str(study)], repro_env(hub, home, token), fsize=fsize)
    line = one_error_line(res)
    assert re.search(words, line), line
    assert "SENTINEL" not in res.stdout + res.stderr and files_holding(home, "SENTINEL") == []
    if "study says gated" in case:  # refused before asking the server anything
        assert [e.path for e in hub.log] == []
    if "sha256" in case:  # nothing damaged is kept: the next fetch downloads it again, whole
        hub.faults.corrupt.clear()
        again = repro(["fetch", "--study", str(study)], repro_env(hub, home, token))
        assert again.returncode == 0, again.stderr[-2000:]
        assert "0.0 MB to download" not in again.stdout and "4.1 MB to download" in again.stdout


def test_a_connection_dropped_once_is_resumed_with_a_range_request(hub: HubServer,
                                                                    tmp_path: Path) -> None:
    """huggingface_hub retries a transfer cut short from the bytes it has written (10 MiB
    blocks); the file that results is the Hub's, byte for byte (the sha256 check passes)."""
    hub.faults.drop[SAE_1] = [11_000_000, 1]
    study = paper_hub.one_model_study(tmp_path, source="google/gemma-3-1b-pt",
                                      architecture="Gemma3ForCausalLM", pretrained_sae=GATED_SAE)
    res = repro(["fetch", "--study", str(study)], repro_env(hub, tmp_path / "hf"))
    assert res.returncode == 0, res.stderr[-3000:]
    sae = [(e.status, e.range, e.sent) for e in hub.content_requests() if e.file == SAE_1]
    size = len(hub.repos[("models", "google/gemma-scope-2-1b-pt")].files[SAE_1])
    assert sae == [(200, "", 11_000_000), (206, f"bytes={BLOCK}-", size - BLOCK)]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("REPRO_HUB_PAPER_SIZE"),
                    reason="minutes of tokenizing: set REPRO_HUB_PAPER_SIZE=1 to run it")
def test_paper_profile_itself_is_fetched_and_the_doctor_finds_everything(repos: list,
                                                                         tmp_path: Path) -> None:
    """`repro fetch --profile paper` on paper.toml as it ships: FineWeb served large enough
    for its 16,384 x 1,024-token SAE stream after 20,000 skipped documents."""
    fineweb = paper_hub.fineweb_repo(long_docs=paper_hub.PAPER_LONG_DOCS)
    hub = paper_hub.serve([r for r in repos if r.repo_id != fineweb.repo_id] + [fineweb],
                          token=SENTINEL)
    try:
        env = repro_env(hub, tmp_path / "hf")
        res = repro(["fetch", "--profile", "paper"], env, timeout=3600)
        assert res.returncode == 0, res.stderr[-3000:]
        lines = doctor_lines(env, ["--profile", "paper"], tmp_path / "out")
    finally:
        hub.stop()
    failed = [line for line in lines if not line.startswith("OK")]
    assert failed == ([] if torch.cuda.is_available() else failed[:1]), lines
    assert all(line.startswith("FAIL device:") for line in failed), lines
