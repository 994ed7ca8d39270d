"""Output folders, run folders and the files verify, bless and report read, when they are not
what they should be (issue 26): each refusal is one line, exit code 2, no traceback and nothing
written, checked in this process. A run folder belongs to one study: another study's run is
refused, or moved aside whole with --replace-study (a subprocess, killed at its first stage).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from badinput import TINY, check_refused, files, run_in_process  # noqa: E402
from runfolder import make_run  # noqa: E402

PRUNE = ["--run", "gemma-3-tiny/wanda/50"]


def _study(tmp: Path) -> Path:
    study = tmp / "tiny.toml"
    study.write_text(TINY)
    return study


def _run_folder(out: Path, study_text: str = TINY) -> None:
    out.mkdir()
    (out / "study.toml").write_text(study_text)


def _piece(rel: str, kind: str):
    """A run folder of the tiny study with `rel` made a file, a folder or a link to `kind`."""
    def prepare(out: Path) -> Path:
        if rel == "study.toml":
            out.mkdir()
        else:
            _run_folder(out)
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            path.write_text("x")
        elif kind == "dir":
            path.mkdir()
        else:
            path.symlink_to(out.parent / kind, target_is_directory=True)
            (out.parent / kind).mkdir()
        return out
    return prepare


def _loop(out: Path) -> Path:
    out.symlink_to(out)
    return out


def _inside_a_file(out: Path) -> Path:
    out.write_text("x")
    return out / "run"


# (case, how the tmp folder is prepared (returns --out), what the one line must say)
OUT_CASES = [
    ("--out a file", lambda out: (out.write_text("x"), out)[1], "is a file; choose a folder"),
    ("--out a folder of someone's files", lambda out: (out.mkdir(), (out / "thesis.tex")
                                                       .write_text("x"), out)[2],
     "holds 1 entry and no study.toml: it is not a repro run folder"),
    ("--out inside a file", _inside_a_file, "cannot write to output folder"),
    ("--out a loop of symbolic links", _loop, "is a loop of symbolic links"),
    ("another study's run", lambda out: (_run_folder(out, TINY.replace("width = 512",
                                                                       "width = 256")), out)[1],
     "holds the run of study 'tiny', differing in [sae] "),
    ("study.toml a folder", _piece("study.toml", "dir"),
     "study.toml is a folder where repro writes a file"),
    ("tokens a file", _piece("tokens", "file"), "tokens is a file where repro keeps a folder"),
    ("a stage folder a file", _piece("variants/gemma-3-tiny/dense/0/prune", "file"),
     "variants/gemma-3-tiny/dense/0/prune is a file where repro keeps a folder"),
    ("a manifest a folder", _piece("runs/gemma-3-tiny/dense/0/sae/manifest.json", "dir"),
     "sae/manifest.json is a folder where repro writes a file"),
    ("the writers' registry a file", _piece(".writers", "file"),
     ".writers is a file where repro keeps a folder"),
    ("a stage's partial folder a file", _piece("tokens/gemma-3-tiny/.calibration.partial",
                                               "file"),
     ".calibration.partial is a file where repro keeps a folder"),
    ("a stage lock a folder", _piece("tokens/gemma-3-tiny/.eval.lock", "dir"),
     ".eval.lock is a folder where repro writes a file"),
    ("claims.json a folder", _piece("claims.json", "dir"),
     "claims.json is a folder where repro writes a file"),
    ("a symbolic link out of --out", _piece("variants", "elsewhere"),
     "variants is a symbolic link; repro writes only real folders and files inside --out"),
]


@pytest.mark.parametrize("case,prepare,message", OUT_CASES, ids=[c[0] for c in OUT_CASES])
@pytest.mark.parametrize("command", ["all", "prune"])
def test_bad_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str,
                           prepare, message: str, command: str) -> None:
    """`repro prune` has the same preflight as `repro all`."""
    study = _study(tmp_path)
    out = prepare(tmp_path / "out")
    before = files(tmp_path)
    code, err = run_in_process([command, "--study", str(study), "--out", str(out), "--quiet",
                                *(PRUNE if command == "prune" else [])], capsys)
    check_refused(code, err, message, tmp_path, before)


def test_the_home_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    before = files(tmp_path)
    code, err = run_in_process(["all", "--study", str(_study(tmp_path)), "--out", str(home)],
                               capsys)
    check_refused(code, err, "is your home folder", tmp_path, before | {Path("tiny.toml")})


def test_replace_study_moves_the_other_run_aside_whole(tmp_path: Path) -> None:
    """--replace-study: the other study's run, every byte of it, beside --out; a new run in
    --out (stopped at its first stage by a planted kill)."""
    out = tmp_path / "out"
    _run_folder(out, TINY.replace("width = 512", "width = 256"))
    (out / "runs" / "x" / "sae").mkdir(parents=True)
    (out / "runs" / "x" / "sae" / "sae_weights.safetensors").write_bytes(b"finished work")
    old = {p: (out / p).read_bytes() for p in files(out) if (out / p).is_file()}
    res = subprocess.run(
        [sys.executable, "-m", "repro", "all", "--study", str(_study(tmp_path)), "--out",
         str(out), "--replace-study"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "REPRO_KILL_AT": "stage:*:begin"})
    assert res.returncode == -9, res.stderr[-2000:]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("out.replaced-")]
    assert len(aside) == 1 and "moved the run of study 'tiny'" in res.stderr
    assert {p: (aside[0] / p).read_bytes() for p in files(aside[0])
            if (aside[0] / p).is_file()} == old
    assert (out / "study.toml").read_text() == TINY


def test_replace_study_waits_for_a_live_writer(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    _run_folder(out, TINY.replace("k = 16", "k = 8"))
    (out / ".writers").mkdir()
    entry = out / ".writers" / "host-1.json"
    entry.write_text(json.dumps({"pid": 1, "host": "host", "command": "repro all"}))
    before = files(tmp_path) | {Path("tiny.toml")}
    with open(entry, "rb") as held:  # another process's flock, as a live writer holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 pass_fds=(held.fileno(),))
    try:
        code, err = run_in_process(["all", "--study", str(_study(tmp_path)), "--out", str(out),
                                    "--replace-study", "--quiet"], capsys)
    finally:
        child.kill()
        child.wait()
    check_refused(code, err, "is being written by another repro", tmp_path, before)


# (case, file in the run folder made by tests/runfolder.make_run, its content, commands)
SHAPES = [
    ("claims.json a list", "claims.json", "[]", ["verify", "report", "bless"],
     "claims.json: the top level: input should be a valid dictionary"),
    ("a claim a number", "claims.json", '{"C1": 5}', ["verify", "report", "bless"],
     "claims.json: C1: input should be a valid dictionary"),
    ("a claim's value text", "claims.json", '{"C1": {"value": "eleven"}}', ["bless"],
     "claims.json C1.value is 'eleven', not a finite number"),
    ("verification.json of another shape", "verification.json", '{"ok": "yes"}', ["report"],
     "verification.json: ok: input should be a valid boolean"),
    ("verdict counts missing", "verification.json",
     '{"ok": true, "counts": {"pass": 1}, "checks": []}', ["report"],
     "verification.json: counts.fail: field required"),
    ("captions a list", "figures/captions.json", "[]", ["report"],
     "captions.json: the top level: input should be a valid dictionary"),
    ("method controls partial", "method_controls/method_controls.json", '{"ok": true}',
     ["report"], "method_controls.json: line: field required"),
    ("a training curve of text", "runs/a/sae/curve.json", '{"points": [{"tokens": "many"}]}',
     ["report"], "curve.json: points.0.tokens: input should be a valid number"),
    ("the run's study name a path", "study.toml", '[study]\nname = "../../x"\n', ["verify"],
     "[study] name = '../../x' is not a plain name"),
    ("the run's threshold text", "study.toml",
     '[study]\nname = "tiny"\n[thresholds]\ncurve_flat_ev_gain = "x"\n', ["report"],
     "thresholds.curve_flat_ev_gain = 'x': text, not a number"),
    ("verification.md a folder", "verification.md/", "", ["verify"],
     "verification.md is a folder where repro writes a file"),
    ("report.html a folder", "report.html/", "", ["report"],
     "report.html is a folder where repro writes a file"),
]


@pytest.mark.parametrize("case,rel,text,commands,message", SHAPES, ids=[c[0] for c in SHAPES])
def test_run_files_of_the_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      case: str, rel: str, text: str, commands: list[str],
                                      message: str) -> None:
    run, expected = make_run(tmp_path)
    path = run / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if rel.endswith("/"):
        path.mkdir()
    else:
        path.write_text(text)
    capsys.readouterr()
    argv = {"verify": ["verify", str(run)] if rel == "study.toml" else
            ["verify", str(run), "--expected", str(expected)],
            "report": ["report", str(run)],
            "bless": ["bless", str(run), "--expected", str(expected), "--allow-dirty"]}
    for command in commands:
        before = files(tmp_path)
        code, err = run_in_process(argv[command], capsys)
        check_refused(code, err, message, tmp_path, before)


def test_report_and_verify_read_run_folders_only(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run, expected = make_run(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    for argv, message in (
            (["report", str(empty)], "is not a run folder: it has no study.toml"),
            (["verify", str(empty)], "is not a run folder: it has no study.toml"),
            (["verify", str(empty), "--expected", str(expected)], "with --expected, a folder"),
            (["bless", str(empty)], "is not a run folder"),
            (["report", str(run / "claims.json")], "is a file, not a run folder"),
            (["verify", str(run), "--expected", str(tmp_path)], "holds no expected tables")):
        before = files(tmp_path)
        code, err = run_in_process(argv, capsys)
        check_refused(code, err, message, tmp_path, before)
    bare = tmp_path / "bare"  # a copy of a run's tables alone: verify --expected still takes it
    shutil.copytree(run / "tables", bare / "tables")
    code, _ = run_in_process(["verify", str(bare), "--expected", str(expected)], capsys)
    result = json.loads((bare / "verification.json").read_text())
    tables = [c for c in result["checks"] if c["kind"] == "table"]
    assert code == 1 and len(tables) == 6 and all(c["verdict"] == "pass" for c in tables)
    assert "claims.json is missing" in (bare / "verification.md").read_text()  # none in a copy


def test_bless_checks_what_it_overwrites(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run, expected = make_run(tmp_path)
    (expected / "T3_survival.csv").unlink()
    (expected / "T3_survival.csv").mkdir()
    capsys.readouterr()
    before = files(tmp_path)
    code, err = run_in_process(["bless", str(run), "--expected", str(expected),
                                "--allow-dirty"], capsys)
    check_refused(code, err, "T3_survival.csv is a folder where repro writes a file", tmp_path,
                  before)


@pytest.mark.parametrize("args,message", [
    (["--repeats", "-1"], "--repeats = -1: below the allowed range; allowed: a whole number in"),
    (["--match-size", "0"], "--match-size = 0: below the allowed range"),
    (["--out", "{tmp}"], "holds 1 entry and no bench.json: it is not a bench folder"),
    (["--out", "/"], "--out / is the root of the file system"),
])
def test_bench_sizes_and_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                args: list[str], message: str) -> None:
    (tmp_path / "notes.txt").write_text("x")
    before = files(tmp_path)
    out = [] if "--out" in args else ["--out", str(tmp_path / "bench")]
    code, err = run_in_process(["bench", "--quick", "--only", "match",
                                *[a.format(tmp=tmp_path) for a in args], *out], capsys)
    check_refused(code, err, message, tmp_path, before)


def test_bless_across_takes_finished_runs_of_the_same_study(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """`--across OTHER_RUN`: one line and nothing written for a folder that is not a run, a run
    without its tables, or a run of another study."""
    run, expected = make_run(tmp_path / "a")
    other, _ = make_run(tmp_path / "b")
    (other / "tables" / "T5_transfer.csv").unlink()
    changed, _ = make_run(tmp_path / "c")
    (changed / "study.toml").write_text((changed / "study.toml").read_text() + "\n# edited\n")
    capsys.readouterr()
    bless = ["bless", str(run), "--expected", str(expected), "--allow-dirty", "--across"]
    for target, message in ((tmp_path / "none", "does not exist"),
                            (other, "tables/T5_transfer.csv is missing; finish that run first"),
                            (changed, "its study.toml differs from")):
        before = files(tmp_path)
        code, err = run_in_process([*bless, str(target)], capsys)
        check_refused(code, err, message, tmp_path, before)
