"""What a run folder is, and what `repro all` and `repro prune` may do to one, checked before
anything is written.

A run folder (the --out of `repro all` or `repro prune`) belongs to one study: its study.toml
is a copy of the study file that made it, written before the first stage. So:
- `--out` is a new or empty folder, or a run folder (it resumes there). The root of the file
  system, the home folder, a file, and a folder that holds files but no study.toml are
  refused (`guard_out`): a typo must not scatter a run's folders among someone's files.
- A run folder of another study (other content, not only another file name) is refused
  (`other_study`), unless `--replace-study`, which moves that run aside, whole, to
  OUT.replaced-<time> beside it (`move_aside`): nothing is ever deleted.
- Every path the run will write (`planned`: built by the same functions the stages use) must
  lie under --out, and be absent or of its kind, a folder where a folder belongs and a file
  where a file belongs, and no symbolic link (`check_layout`): what the run writes stays in
  --out, and no stage meets a file where it makes a folder halfway through.
`repro report` and `repro verify` read only run folders (`require_run`).
"""

from __future__ import annotations

import os
import stat
import time
import tomllib
from pathlib import Path

from repro.errors import ReproError
from repro.outputs.completeness import STUDY_STAGES
from repro.outputs.report_curves import FIGURE
from repro.stages import layout
from repro.stages.context import Context
from repro.stages.layout import STUDY_FILE
from repro.stages.locks import WRITERS, live_writers
from repro.stages.pipeline import VARIANT_STAGES
from repro.stages.run_stages import RUN_STAGES, run_dir
from repro.stages.store import MANIFEST
from repro.study.spec import Run, Study

TOP_FILES = (STUDY_FILE, layout.CLAIMS_JSON, "verification.json", "verification.md", "report.md",
             "report.html", FIGURE)
"""The files `repro all` writes at the top of a run folder."""
STUDY_LEVEL = (*STUDY_STAGES, layout.METHOD_CONTROLS_DIR)
"""The study-level stage folders (repro.outputs.finish)."""
STARTING = (WRITERS, ".write-test-")
"""What a run that was stopped before it wrote study.toml leaves (repro.stages.run.run_all)."""


def guard_out(out: Path, marker: str = STUDY_FILE, what: str = "repro run folder") -> None:
    """--out may be new, empty, or a run folder (a folder holding `marker`); refuse anything
    else in one line."""
    if not str(out).strip():
        raise ReproError("--out is empty; name the output folder, e.g. --out runs/mine")
    try:
        resolved = out.resolve()
    except (OSError, RuntimeError):  # a loop of symbolic links
        raise ReproError(f"--out {out} is a loop of symbolic links; choose another --out"
                         ) from None
    if resolved == Path(resolved.anchor):
        raise ReproError(f"--out {out} is the root of the file system; name a folder of its "
                         "own for the run, e.g. --out runs/mine")
    if resolved == Path.home().resolve():
        raise ReproError(f"--out {out} is your home folder; name a folder of its own for the "
                         "run, e.g. --out ~/runs/mine")
    if out.exists() and not out.is_dir():
        raise ReproError(f"--out {out} is a file; choose a folder (new or empty) for the run")
    if out.is_dir():
        try:
            entries = os.listdir(out)
        except OSError as exc:
            raise ReproError(f"--out {out} cannot be read ({exc.strerror}); choose another "
                             "--out") from None
        if entries and marker not in entries and not all(e.startswith(STARTING)
                                                          for e in entries):
            n = len(entries)
            raise ReproError(f"--out {out} holds {n} entr{'y' if n == 1 else 'ies'} and no "
                             f"{marker}: it is not a {what}; choose a new or empty folder")
    existing = next(p for p in (resolved, *resolved.parents) if p.exists())
    if not existing.is_dir():
        raise ReproError(f"cannot write to output folder {out}: {existing} is a file, not a "
                         "folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ReproError(f"cannot write to output folder {out} ({existing} is not writable); "
                         "choose another --out")


