"""Measure how far a CPU profile's numbers move between machines, and rewrite its bands.

    python scripts/measure_spread.py --work DIR [--profile tiny] [--bless] [--native]

Runs the profile once per setting below (same code, same clean commit), each into
DIR/<setting>/, and takes per table column (and per claim) the largest |difference| from
the first run, the one that is blessed. Each setting reproduces, on one machine, something
another machine differs in; repro's pins (repro/numerics.py) are meant to make them all
give the same bits:

- blessed:   the plain environment of this machine.
- one-core:  a 1-core machine: the process bound to one CPU, OMP/MKL told to use 1 thread.
- other-isa: another CPU's instruction sets: ATen, MKL and oneDNN told to use AVX-512 or
             their own choice, glibc's libm and numpy's SIMD dispatch without AVX2/FMA/AVX-512.

The bands written to expected_outputs/tolerances.toml are MULTIPLE x the spread, with a floor
of abs FLOOR_ABS + rel FLOOR_REL (what a last-bit difference in a float can be), for every
measured numeric column; columns exact by construction (the grid's sparsities and seeds, the
sample sizes) get no band at all. `--native` adds three runs without the pins
(REPRO_NUMERICS=native at 1 and 2 threads and AVX2) whose spread is reported, not used: it is
what the pins remove. `--bless` then blesses the first run (a clean tree is required, as
`repro bless` requires), so that the profile's expected claims carry the new bands.

On the project's 2-core machine the tiny profile takes about 5 minutes a setting: 15 minutes
for the three, 30 with --native. Writes DIR/spread.json and DIR/spread.md.
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

from repro.expected import load_claims

ROOT = Path(__file__).resolve().parent.parent
TOLERANCES = ROOT / "expected_outputs" / "tolerances.toml"
MULTIPLE = 3.0
FLOOR_ABS, FLOOR_REL = 1e-9, 1e-6
EXACT_BY_CONSTRUCTION = {"sparsity", "achieved_sparsity", "seed_a", "seed_b", "n_causal"}
"""Grid values and sample sizes: set by the study file, never computed from data."""
EXACT_CLAIMS = {"C1.of"}
"""The number of conditions: the study file's, never computed."""
NO_ISA = ("-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX2,-FMA,-AVX_Fast_Unaligned_Load")
SETTINGS: dict[str, dict[str, str]] = {
    "blessed": {},
    "one-core": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "REPRO_SPREAD_CPUS": "0"},
    "other-isa": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO",
                  "ONEDNN_MAX_CPU_ISA": "ALL", "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={NO_ISA}",
                  "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX "
                                              "AVX512_CNL AVX512_ICL AVX512_SPR AVX2 FMA3"},
}
NATIVE: dict[str, dict[str, str]] = {
    "native-2-threads": {"REPRO_NUMERICS": "native", "OMP_NUM_THREADS": "2"},
    "native-1-thread": {"REPRO_NUMERICS": "native", "OMP_NUM_THREADS": "1"},
    "native-avx2": {"REPRO_NUMERICS": "native", "OMP_NUM_THREADS": "2",
                    "ATEN_CPU_CAPABILITY": "avx2"},
}


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
    note = (f"spread {spread:.3g} over {', '.join(settings)}; band {MULTIPLE:g}x spread, "
            f"floor abs {FLOOR_ABS:g} + rel {FLOOR_REL:g}")
    return f'{{ abs = {lo:.3g}, rel = {rel:g}, note = "{note}" }}'


def tolerances_text(profile: str, spread: dict, claims: dict, settings: list[str],
                    commit: str) -> str:
    """This profile's sections of tolerances.toml; other profiles' sections are kept."""
    lines = [f"# [{profile}.*] written by scripts/measure_spread.py at {commit}: spread over the",
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
    for spec in load_claims(ROOT / "expected_outputs" / "paper"):
        key = f"{spec.claim}.{spec.field}"
        if key not in EXACT_CLAIMS and key in claims:
            lines.append(f"{spec.name} = {_entry(claims[key], settings)}")
    return "\n".join(lines) + "\n"


def keep_other_profiles(text: str, profile: str) -> str:
    """The existing tolerances.toml without this profile's sections (kept verbatim)."""
    if not TOLERANCES.is_file():
        return ""
    kept, skipping = [], False
    for line in TOLERANCES.read_text().splitlines():
        if line.startswith("["):
            skipping = line.startswith((f'["{profile}".', f"[{profile}."))
        elif line.startswith(f"# [{profile}.*]"):
            skipping = True
        if not skipping:
            kept.append(line)
    return "\n".join(kept).rstrip() + "\n\n" + text


def markdown(spread: dict, claims: dict, native: dict | None, walls: dict) -> str:
    out = ["| table | column | spread (pinned settings) | band abs | spread (native) |",
           "|---|---|---|---|---|"]
    for table, cols in spread.items():
        for col, v in cols.items():
            lo = "exact" if col in EXACT_BY_CONSTRUCTION else f"{band(v)[0]:.3g}"
            nat = f"{native[table][col]:.3g}" if native else "—"
            out.append(f"| {table} | {col} | {v:.3g} | {lo} | {nat} |")
    out += ["", "| claim | spread |", "|---|---|"]
    out += [f"| {k} | {v:.3g} |" for k, v in claims.items()]
    out += ["", "| setting | wall seconds |", "|---|---|"]
    out += [f"| {k} | {v:.0f} |" for k, v in walls.items()]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, type=Path, help="folder for the runs")
    p.add_argument("--profile", default="tiny")
    p.add_argument("--native", action="store_true", help="also measure the unpinned spread")
    p.add_argument("--bless", action="store_true", help="bless the first run afterwards")
    p.add_argument("--allow-dirty", action="store_true", help="passed on to repro bless")
    args = p.parse_args()
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    if commit.endswith("-dirty") and not args.allow_dirty:
        sys.exit("measure_spread: the tree has uncommitted changes; commit first "
                 "(or --allow-dirty)")
    walls = {}
    runs = {**SETTINGS, **(NATIVE if args.native else {})}
    for name, env in runs.items():
        walls[name] = run_profile(args.profile, args.work / name, env)
        print(f"{name}: {walls[name]:.0f} s", flush=True)
    base, pinned = args.work / "blessed", [args.work / n for n in SETTINGS if n != "blessed"]
    spread, claims = table_spread(base, pinned), claim_spread(base, pinned)
    native = (table_spread(args.work / "native-2-threads",
                           [args.work / n for n in NATIVE if n != "native-2-threads"])
              if args.native else None)
    (args.work / "spread.json").write_text(json.dumps(
        {"commit": commit, "pinned": spread, "claims": claims, "native": native,
         "wall_seconds": walls}, indent=1) + "\n")
    (args.work / "spread.md").write_text(markdown(spread, claims, native, walls))
    settings = [n for n in SETTINGS if n != "blessed"]
    text = tolerances_text(args.profile, spread, claims, settings, commit)
    TOLERANCES.write_text(keep_other_profiles(text, args.profile))
    tomllib.loads(TOLERANCES.read_text())  # what was written must read back
    print(f"wrote {TOLERANCES} and {args.work / 'spread.md'}")
    if args.bless:
        cmd = [sys.executable, "-m", "repro", "bless", str(base)]
        subprocess.run(cmd + (["--allow-dirty"] if args.allow_dirty else []), check=True)


if __name__ == "__main__":
    main()
