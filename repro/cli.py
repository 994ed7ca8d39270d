"""The `repro` command: `repro --help` lists the commands, `repro all --profile tiny` runs one.

Heavy libraries (torch, transformers, sae-lens) are imported inside the command handlers,
so `repro --help` and `repro list` answer at once. A ReproError becomes one line on stderr
and exit code 2; Ctrl-C and SIGTERM stop with a line saying how to resume.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from repro.cli_parser import DEFAULT_PROFILE, build_parser
from repro.errors import ReproError, from_os_error, one_line


def _study(args: argparse.Namespace):
    from repro.study.reader import load_study, profile_path

    return load_study(Path(args.study) if args.study
                      else profile_path(args.profile or DEFAULT_PROFILE))


def _profile_arg(args: argparse.Namespace) -> str:
    """How the command named its study, for the fixes that error messages suggest."""
    return f"--study {args.study}" if args.study else \
        f"--profile {args.profile or DEFAULT_PROFILE}"


def _context(args: argparse.Namespace, study):
    from repro.inputs.models import resolve_device
    from repro.outputs.runfolder import guard_out
    from repro.science.numerics import MODE_VARIABLE, pin_cpu
    from repro.stages.context import Context
    from repro.stages.launch import launched_device

    if not str(args.out).strip():  # Path("") would be the current folder
        raise ReproError("--out is empty; name the output folder, e.g. --out runs/mine")
    guard_out(Path(args.out))
    device = resolve_device(study.device, launched_device(args.device, study.device))
    if device.type == "cpu":
        # the study's arithmetic unless the environment names one (a cross-check of a bless)
        os.environ.setdefault(MODE_VARIABLE, study.numerics)
        pin_cpu()  # before the first torch kernel: ATen reads its capability once
    expected = getattr(args, "expected", None)
    return Context(study=study, out=Path(args.out), device=device, force=args.force,
                   quiet=args.quiet, expected=Path(expected) if expected else None)


def _ready(args: argparse.Namespace, runs, study, *, verify: bool, extra=()):
    """Every check of repro.outputs.preflight, in one place for `all` and `prune`; --check
    stops after them."""
    from repro.outputs.preflight import check_run

    ctx = _context(args, study)
    ready = check_run(ctx, runs, _profile_arg(args), replace=args.replace_study, verify=verify,
                      extra_dirs=tuple(ctx.out / d for d in extra))
    if args.check:
        print(ready.line())
    return ready


def cmd_list(args: argparse.Namespace) -> int:
    from repro.study.reader import select_runs

    study = _study(args)
    runs = select_runs(study, args.runs, args.shard)
    if not args.study and not args.profile:  # say what a bare `repro list` lists
        print(f"profile {DEFAULT_PROFILE} (the default; --profile small, --profile paper or "
              "--study FILE list another)")
    rows = [("run id", "model", "method", "pattern", "sparsity", "seed", "role")]
    for r in runs:
        role = (
            "control seed (RQ2)" if r.is_control
            else "extra seed (RQ1)" if r.is_extra_seed
            else "dense reference" if r.variant.is_dense
            else "condition"
        ) + (f", replicate {r.replicate}" if r.replicate else "")
        rows.append(
            (
                r.id,
                r.variant.model,
                r.variant.method,
                r.variant.pattern,
                f"{r.variant.sparsity:.0%}",
                str(r.seed),
                role,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    base = [r for r in runs if r.replicate == 0]
    controls = sum(r.is_control for r in base)
    extra = f" + {controls} control-seed SAEs" if controls else ""
    reps = study.verdict.replicates
    again = (f", each again in {reps - 1} more replicate(s): {len(runs)} SAEs in all"
             if reps > 1 else "")
    print(
        f"{len(base) - controls} runs{extra} ({len(study.conditions)} conditions, "
        f"{len(study.models)} models){again} in {study.path}"
    )
    return 0


def cmd_all(args: argparse.Namespace) -> int:
    from repro.outputs.finish import finish
    from repro.outputs.preflight import check_environment, take_over
    from repro.stages.launch import launched_shard
    from repro.stages.run import run_all
    from repro.stages.store import Status
    from repro.study.reader import select_runs

    check_environment()
    study = _study(args)
    runs = select_runs(study, args.runs, launched_shard(args.shard))
    ready = _ready(args, runs, study, verify=True)
    if args.check:
        return 0
    ctx = ready.ctx
    moved = take_over(ready)
    if moved:
        ctx.log(moved)
    ctx.log(f"study {study.name}: {len(runs)} runs on {ctx.device}, output in {ctx.out}")
    counts = run_all(ctx, runs, finish)
    if counts[Status.DONE] == 0:
        from repro.outputs.partial import is_partial

        partial = is_partial(ctx.out) is not None  # its PARTIAL lines said what is missing
        print(f"{'every stage of the selected runs' if partial else 'everything'} is already "
              f"done in {ctx.out} ({counts['skipped']} stages); use --force to redo")
    return counts["verify"] or 0


def cmd_prune(args: argparse.Namespace) -> int:
    from repro.files import write_text_if_changed
    from repro.outputs.preflight import check_environment, take_over
    from repro.stages import layout
    from repro.stages.context import ModelHolder, check_output_dir
    from repro.stages.pipeline import prune_stage, tokens_stage
    from repro.study.methods import METHODS

    check_environment()
    study = _study(args)
    run = study.run(args.run)
    ready = _ready(args, (run,), study, verify=False, extra=(f"pruned/{run.variant.id}",))
    if args.check:
        return 0
    ctx = ready.ctx
    moved = take_over(ready)
    if moved:
        ctx.log(moved)
    check_output_dir(ctx.out)
    # the folder is this study's from now on, as a `repro all` run folder is
    write_text_if_changed(ctx.out / layout.STUDY_FILE, study.path.read_text(encoding="utf-8"))
    holder = ModelHolder(ctx)
    spec = study.models[run.variant.model]
    if METHODS[run.variant.method].needs_calibration:
        tokens_stage(ctx, spec, "calibration", lambda: holder.tokenizer_for(spec))
    outcome = prune_stage(ctx, holder, run.variant)
    model = holder.variant_model(run.variant)
    export = ctx.out / "pruned" / run.variant.id
    model.save_pretrained(export)
    holder.tokenizer_for(spec).save_pretrained(export)
    print(f"{run.variant.id}: prune {outcome.status}; pruned model written to {export}")
    return 0


def cmd_build_tiny_assets(args: argparse.Namespace) -> int:
    from repro.outputs.runfolder import guard_out
    from repro.tiny.build import build_tiny_assets

    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "assets" / "tiny"
    guard_out(out, marker="SHA256SUMS", what="tiny-assets folder")
    summary = build_tiny_assets(out, quick=args.quick)
    print(f"tiny assets written to {out}: {summary}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from repro.outputs import partial
    from repro.outputs.preflight import check_verify
    from repro.outputs.verify import verify_run
    from repro.outputs.verify_text import summary

    run_dir = Path(args.run_dir)
    expected = Path(args.expected) if args.expected else None
    tolerances = Path(args.tolerances) if args.tolerances else None
    check_verify(run_dir, expected, tolerances)
    study = partial.is_partial(run_dir) if run_dir.is_dir() else None
    if study is not None:  # runs or study stages missing: compare what finished
        result = partial.verify_partial(run_dir, study, expected, tolerances=tolerances)
        print(partial.summary(result))
        return result["exit_code"]
    result = verify_run(run_dir, expected, tolerances)
    print(summary(result))
    return 0 if result["ok"] else 1


def cmd_bless(args: argparse.Namespace) -> int:
    from repro.outputs.bless import bless_run
    from repro.outputs.preflight import check_bless

    across = [Path(p) for p in args.across]
    check_bless(Path(args.run_dir), Path(args.expected) if args.expected else None, across)
    done = bless_run(Path(args.run_dir), Path(args.expected) if args.expected else None,
                     allow_dirty=args.allow_dirty, across=across)
    print(
        f"blessed {len(done['tables'])} tables into {done['expected_dir']}"
        + (f"; removed stale {', '.join(done['removed'])}" if done["removed"] else "")
    )
    if done["tolerances_created"]:
        print(
            f"wrote default round-off tolerances to {done['tolerances']}: replace them "
            "with measured spread"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from repro.outputs import partial
    from repro.outputs.completeness import describe_missing
    from repro.outputs.preflight import check_report
    from repro.outputs.report import gather, write

    run_dir = Path(args.run_dir)
    check_report(run_dir)
    study = partial.is_partial(run_dir) if run_dir.is_dir() else None
    # an unfinished run: the same comparison and words as `repro verify` and `repro all`
    result = partial.verify_partial(run_dir, study) if study is not None else None
    rep = gather(run_dir)
    md, page = write(rep)
    print(f"report written to {md} and {page}"
          + (f"; the run is {describe_missing(rep.missing)}" if rep.missing and not result
             else ""))
    if result is not None:
        print(partial.summary(result))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from repro.inputs.fetch import fetch
    from repro.inputs.hubcache import hf_home

    study = _study(args)
    sizes = fetch(study)
    hub = sizes["models"] + sizes["saes"] + sizes["text"] + sizes["packaged"]
    where = f"; {hub / 1e9:.2f} GB in {hf_home()}" if hub else ""
    print(
        f"fetch: everything the {study.name} study reads is on disk{where}; `repro all` now "
        "runs offline (HF_HUB_OFFLINE=1)"
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from repro.inputs.doctor import run_checks
    from repro.outputs.shipped import expected_checks

    study = _study(args)
    checks = run_checks(study, Path(args.out), _profile_arg(args)) + expected_checks(study)
    for check in checks:
        print(check.line())
    failed = sum(not c.ok for c in checks)
    print(f"doctor: {len(checks) - failed} OK, {failed} FAIL")
    return 0 if failed == 0 else 2


def cmd_bench(args: argparse.Namespace) -> int:
    from repro.bench.report import markdown
    from repro.bench.run import PARTS, check_sizes, run_bench
    from repro.inputs.models import resolve_device
    from repro.outputs.runfolder import guard_out
    from repro.science.numerics import mode, pin_cpu

    mode()
    check_sizes(args.repeats, args.match_size)
    guard_out(Path(args.out), marker="bench.json", what="bench folder")
    device = resolve_device("cpu", args.device)
    if device.type == "cpu":
        pin_cpu()  # the bench times what a pinned run computes
    only = tuple(args.only.split(",")) if args.only else PARTS
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        raise ReproError(f"--only {','.join(unknown)}: choose from {','.join(PARTS)}")
    record = run_bench(device, Path(args.out),
                       repeats=args.repeats, quick=args.quick, only=only,
                       explicit=bool(args.only),
                       match_size=args.match_size,
                       estimate_profile=args.profile if args.estimate else None)
    print(markdown(record))
    print(f"written to {Path(args.out) / 'bench.json'} and {Path(args.out) / 'bench.md'}")
    return 0


HANDLERS = {"list": cmd_list, "all": cmd_all, "prune": cmd_prune,
            "build-tiny-assets": cmd_build_tiny_assets, "verify": cmd_verify, "bless": cmd_bless,
            "report": cmd_report, "fetch": cmd_fetch, "bench": cmd_bench, "doctor": cmd_doctor}
"""Each command's handler, by the name `repro` takes it under."""


