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

from repro.errors import ReproError


def _study(args: argparse.Namespace):
    from repro.study.reader import load_study, profile_path

    return load_study(Path(args.study) if args.study else profile_path(args.profile))


def _profile_arg(args: argparse.Namespace) -> str:
    """How the command named its study, for the fixes that error messages suggest."""
    return f"--study {args.study}" if args.study else f"--profile {args.profile}"


def _context(args: argparse.Namespace, study):
    from repro.inputs.models import resolve_device
    from repro.science.numerics import pin_cpu
    from repro.stages.context import Context
    from repro.stages.launch import launched_device

    device = resolve_device(study.device, launched_device(args.device, study.device))
    if device.type == "cpu":
        pin_cpu()  # before the first torch kernel: ATen reads its capability once
    if not str(args.out).strip():
        raise ReproError("--out is empty; name the output folder, e.g. --out runs/mine")
    expected = getattr(args, "expected", None)
    return Context(study=study, out=Path(args.out), device=device, force=args.force,
                   quiet=args.quiet, expected=Path(expected) if expected else None)


def cmd_list(args: argparse.Namespace) -> int:
    from repro.study.reader import select_runs

    study = _study(args)
    runs = select_runs(study, args.runs, args.shard)
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
    from repro.inputs.doctor import preflight
    from repro.outputs.finish import finish
    from repro.stages.launch import launched_shard
    from repro.stages.run import run_all
    from repro.study.reader import select_runs

    study = _study(args)
    runs = select_runs(study, args.runs, launched_shard(args.shard))
    ctx = _context(args, study)
    preflight(study, _profile_arg(args))
    ctx.log(f"study {study.name}: {len(runs)} runs on {ctx.device}, output in {ctx.out}")
    counts = run_all(ctx, runs, finish)
    if counts["done"] == 0:
        print(
            f"everything is already done in {ctx.out} ({counts['skipped']} stages); "
            "use --force to redo"
        )
    return counts["verify"] or 0


