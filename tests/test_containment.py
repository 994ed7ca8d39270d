"""No study can address anything outside --out (issue 26).

Hypothesis names the model, the study and the four token streams' splits with hostile text
(`..`, `/`, empty, hidden, NUL, newlines, 70 characters...) and with names of the pattern
(repro.study.rules.NAME). Each study goes through `repro all`'s preflight (`--check`): a name
that is not of the pattern is refused and nothing is written anywhere in the sandbox; a study
that passes then runs for real up to the end of its first stage (the token streams, every
stage after them replaced by nothing), and every path created in the sandbox must lie under
--out, as must every path repro.outputs.runfolder.planned says the whole run writes (the
stages' own path builders). The sandbox is a fresh folder four levels above --out, so a name
that climbed out would land in it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.outputs.runfolder import planned
from repro.stages.context import Context
from repro.study.reader import load_study
from repro.study.rules import NAME

sys.path.insert(0, str(Path(__file__).parent))
from badinput import ASSETS  # noqa: E402
from hostile import assert_promise, files, names, run_cli  # noqa: E402

STREAMS = ("calibration", "sae_train", "eval", "perplexity")


def _study(key: str, name: str, splits: list[str]) -> str:
    """The smallest study: the tiny Llama, one condition, streams of 4 x 16 tokens."""
    streams = "".join(
        f'[data.{s}]\nsource = {{ kind = "tiny", split = {json.dumps(split)} }}\n'
        f'sampling = "{"windows" if s == "calibration" else "packed"}"\n'
        "n_sequences = 4\nseq_len = 16\n\n" for s, split in zip(STREAMS, splits, strict=True))
    return (f"[study]\nname = {json.dumps(name)}\ndevice = \"cpu\"\n\n"
            f"[models.{json.dumps(key)}]\nsource = \"{ASSETS}/models/llama-tiny\"\n"
            'architecture = "LlamaForCausalLM"\nn_layers = 6\nprobe_layer = 3\n\n'
            f"[[conditions]]\nmodel = {json.dumps(key)}\nmethods = [\"magnitude\"]\n"
            "sparsities = [0.5]\n\n[sae]\nwidth = 64\nk = 4\nlr = 1e-3\nbatch_tokens = 32\n\n"
            + streams)


good = st.from_regex(NAME, fullmatch=True)


def _first_stage_only():
    """run_all with no stage after the token streams, and no study-level end."""
    return mock.patch.multiple("repro.stages.run", VARIANT_STAGES=(), RUN_STAGES=())


def _contained(key: str, name: str, splits: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        out = sandbox / "a" / "b" / "c" / "out"
        study = sandbox / "study.toml"
        study.write_text(_study(key, name, splits))
        before = files(sandbox)
        code, stdout, err = run_cli(["all", "--study", str(study), "--out", str(out), "--check"])
        assert_promise(code, stdout, err)
        assert files(sandbox) == before
        names_ok = all(NAME.fullmatch(n) for n in (key, name, *splits))
        assert (code == 0) == names_ok, err
        if code != 0:
            return
        ctx = Context(study=load_study(study), out=out, device=torch.device("cpu"))
        assert all(p.resolve().is_relative_to(out.resolve()) for p, _ in planned(ctx))
        with _first_stage_only(), mock.patch("repro.outputs.finish.finish",
                                             lambda ctx, report: None):
            code, stdout, err = run_cli(["all", "--study", str(study), "--out", str(out),
                                         "--quiet"])
        assert code == 0, err
        created = files(sandbox) - before
        outside = sorted(p for p in created
                         if not (sandbox / p).resolve().is_relative_to(out.resolve())
                         and not out.resolve().is_relative_to((sandbox / p).resolve()))
        assert not outside, outside
        made = {p.parent for p in out.rglob("tokens.safetensors")}
        assert made == {out / "tokens" / key / s for s in STREAMS}


SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=100, **SETTINGS)
@given(field=st.integers(0, 5), bad=names.filter(lambda n: not NAME.fullmatch(n)))
def test_a_hostile_name_is_refused_and_writes_nothing(field: int, bad: str) -> None:
    """Any of the six names (model key, study name, four splits) made hostile."""
    parts = ["llama-tiny", "tiny", *STREAMS]
    parts[field] = bad
    _contained(parts[0], parts[1], parts[2:])


@settings(max_examples=20, **SETTINGS)
@given(key=good, name=good, splits=st.lists(good, min_size=4, max_size=4))
def test_names_of_the_pattern_write_inside_out_only(key: str, name: str,
                                                    splits: list[str]) -> None:
    """Preflight passes and the first stage writes every token stream, all under --out."""
    _contained(key, name, splits)


def test_names_at_the_edges_of_the_pattern() -> None:
    """The longest name, dots inside, and a name a shell would expand are each run or
    refused; the negative control: `..`-climbing names of every field are refused."""
    _contained("a" * 64, "x.y_z-1", ["calibration", "A..b", "9", "eval"])
    for bad in ("../../../escape", "", ".", "..", ".hidden", "a/b", "a" * 65, "$HOME", "a\nb"):
        _contained(bad, "tiny", list(STREAMS))
        _contained("llama-tiny", bad, list(STREAMS))
        _contained("llama-tiny", "tiny", [bad, *STREAMS[1:]])
