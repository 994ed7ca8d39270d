"""Measure how far a CPU profile's numbers move between machines, and rewrite its bands.

    python scripts/measure_spread.py --work DIR [--profile tiny] [--bless] [--reuse]
                                     [--skip SETTING ...]

Runs the profile once per setting below (same code, same clean commit), each into
DIR/<setting>/ (a setting whose folder already holds a finished run is not run again:
`repro all` resumes), and takes per table column (and per claim) the largest |difference|
from the first run, the one that is blessed. Three kinds of setting:

- Pinned (repro's numerics pins in force, repro/science/numerics.py): what the pins must make
  bit-identical on one machine. `one-core` is a 1-core machine (bound to one CPU, OMP/MKL
  told to use 1 thread); `other-isa` asks ATen, MKL and oneDNN for AVX-512 or their own
  choice (the pins override that) and masks glibc's libm and numpy's SIMD dispatch to a CPU
  without AVX2/FMA/AVX-512 (not pinned). Their spread is expected to be 0.
- Perturbed (REPRO_NUMERICS=native: the pins off): 1 thread, or ATen AVX-512 with MKL's and
  oneDNN's own dispatch. Each changes the last bits of the SAEs, which is what another CPU
  does to the parts the pins cannot hold: an Intel Sapphire Rapids and an AMD EPYC, both
  pinned, agree on every perplexity but train SAEs that differ in their last bits
  (docs/numerics.md). Measured by how far it moves the SAEs (T5's dense MSE, tiny profile), that
  cross-vendor difference (3e-5) lies between these two (2e-8 and 6e-4).
- Beyond (pins off, reported in spread.md, not used for bands): MKL's AVX-512 branch, or
  ATen's scalar kernels. They move the SAEs 500 times as far as the two CPUs differ (dense
  MSE 0.016), far enough to flip near-ties: a condition's binned rho by 0.48 and RQ5's
  causal rho by 0.38 on the tiny profile. Bands that wide could not catch a flipped sign in
  those columns; a machine that differs this much would fail the verdict.

The bands written to repro/expected_outputs/tolerances.toml are MULTIPLE x the largest spread over
the pinned and perturbed settings, with a floor of abs FLOOR_ABS + rel FLOOR_REL (what a
last-bit difference in a float can be), for every measured numeric column; columns exact by
construction (the grid's sparsities and seeds, the sample sizes) get no band at all. A
perturbed setting whose run is byte-identical to the blessed one measured nothing: the
script stops and says so. `--bless` then blesses the first run (a clean tree is required,
as `repro bless` requires), so that the profile's expected claims carry the new bands.
tests/test_cross_cpu.py checks the bands on the tables of a real second CPU.

On the project's 2-core machines the tiny profile takes 3.5-5 minutes a setting (the
1-thread one about 8): about 35 minutes for the eight. Writes DIR/spread.json and
DIR/spread.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd

from repro.outputs.bands import (
    EXACT_BY_CONSTRUCTION,
    EXACT_CLAIMS,
    FLOOR_ABS,
    FLOOR_REL,
)
from repro.outputs.bands_text import keep_other_profiles
from repro.outputs.bless import code_versions
from repro.outputs.expected import EXPECTED_ROOT, load_claims
from repro.outputs.report import finished_manifests, stage_times
from repro.science.numerics import PINNED_ENV, PINNED_THREADS

ROOT = Path(__file__).resolve().parent.parent
TOLERANCES = EXPECTED_ROOT / "tolerances.toml"
MULTIPLE = 3.0
NO_ISA = ("-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX2,-FMA,-AVX_Fast_Unaligned_Load")
PINNED: dict[str, dict[str, str]] = {
    "blessed": {},
    "one-core": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REPRO_SPREAD_CPUS": "0"},
    "other-isa": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO",
                  "ONEDNN_MAX_CPU_ISA": "ALL", "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={NO_ISA}",
                  "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX "
                                              "AVX512_CNL AVX512_ICL AVX512_SPR AVX2 FMA3"},
}
_UNPINNED = {**PINNED_ENV, "REPRO_NUMERICS": "native", "OMP_NUM_THREADS": str(PINNED_THREADS)}
"""The pins' own values with the pins off: each perturbed setting changes one of them."""
PERTURBED: dict[str, dict[str, str]] = {
    "perturbed-1-thread": {**_UNPINNED, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "perturbed-avx512": {**_UNPINNED, "ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO",
                         "ONEDNN_MAX_CPU_ISA": "ALL"},
}
"""Last-bit perturbations the bands are taken from (see the module docstring)."""
BEYOND: dict[str, dict[str, str]] = {
    "beyond-mkl-avx512": {**_UNPINNED, "MKL_CBWR": "AVX512"},
    "beyond-default": {**_UNPINNED, "ATEN_CPU_CAPABILITY": "default"},
}
"""Larger perturbations, reported beside the bands and not used for them."""
MIN_PERTURBING = 2
"""Perturbed settings that must change some bit: fewer, and the spread measured too little."""


def run_profile(profile: str, out: Path, env: dict[str, str]) -> float:
    """`repro all` in a subprocess with `env` added; returns its wall time."""
    full = {**os.environ, **env}
    cpus = full.pop("REPRO_SPREAD_CPUS", None)
    cmd = [sys.executable, "-m", "repro", "all", "--profile", profile, "--out", str(out),
           "--quiet"]
    started = time.time()

    def bind() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    done = subprocess.run(cmd, env=full, preexec_fn=bind, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: the run finished and its verification failed
        sys.exit(f"measure_spread: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return time.time() - started


def _numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _diff(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b)  # NaN against a number stays NaN: no band can cover it


def table_spread(base: Path, others: list[Path]) -> dict[str, dict[str, float]]:
    """Per table and numeric column, the largest |difference| of any run from `base`."""
    out: dict[str, dict[str, float]] = {}
    for csv in sorted((base / "tables").glob("*.csv")):
        ref = pd.read_csv(csv).set_index("id")
        cols = {}
        for col in ref.columns:
            if not _numeric(ref[col]):
                continue
            worst = 0.0
            for run in others:
                got = pd.read_csv(run / "tables" / csv.name).set_index("id")[col]
                diffs = [_diff(float(a), float(b)) for a, b in zip(ref[col], got.loc[ref.index],
                                                                     strict=True)]
                worst = max(worst, max(diffs, key=lambda d: math.inf if math.isnan(d) else d))
            cols[col] = worst
        out[csv.stem] = cols
    return out


def claim_spread(base: Path, others: list[Path]) -> dict[str, float]:
    """Per claim number (C1.value, C4.abs_rho_ci_high, ...), the largest |difference|."""
    ref = json.loads((base / "claims.json").read_text())
    out: dict[str, float] = {}
    for claim, entry in ref.items():
        for field, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            diffs = []
            for run in others:
                got = json.loads((run / "claims.json").read_text())[claim].get(field)
                diffs.append(_diff(float(value), math.nan if got is None else float(got)))
            out[f"{claim}.{field}"] = max(diffs, default=0.0)
    return out


def band(spread: float) -> tuple[float, float]:
    """(abs, rel) of a measured column: MULTIPLE x spread with the round-off floor."""
    return max(FLOOR_ABS, MULTIPLE * spread), FLOOR_REL


def _entry(spread: float, settings: list[str]) -> str:
    lo, rel = band(spread)
    note = (f"spread {spread:.3g} over {len(settings)} pinned and perturbed settings; band "
            f"{MULTIPLE:g}x spread, floor abs {FLOOR_ABS:g} + rel {FLOOR_REL:g}")
    return f'{{ abs = {lo:.3g}, rel = {rel:g}, note = "{note}" }}'


def tolerances_text(profile: str, spread: dict, claims: dict, settings: list[str],
                    commit: str) -> str:
    """This profile's sections of tolerances.toml; other profiles' sections are kept."""
    lines = [f"# [{profile}.*] written by scripts/measure_spread.py ({commit}): spread over the",
             f"# settings {', '.join(settings)} (see that script), each band {MULTIPLE:g}x "
             "the spread with a floor;",
             "# columns exact by construction have no entry and must match exactly.", ""]
    for table, cols in spread.items():
        if any(not math.isfinite(v) for v in cols.values()):
            sys.exit(f"measure_spread: {table} has a column NaN in one run and a number in "
                     "another; no band covers that, find the cause first")
        lines.append(f'["{profile}"."{table}"]')
        lines += [f"{col} = {_entry(v, settings)}" for col, v in cols.items()
                  if col not in EXACT_BY_CONSTRUCTION]
        lines.append("")
    if any(not math.isfinite(v) for v in claims.values()):
        sys.exit("measure_spread: a claim is null in one run and a number in another; no band "
                 "covers that, find the cause first")
    lines.append(f'["{profile}"."claims"]')
    for spec in load_claims(EXPECTED_ROOT / "paper"):
        key = f"{spec.claim}.{spec.field}"
        if key not in EXACT_CLAIMS and key in claims:
            lines.append(f"{spec.name} = {_entry(claims[key], settings)}")
    return "\n".join(lines) + "\n"


def stage_seconds(run: Path) -> float:
    """A finished run's stage wall times, summed over its manifests."""
    if not (run / "tables" / "manifest.json").is_file():
        sys.exit(f"measure_spread: --reuse, but {run} holds no finished run")
    return sum(seconds for _, _, seconds in stage_times(finished_manifests(run)))


def run_commits(work: Path, names: list[str]) -> str:
    """The code versions the reused runs were made at, for the bands' note. The blessed run
    must be of one clean commit (`repro bless` refuses anything else); a perturbed or pinned
    run of another one is named, so that a reader can check the science code was the same."""
    versions = {n: code_versions(work / n) for n in names}
    for name, found in versions.items():
        if name != "blessed" and found != versions["blessed"]:
            print(f"measure_spread: {name} was made at {', '.join(sorted(found))}, the blessed "
                  f"run at {', '.join(sorted(versions['blessed']))}", flush=True)
    return "runs at " + ", ".join(sorted(set().union(*versions.values())))


def stage_outputs(run: Path) -> dict[str, dict]:
    """Every stage folder's recorded output sha256s, by folder relative to the run."""
    return {str(m.parent.relative_to(run)): json.loads(m.read_text())["outputs"]
            for m in sorted(run.rglob("manifest.json"))}


def unchanged(base: Path, run: Path) -> bool:
    """Whether `run` wrote exactly the bytes `base` did in every stage folder."""
    return stage_outputs(base) == stage_outputs(run)


def markdown(spread: dict, claims: dict, by_kind: dict, walls: dict) -> str:
    kinds = ("pinned", "perturbed", "beyond")
    out = ["| table | column | spread (pinned) | spread (perturbed) | band abs | "
           "spread (beyond, not used) |", "|---|---|---|---|---|---|"]
    for table, cols in spread.items():
        for col, v in cols.items():
            lo = "exact" if col in EXACT_BY_CONSTRUCTION else f"{band(v)[0]:.3g}"
            got = [f"{by_kind[k]['tables'][table][col]:.3g}" for k in kinds]
            out.append(f"| {table} | {col} | {got[0]} | {got[1]} | {lo} | {got[2]} |")
    out += ["", "| claim | spread (pinned) | spread (perturbed) | spread (beyond) |",
            "|---|---|---|---|"]
    out += [f"| {k} | " + " | ".join(f"{by_kind[kind]['claims'][k]:.3g}" for kind in kinds)
            + " |" for k in claims]
    out += ["", "| setting | wall seconds |", "|---|---|"]
    out += [f"| {k} | {v:.0f} |" for k, v in walls.items()]
    return "\n".join(out) + "\n"


def _worst(*spreads: dict) -> dict:
    """Key by key (nested one level for tables), the largest of several spreads."""
    first = spreads[0]
    if all(isinstance(v, dict) for v in first.values()):
        return {k: _worst(*(s[k] for s in spreads)) for k in first}
    return {k: max((s[k] for s in spreads), key=lambda d: math.inf if math.isnan(d) else d)
            for k in first}


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, type=Path, help="folder for the runs")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--bless", action="store_true", help="bless the first run afterwards")
    p.add_argument("--allow-dirty", action="store_true", help="passed on to repro bless")
    p.add_argument("--reuse", action="store_true",
                   help="take the finished runs in --work as they are (the bands' note names "
                        "the code versions they were made at) instead of running them")
    p.add_argument("--skip", action="append", default=[], metavar="SETTING",
                   help="leave a setting out (the bands' header lists those used)")
    args = p.parse_args()
    settings = {*PINNED, *PERTURBED, *BEYOND} - {"blessed"}
    if set(args.skip) - settings:
        sys.exit(f"measure_spread: --skip {sorted(set(args.skip) - settings)}: not a setting "
                 "that can be left out")
    for name in args.skip:
        for group in (PINNED, PERTURBED, BEYOND):
            group.pop(name, None)
    return args


def main() -> None:
    args = _arguments()
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    if commit.endswith("-dirty") and not args.allow_dirty:
        sys.exit("measure_spread: the tree has uncommitted changes; commit first "
                 "(or --allow-dirty)")
    kinds = {"pinned": list(PINNED), "perturbed": list(PERTURBED), "beyond": list(BEYOND)}
    walls = {}
    for name, env in {**PINNED, **PERTURBED, **BEYOND}.items():
        walls[name] = (stage_seconds(args.work / name) if args.reuse
                       else run_profile(args.profile, args.work / name, env))
        print(f"{name}: {walls[name]:.0f} s", flush=True)
    made_at = run_commits(args.work, list(walls)) if args.reuse else f"runs at {commit}"
    base = args.work / "blessed"
    kinds["pinned"].remove("blessed")
    idle = [n for n in PERTURBED if unchanged(base, args.work / n)]
    for name in idle:
        print(f"measure_spread: {name} wrote the blessed run's bytes: on this machine it "
              "perturbs nothing", flush=True)
    if len(PERTURBED) - len(idle) < MIN_PERTURBING:
        sys.exit(f"measure_spread: only {len(PERTURBED) - len(idle)} perturbed setting(s) "
                 f"changed any bit, fewer than {MIN_PERTURBING}; the spread would measure "
                 "nothing")
    by_kind = {kind: {"tables": table_spread(base, [args.work / n for n in names]),
                      "claims": claim_spread(base, [args.work / n for n in names])}
               for kind, names in kinds.items()}
    spread = _worst(by_kind["pinned"]["tables"], by_kind["perturbed"]["tables"])
    claims = _worst(by_kind["pinned"]["claims"], by_kind["perturbed"]["claims"])
    (args.work / "spread.json").write_text(json.dumps(
        {"commit": made_at, "by_kind": by_kind, "idle_settings": idle,
         "wall_seconds": walls}, indent=1) + "\n")
    (args.work / "spread.md").write_text(markdown(spread, claims, by_kind, walls))
    used = [*kinds["pinned"], *kinds["perturbed"]]
    text = tolerances_text(args.profile, spread, claims, used, made_at)
    kept = keep_other_profiles(TOLERANCES.read_text(), args.profile) \
        if TOLERANCES.is_file() else ""
    TOLERANCES.write_text(kept.rstrip() + "\n\n" + text if kept.strip() else text)
    tomllib.loads(TOLERANCES.read_text())  # what was written must read back
    print(f"wrote {TOLERANCES} and {args.work / 'spread.md'}")
    if args.bless:
        cmd = [sys.executable, "-m", "repro", "bless", str(base)]
        subprocess.run(cmd + (["--allow-dirty"] if args.allow_dirty else []), check=True)


if __name__ == "__main__":
    main()