def cmd_prune(args: argparse.Namespace) -> int:
    from repro.stages.context import ModelHolder, check_output_dir
    from repro.stages.pipeline import prune_stage, tokens_stage
    from repro.study.methods import METHODS

    study = _study(args)
    run = study.run(args.run)
    ctx = _context(args, study)
    check_output_dir(ctx.out)
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
    from repro.tiny.build import build_tiny_assets

    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "assets" / "tiny"
    summary = build_tiny_assets(out, quick=args.quick)
    print(f"tiny assets written to {out}: {summary}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from repro.outputs.verify import verify_run
    from repro.outputs.verify_text import summary

    result = verify_run(
        Path(args.run_dir),
        Path(args.expected) if args.expected else None,
        Path(args.tolerances) if args.tolerances else None,
    )
    print(summary(result))
    return 0 if result["ok"] else 1


def cmd_bless(args: argparse.Namespace) -> int:
    from repro.outputs.bless import bless_run

    done = bless_run(Path(args.run_dir), Path(args.expected) if args.expected else None,
                     allow_dirty=args.allow_dirty)
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
    from repro.outputs.completeness import describe_missing
    from repro.outputs.report import gather, write

    rep = gather(Path(args.run_dir))
    md, page = write(rep)
    print(f"report written to {md} and {page}"
          + (f"; the run is {describe_missing(rep.missing)}" if rep.missing else ""))
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

    checks = run_checks(_study(args), Path(args.out), _profile_arg(args))
    for check in checks:
        print(check.line())
    failed = sum(not c.ok for c in checks)
    print(f"doctor: {len(checks) - failed} OK, {failed} FAIL")
    return 0 if failed == 0 else 2


def cmd_bench(args: argparse.Namespace) -> int:
    from repro.bench.report import markdown
    from repro.bench.run import PARTS, run_bench
    from repro.inputs.models import resolve_device
    from repro.science.numerics import pin_cpu

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


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and exit code 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="repro",
        description=(
            "Reproduce 'How Pruning Reshapes Features' (arXiv 2603.25325): prune, capture, train "
            "SAEs, analyse, verify."
        ),
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def study_opts(sp: argparse.ArgumentParser, runs: bool = True) -> None:
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--profile", default="tiny", help="shipped study: tiny (default) or paper")
        g.add_argument("--study", metavar="FILE", help="a study TOML file of your own")
        if runs:
            sp.add_argument("--runs", nargs="+", metavar="ID", help="only these run ids")
            sp.add_argument("--shard", metavar="I/N", help="only the I-th of N slices of variants")

    def compute_opts(sp: argparse.ArgumentParser, out_default: str | None) -> None:
        sp.add_argument(
            "--out",
            default=out_default,
            required=out_default is None,
            help="output folder (the artifact store)",
        )
        sp.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the study's)")
        sp.add_argument("--force", action="store_true", help="redo stages that are already done")
        sp.add_argument("--quiet", action="store_true", help="no progress lines")

    sp = sub.add_parser("list", help="print the runs of a study")
    study_opts(sp)
    sp.set_defaults(fn=cmd_list)

    sp = sub.add_parser("all", help="run every stage of every run (resumable)")
    study_opts(sp)
    compute_opts(sp, "results")
    sp.add_argument("--expected", metavar="DIR",
                    help="expected outputs to verify against (tables, claims.toml, "
                         "tolerances.toml; default: expected_outputs/<the study's name>)")
    sp.set_defaults(fn=cmd_all)

    from repro.study.methods import known_methods

    sp = sub.add_parser("prune", help=f"prune one run's model and save it (methods: "
                        f"{known_methods()}; unstructured or N:M)")
    study_opts(sp, runs=False)
    sp.add_argument("--run", required=True, metavar="ID", help="run id, see `repro list`")
    compute_opts(sp, None)
    sp.set_defaults(fn=cmd_prune)

    sp = sub.add_parser("build-tiny-assets", help="rebuild the tiny models, tokenizer and corpus")
    sp.add_argument("--out", help="folder (default: the package's assets/tiny)")
    sp.add_argument("--quick", action="store_true", help="few training steps (for tests)")
    sp.set_defaults(fn=cmd_build_tiny_assets)

    sp = sub.add_parser("verify", help="compare a run's tables and claims with the expected ones")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (the --out of `repro all`)")
    sp.add_argument(
        "--expected",
        metavar="DIR",
        help="expected tables (default: expected_outputs/<the run's profile>)",
    )
    sp.add_argument(
        "--tolerances",
        metavar="FILE",
        help="tolerances file (default: the expected folder's tolerances.toml, or for the "
             "package's profiles expected_outputs/tolerances.toml)",
    )
    sp.set_defaults(fn=cmd_verify)

    sp = sub.add_parser("bless", help="make a run's tables the new expected outputs")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder whose tables are accepted")
    sp.add_argument(
        "--expected",
        metavar="DIR",
        help="where to write them, with claims.toml and tolerances.toml (default: "
             "expected_outputs/<the run's profile>)",
    )
    sp.add_argument("--allow-dirty", action="store_true",
                    help="bless a run made from uncommitted code (recorded in PROVENANCE.json)")
    sp.set_defaults(fn=cmd_bless)

    sp = sub.add_parser("report", help="write RUN_DIR/report.md and a self-contained report.html")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder")
    sp.set_defaults(fn=cmd_report)
    sp = sub.add_parser("fetch", help="download the models, data and SAEs a profile needs")
    study_opts(sp, runs=False)
    sp.set_defaults(fn=cmd_fetch)

    sp = sub.add_parser("bench", help="time the hot paths against references; --estimate a budget")
    sp.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: cpu)")
    sp.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    sp.add_argument("--repeats", type=int, help="timed rounds per comparison (default 3)")
    sp.add_argument("--quick", action="store_true", help="small sizes (tests, a first look)")
    sp.add_argument("--only", metavar="PARTS",
                    help="comma-separated: capture,paper,tiny,wanda,match,sae (default: all)")
    sp.add_argument("--match-size", type=int, metavar="N",
                    help="features per SAE in the matching timing (default 16384)")
    sp.add_argument("--estimate", action="store_true",
                    help="also predict the wall time, GPU memory and disk of --profile")
    sp.add_argument("--profile", default="paper", help="profile to estimate (default: paper)")
    sp.set_defaults(fn=cmd_bench)

    sp = sub.add_parser("doctor", help="check GPU, disk, token, cache and packages (seconds)")
    study_opts(sp, runs=False)
    sp.add_argument("--out", default="results", help="output folder the run will write to")
    sp.set_defaults(fn=cmd_doctor)
    return p


def _on_term(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _share_cores_politely() -> None:
    """Several processes of one launch (accelerate, torchrun) share a machine's cores, and each
    keeps the pinned 2 intra-op threads. GNU OpenMP's threads spin while they wait, so
    oversubscribed they burn each other's time slices: two launched tiny runs on 2 cores took
    over 30 minutes, against 4 for one. Sleeping waits change no arithmetic. OpenMP reads this
    once, when torch loads it, so it is set here, before anything imports torch."""
    if int(os.environ.get("LOCAL_WORLD_SIZE") or 1) > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    _share_cores_politely()
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    try:
        return args.fn(args)
    except ReproError as exc:
        print(f"repro: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            "repro: interrupted; completed stages are kept, run the same command again to resume",
            file=sys.stderr,
        )
        return 130