def other_study(out: Path, study: Study) -> str | None:
    """How the run folder's study differs from `study`, or None when it is the same study
    (same TOML content, whatever the file's name) or there is no run there yet."""
    stored = out / STUDY_FILE
    if not stored.is_file():
        return None
    mine = tomllib.loads(study.path.read_text(encoding="utf-8"))
    try:
        theirs = tomllib.loads(stored.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return f"its {STUDY_FILE} cannot be read"
    if theirs == mine:
        return None
    name = theirs.get("study", {}).get("name") if isinstance(theirs.get("study"), dict) else None
    changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    return (f"study {name!r}" if name else "another study") + \
        f", differing in [{'], ['.join(changed)}]"


def refuse_other_study(out: Path, study: Study, why: str) -> None:
    raise ReproError(f"{out} holds the run of {why} ({out / STUDY_FILE} is not {study.path}); "
                     "use another --out, or add --replace-study to move that run aside to "
                     f"{out.name}.replaced-<time> beside it (nothing is deleted)")


def move_aside(out: Path) -> Path:
    """Move a run folder, whole, to OUT.replaced-<UTC time> beside it; return where."""
    live = live_writers(out)
    if live:
        raise ReproError(f"{out} is being written by another repro ({live[0]}); wait for it or "
                         "stop it before replacing its study")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = out.with_name(f"{out.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
    try:
        out.rename(aside)
    except OSError as exc:
        raise ReproError(f"cannot move {out} aside to {aside} ({exc.strerror}); move it "
                         "yourself, or use another --out") from None
    return aside


def planned(ctx: Context, runs: tuple[Run, ...] | None = None,
            extra_dirs: tuple[Path, ...] = ()) -> list[tuple[Path, str]]:
    """Every folder ('dir') and file ('file') a run of `ctx.study` writes under ctx.out, from
    the functions the stages build their paths with: each stage folder with its manifest and
    the `.NAME.partial` / `.NAME.old` folders and `.NAME.lock` file the store keeps beside it."""
    study, out = ctx.study, ctx.out
    runs = study.runs if runs is None else runs
    stages = [ctx.tokens_dir(m, s) for m in study.models for s in study.data.streams]
    stages += [ctx.variant_dir(v, name) for v in dict.fromkeys(r.variant for r in runs)
               for name, _ in VARIANT_STAGES]
    stages += [run_dir(ctx, r, name) for r in runs for name, _ in RUN_STAGES
               if name == "sae" or r.is_evaluated]
    stages += [out / name for name in STUDY_LEVEL]
    items = [(out / WRITERS, "dir"), (out / WRITERS / ".registry", "file")]
    items += [(out / name, "file") for name in TOP_FILES]
    items += [(d, "dir") for d in extra_dirs]
    for folder in stages:
        items += [(folder, "dir"), (folder / MANIFEST, "file"),
                  (folder.with_name(f".{folder.name}.partial"), "dir"),
                  (folder.with_name(f".{folder.name}.old"), "dir"),
                  (folder.with_name(f".{folder.name}.lock"), "file")]
    return items


def check_layout(out: Path, items: list[tuple[Path, str]]) -> None:
    """Each planned path lies under `out` and is absent or of its kind, with real folders
    (no symbolic links) above it up to `out`."""
    seen: set[Path] = set()
    for path, kind in items:
        rel = path.relative_to(out)  # a path not under out is a bug: let it raise
        if ".." in rel.parts or not rel.parts:
            raise ReproError(f"{path} is not inside --out {out}; the study's names must not "
                             "climb out of it")
        current = out
        for i, part in enumerate(rel.parts):
            current = current / part
            if current in seen:
                continue
            want = kind if i == len(rel.parts) - 1 else "dir"
            if not _of_kind(current, want):
                break  # absent: nothing below it exists either
            seen.add(current)


def _of_kind(path: Path, want: str) -> bool:
    """True when `path` exists as a `want`; False when absent; a refusal otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ReproError(f"{path} cannot be read ({exc.strerror}); move it away or choose "
                         "another --out") from None
    if stat.S_ISLNK(mode):
        raise ReproError(f"{path} is a symbolic link; repro writes only real folders and "
                         "files inside --out: replace it with a folder, or choose another --out")
    if want == "dir" and not stat.S_ISDIR(mode):
        raise ReproError(f"{path} is a file where repro keeps a folder; move it away (or "
                         "choose another --out)")
    if want == "file" and not stat.S_ISREG(mode):
        raise ReproError(f"{path} is a folder where repro writes a file; move it away (or "
                         "choose another --out)")
    return True


def check_files(folder: Path, names: list[str] | tuple[str, ...]) -> None:
    """The files a command is about to write into `folder` are files or absent, so that it
    does not stop after writing the first of them."""
    check_layout(folder, [(folder / name, "file") for name in names])


def require_run(run_dir: Path, tables_ok: bool = False) -> None:
    """`repro report` and `repro verify` read run folders only; `repro verify --expected` also
    takes a bare copy of a run's tables/ (`tables_ok`)."""
    if not run_dir.exists():
        raise ReproError(f"run folder {run_dir} does not exist")
    if not run_dir.is_dir():
        raise ReproError(f"{run_dir} is a file, not a run folder; give the --out of `repro all`")
    if (run_dir / STUDY_FILE).is_file() or (tables_ok and (run_dir / layout.TABLES_DIR).is_dir()):
        return
    also = " (or, with --expected, a folder holding a run's tables/)" if tables_ok else ""
    raise ReproError(f"{run_dir} is not a run folder: it has no {STUDY_FILE}; give the --out "
                     f"of `repro all`{also}")
