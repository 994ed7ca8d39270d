"""Everything `repro all` and `repro prune` check before they write: `repro all --check` runs
these checks alone and stops.

In the order a user fixes them: the launcher's and repro's environment variables, the study
file (every value against its rule, repro.study.rules), the output folder (repro.outputs.
runfolder: not the root or the home folder, a run of this study or none, every path the run
writes of its kind and inside it), the expected outputs the run will be verified against
(`check_expected`: a typo in --expected must not end in a clean "unverified"), and every model
(repro.inputs.doctor.preflight: config, weights, tokenizer, memory). The first problem is one
ReproError line; nothing is written and no progress line is printed before it.
`check_verify`, `check_bless` and `check_report` do the same for the commands that read a run.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from repro.errors import ReproError
from repro.outputs import runfolder
from repro.outputs.expected import (
    CLAIMS,
    EXPECTED_ROOT,
    TOLERANCES,
    expected_dir,
    load_claims,
    load_tolerances,
    tolerances_path,
)
from repro.outputs.report_curves import FIGURE
from repro.outputs.tables import run_table_names
from repro.outputs.verify import read_table
from repro.stages import layout
from repro.stages.context import Context
from repro.study.spec import Run


@dataclass(frozen=True)
class Ready:
    """What the checks found: the run can start, and whether a run of another study is in
    the way (moved aside by `take_over` when --replace-study allows it)."""

    ctx: Context
    runs: tuple[Run, ...]
    other_study: str | None

    def line(self) -> str:
        """What `--check` prints when every check passed."""
        resumes = (self.ctx.out / runfolder.STUDY_FILE).is_file() and not self.other_study
        aside = "; the other study's run there would be moved aside" if self.other_study else ""
        return (f"check: the {self.ctx.study.name} study can run: {len(self.runs)} runs; "
                f"{self.ctx.out} {'resumes the run' if resumes else 'starts a new run'}{aside}; "
                "nothing written")


def check_environment() -> None:
    """The environment variables repro parses, checked before the study is read."""
    from repro.science.numerics import mode
    from repro.stages.launch import check_launch_env

    check_launch_env()
    mode()  # REPRO_NUMERICS


def check_run(ctx: Context, runs: tuple[Run, ...], profile_arg: str, *, replace: bool,
              verify: bool, extra_dirs: tuple[Path, ...] = ()) -> Ready:
    """The output folder, the expected outputs (when the run ends in a verdict) and the
    models; ctx comes from the checked study and environment."""
    from repro.inputs.doctor import preflight

    head = tomllib.loads(ctx.study.path.read_text(encoding="utf-8")).get("study", {})
    if "name" not in head:  # the run folder's verdict is keyed by the name its copy holds
        raise ReproError(f"study file {ctx.study.path}: [study] has no name; add "
                         f"name = \"{ctx.study.name}\" (it picks the expected outputs)")
    runfolder.guard_out(ctx.out)
    other = runfolder.other_study(ctx.out, ctx.study)
    if other is not None and not replace:
        runfolder.refuse_other_study(ctx.out, ctx.study, other)
    if other is None:  # (another study's run is moved aside whole, whatever it holds)
        runfolder.check_layout(ctx.out, runfolder.planned(ctx, extra_dirs=extra_dirs))
    if verify:
        check_expected(ctx.study.name, ctx.expected)
    preflight(ctx.study, profile_arg)
    return Ready(ctx, runs, other)


def take_over(ready: Ready) -> str | None:
    """Move another study's run out of the way (--replace-study); the line that says where."""
    if ready.other_study is None:
        return None
    aside = runfolder.move_aside(ready.ctx.out)
    return f"moved the run of {ready.other_study} aside to {aside}"


def check_verify(run_dir: Path, expected: Path | None, tolerances: Path | None) -> None:
    """`repro verify`: a run folder (or, with --expected, a copy of its tables/), the files
    it writes are files, and a given --expected folder read now: a mistyped one is refused,
    not verified against nothing."""
    runfolder.require_run(run_dir, tables_ok=expected is not None)
    runfolder.check_files(run_dir, ("verification.json", "verification.md"))
    if expected is not None:
        exp_dir, profile = expected_dir(run_dir, expected)
        check_expected(profile, exp_dir, tolerances)


def check_bless(run_dir: Path, expected: Path | None, across: Sequence[Path] = ()) -> None:
    """`repro bless`: a run folder, and the files it writes into the expected folder (the
    run's tables, the stale ones it removes, PROVENANCE.json, claims.toml, tolerances.toml)
    files or absent, so that it does not stop halfway; each --across run a run folder of the
    same study with every table."""
    from repro.outputs.bless import PROVENANCE

    runfolder.require_run(run_dir, tables_ok=expected is not None)
    study = run_dir / layout.STUDY_FILE
    text = study.read_bytes() if study.is_file() else b""
    for other in across:
        runfolder.require_run(other)  # so other/STUDY_FILE is a file
        missing = [n for n in run_table_names(run_dir / layout.TABLES_DIR)
                   if not (other / layout.TABLES_DIR / f"{n}.csv").is_file()]
        if missing:
            raise ReproError(f"--across {other}: tables/{missing[0]}.csv is missing; finish "
                             f"that run first (repro all ... --out {other})")
        if (other / layout.STUDY_FILE).read_bytes() != text:
            raise ReproError(f"--across {other}: its study.toml differs from {run_dir}'s; "
                             "compare runs of one study")
    exp_dir = expected_dir(run_dir, expected)[0]
    tables = [f"{name}.csv" for name in run_table_names(run_dir / layout.TABLES_DIR)]
    stale = [p.name for p in exp_dir.glob("*.csv")]
    runfolder.check_files(exp_dir, [*tables, *stale, PROVENANCE, CLAIMS, TOLERANCES])


def check_report(run_dir: Path) -> None:
    """`repro report`: a run folder, whose report files are files or absent."""
    runfolder.require_run(run_dir)
    runfolder.check_files(run_dir, ("report.md", "report.html", FIGURE))


def check_expected(profile: str, given: Path | None,
                   tolerances: Path | None = None) -> Path | None:
    """The expected-outputs folder a run will be verified against, read now: every table
    parses, and its tolerances and claims (repro.outputs.expected). A given --expected must be
    a folder holding tables or claims: a mistyped path would otherwise turn the verdict into
    `unverified` at the end of the run. Returns None when the study has none yet (its first
    run ends unverified, to be blessed)."""
    if given is not None:
        if not given.is_dir():
            raise ReproError(f"--expected {given} is not a folder; check the path (a mistyped "
                             "one would leave the run unverified), or leave --expected out")
        if not any(given.glob("*.csv")) and not (given / "claims.toml").is_file():
            raise ReproError(f"--expected {given} holds no expected tables (*.csv) and no "
                             "claims.toml; check the path, or bless a run into it first "
                             f"(`repro bless RUN_DIR --expected {given}`)")
    exp_dir = given if given is not None else EXPECTED_ROOT / profile
    if not exp_dir.is_dir():
        return None
    tol_path = tolerances or tolerances_path(exp_dir)
    tols = load_tolerances(tol_path, profile)
    tables = sorted(p for p in exp_dir.glob("*.csv"))
    for path in tables:
        read_table(path)
    known = {p.stem for p in tables} | {"claims"}
    stray = sorted(set(tols.by_table) - known)
    if stray:
        raise ReproError(f"{tol_path}: [{profile}.{stray[0]}] names no expected table (there "
                         f"are {', '.join(sorted(known - {'claims'}))}); fix or remove it")
    load_claims(exp_dir)
    return exp_dir
