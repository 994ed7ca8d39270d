"""The `repro` command line: its commands, options and help (`repro --help`), bound to the
handlers of repro.cli, which runs it."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping

DEFAULT_PROFILE = "tiny"
"""The study of a command given neither --profile nor --study: the one every machine runs."""


class _Version(argparse.Action):
    """`repro --version`: the version and code revision every manifest records, computed only
    when asked (repro.stages.provenance.code_version)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and revision")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from repro.stages.provenance import code_version

        print(f"repro {code_version()}")
        parser.exit(0)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line and exit code 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(handlers: Mapping[str, Callable[[argparse.Namespace], int]]
                 ) -> argparse.ArgumentParser:
    """The command line: every command, its options and help, each bound to its handler
    (repro.cli's cmd_* functions, by command name)."""
    p = _Parser(
        prog="repro",
        description=(
            "Reproduce 'How Pruning Reshapes Features' (arXiv 2603.25325): prune, capture, train "
            "SAEs, analyse, verify."
        ),
    )
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def study_opts(sp: argparse.ArgumentParser, runs: bool = True) -> None:
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--profile", help=f"shipped study: {DEFAULT_PROFILE} (default), small, "
                                          "beyond, paper or paper-plus")
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
        sp.add_argument("--check", action="store_true",
                        help="check the study, environment, models, output folder and expected "
                             "outputs, then stop without writing anything")
        sp.add_argument("--replace-study", action="store_true",
                        help="when --out holds the run of another study, move it aside to "
                             "OUT.replaced-<time> (never deleted) and start afresh")

    sp = sub.add_parser("list", help="print the runs of a study")
    study_opts(sp)
    sp.set_defaults(fn=handlers["list"])

    sp = sub.add_parser("all", help="run every stage of every run (resumable)")
    study_opts(sp)
    compute_opts(sp, "results")
    sp.add_argument("--expected", metavar="DIR",
                    help="expected outputs to verify against (tables, claims.toml, "
                         "tolerances.toml; default: repro/expected_outputs/<the study's name>)")
    sp.set_defaults(fn=handlers["all"])

    from repro.study.methods import known_methods, known_patterns

    sp = sub.add_parser("prune", help=f"prune one run's model and save it (methods: "
                        f"{known_methods()}; {known_patterns()})")
    study_opts(sp, runs=False)
    sp.add_argument("--run", required=True, metavar="ID", help="run id, see `repro list`")
    compute_opts(sp, None)
    sp.set_defaults(fn=handlers["prune"])

    sp = sub.add_parser("build-tiny-assets", help="rebuild the tiny models, tokenizer and corpus")
    sp.add_argument("--out", help="folder (default: the package's assets/tiny)")
    sp.add_argument("--quick", action="store_true", help="few training steps (for tests)")
    sp.set_defaults(fn=handlers["build-tiny-assets"])

    sp = sub.add_parser("verify", help="compare a run's tables and claims with the expected ones")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (the --out of `repro all`)")
    sp.add_argument(
        "--expected",
        metavar="DIR",
        help="expected tables (default: repro/expected_outputs/<the run's profile>)",
    )
    sp.add_argument(
        "--tolerances",
        metavar="FILE",
        help="tolerances file (default: the expected folder's tolerances.toml, or for the "
             "package's profiles repro/expected_outputs/tolerances.toml)",
    )
    sp.set_defaults(fn=handlers["verify"])

    sp = sub.add_parser("bless", help="make a run's tables the new expected outputs")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder whose tables are accepted")
    sp.add_argument(
        "--expected",
        metavar="DIR",
        help="where to write them, with claims.toml and tolerances.toml (default: "
             "repro/expected_outputs/<the run's profile>)",
    )
    sp.add_argument("--allow-dirty", action="store_true",
                    help="bless a run made from uncommitted code (recorded in PROVENANCE.json)")
    sp.add_argument("--across", metavar="OTHER_RUN", action="append", default=[],
                    help="a finished run of the same study at other arithmetic (another CPU, "
                         "other kernels, REPRO_NUMERICS): the columns the replicates do not "
                         "move (perplexity) take their bands from its differences (repeatable)")
    sp.set_defaults(fn=handlers["bless"])

    sp = sub.add_parser("report", help="write RUN_DIR/report.md and a self-contained report.html")
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder")
    sp.set_defaults(fn=handlers["report"])
    sp = sub.add_parser("fetch", help="download the models, data and SAEs a profile needs")
    study_opts(sp, runs=False)
    sp.set_defaults(fn=handlers["fetch"])

    sp = sub.add_parser("bench", help="time the hot paths against references; --estimate a budget")
    sp.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: cpu)")
    sp.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    sp.add_argument("--repeats", type=int, help="timed rounds per comparison (default 3)")
    sp.add_argument("--quick", action="store_true", help="small sizes (tests, a first look)")
    sp.add_argument("--only", metavar="PARTS",
                    help="comma-separated: capture,paper,tiny,wanda,match,sae,smollm2,"
                         "arithmetic (default: all)")
    sp.add_argument("--match-size", type=int, metavar="N",
                    help="features per SAE in the matching timing (default 16384)")
    sp.add_argument("--estimate", action="store_true",
                    help="also predict the wall time, GPU memory and disk of --profile")
    sp.add_argument("--profile", default="paper", help="profile to estimate (default: paper)")
    sp.set_defaults(fn=handlers["bench"])

    sp = sub.add_parser("doctor", help="check GPU, disk, token, cache and packages (seconds)")
    study_opts(sp, runs=False)
    sp.add_argument("--out", default="results", help="output folder the run will write to")
    sp.set_defaults(fn=handlers["doctor"])
    return p