def _on_term(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _share_cores_politely() -> None:
    """Every CPU run sleeps while its threads wait instead of spinning
    (repro.science.numerics.share_cores_politely): spinning threads of one run, or of
    several launched processes, burn each other's and other jobs' time slices on a shared
    machine (two launched tiny runs on 2 cores took over 30 minutes, against 4 for one). It
    changes no arithmetic. OpenMP reads it once, when torch loads it, so it is set here,
    before anything imports torch."""
    from repro.science.numerics import share_cores_politely

    share_cores_politely()


PROGRESS_BARS_OFF = {
    "TQDM_DISABLE": "1",  # tqdm reads TQDM_* defaults when imported: sae-lens, GGUF conversion
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub; transformers' own bars follow it
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
"""Every library's switch for its progress bars."""


def _progress_bars_on_terminals_only() -> None:
    """A progress bar redraws one line with carriage returns: on a terminal it shows progress,
    in a log file or a CI page it is hundreds of updates glued into one line. When stderr is
    not a terminal every library's bars are off (set before any of them is imported, as each
    reads its switch then); the stage and file lines `repro` prints say what finished. A
    value the environment already has wins."""
    if sys.stderr.isatty():
        return
    for name, value in PROGRESS_BARS_OFF.items():
        os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    _share_cores_politely()
    _progress_bars_on_terminals_only()
    args = build_parser(HANDLERS).parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    try:
        _share_cores_politely()
        return args.fn(args)
    except ReproError as exc:
        print(one_line(f"repro: error: {exc}"), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        refusal = from_os_error(exc)
        if refusal is None:
            raise
        print(one_line(f"repro: error: {refusal}"), file=sys.stderr)
        return refusal.exit_code
    except KeyboardInterrupt:
        print(
            "repro: interrupted; completed stages are kept, run the same command again to resume",
            file=sys.stderr,
        )
        return 130
