"""How a CPU run of `repro` fares on a shared machine: `python scripts/bench_shared.py`.

Times `repro all --profile tiny` four ways: with OpenMP's default waiting (idle threads spin
for a while; the CLI before it made them sleep) and with the CLI as it is (OMP_WAIT_POLICY=
PASSIVE, repro.science.numerics.share_cores_politely), each alone and beside a competing
CPU-bound load (busy-looping Python processes, one pinned to each core by default). Prints
the wall times, the machine's load average when each started, the ratios loaded/alone and
default/passive, and whether every output file is byte-identical across the four (waiting
must change no arithmetic; manifests, logs, the report and the verification, which hold wall
times and paths, are left out of that comparison).

    python scripts/bench_shared.py                          # the whole tiny profile, 4 runs
    python scripts/bench_shared.py --runs gemma-3-tiny/dense/0 gemma-3-tiny/wanda/50
    python scripts/bench_shared.py --policies passive --loads loaded --timeout 1800

A `--runs` subset is quick and ends PARTIAL (exit code 3), which is fine for timing. Timings
on a machine others use move with their load: the load average is printed beside each time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = {
    # the CLI without its politeness call: OpenMP's own default (spin, then sleep)
    "default": ("import sys, repro.cli as cli; cli._share_cores_politely = lambda: None; "
                "sys.exit(cli.main(sys.argv[1:]))"),
    "passive": "import sys, repro.cli as cli; sys.exit(cli.main(sys.argv[1:]))",
}
LOADS = ("alone", "loaded")
SPIN = ("import ctypes, os, signal, sys\n"
        # die with the bench, however it dies (PR_SET_PDEATHSIG), also when it died before
        # this line ran: never spin unattended on a shared machine
        "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
        "if os.getppid() != int(sys.argv[2]):\n    sys.exit()\n"
        "os.sched_setaffinity(0, {int(sys.argv[1])})\n"
        "while True:\n    pass\n")
SKIPPED = ("manifest.json", "verification.json", "verification.md", "report.md", "report.html",
           "lock", ".log")
"""Files that record wall times, paths or locks, not results."""
OK_CODES = (0, 1, 3)
"""verification PASS, FAIL, PARTIAL: each a finished run whose time counts."""


def start_load(n: int) -> list[subprocess.Popen]:
    """n busy-looping processes, the i-th pinned to core i modulo the cores this may use."""
    cores = sorted(os.sched_getaffinity(0))
    return [subprocess.Popen([sys.executable, "-c", SPIN, str(cores[i % len(cores)]),
                              str(os.getpid())], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=30)


def run_once(policy: str, out: Path, runs: list[str] | None, timeout: float) -> dict:
    """One `repro all --profile tiny` into a fresh folder; its wall time and exit code."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    cmd = [sys.executable, "-c", POLICIES[policy], "all", "--profile", "tiny", "--out",
           str(out), "--quiet", *(["--runs", *runs] if runs else [])]
    load = os.getloadavg()[0]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        code, tail = done.returncode, (done.stderr or done.stdout).strip().splitlines()[-1:]
    except subprocess.TimeoutExpired:
        code, tail = None, [f"stopped after the --timeout of {timeout:g} s"]
    return {"seconds": time.perf_counter() - t, "code": code, "load_at_start": load,
            "last_line": tail[0] if tail else ""}


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every result file under a run folder, by relative path."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(SKIPPED):
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(
                path.read_bytes()).hexdigest()
    return out


def differences(all_digests: dict[str, dict[str, str]]) -> list[str]:
    """Files whose bytes (or presence) differ between the conditions."""
    names = sorted(set().union(*all_digests.values()))
    return [n for n in names if len({d.get(n) for d in all_digests.values()}) > 1]


def ratio(a: dict | None, b: dict | None) -> str:
    """a's time over b's; a lower bound (`>`) when a was stopped before it finished."""
    if not a or not b or b["code"] not in OK_CODES:
        return "—"
    return f"{'' if a['code'] in OK_CODES else '>'}{a['seconds'] / b['seconds']:.2f}x"


def report(results: dict[tuple[str, str], dict], diff: list[str], n_files: int,
           competitors: int) -> str:
    lines = [f"| waiting | {'alone':>14} | {f'beside {competitors} busy':>14} | loaded/alone |",
             "|---|---:|---:|---:|"]
    for policy in POLICIES:
        cells = []
        for load in LOADS:
            r = results.get((policy, load))
            cells.append("—" if r is None else
                         ("" if r["code"] in OK_CODES else "stopped after ")
                         + f"{r['seconds']:.0f} s (load {r['load_at_start']:.1f})")
        lines.append(f"| {policy} | {cells[0]:>14} | {cells[1]:>14} | "
                     f"{ratio(results.get((policy, 'loaded')), results.get((policy, 'alone')))} |")
    for load in LOADS:
        lines.append(f"default/passive, {load}: "
                     f"{ratio(results.get(('default', load)), results.get(('passive', load)))}")
    if len(results) > 1:
        lines.append("outputs byte-identical across the runs: "
                     + ("yes" if not diff else f"NO, {len(diff)} differ: {', '.join(diff[:5])}")
                     + f" ({n_files} files compared)")
    failed = [f"{p}/{lo}: {r['last_line']}" for (p, lo), r in results.items()
              if r["code"] not in OK_CODES]
    return "\n".join(lines + [f"failed: {f}" for f in failed])


def _stop(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", metavar="ID", help="only these run ids (quick)")
    p.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    p.add_argument("--loads", nargs="+", choices=LOADS, default=list(LOADS))
    p.add_argument("--competitors", type=int, default=len(os.sched_getaffinity(0)),
                   help="busy processes beside the loaded runs (default: one per core)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run (default 3600)")
    p.add_argument("--out", help="keep the run folders and bench_shared.json here")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)  # `timeout` or kill: still stop the load (finally)
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_shared_"))
    base.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[str, str], dict] = {}
    sums: dict[str, dict[str, str]] = {}
    try:
        for load in args.loads:
            for policy in args.policies:
                folder = base / f"{policy}-{load}"
                shutil.rmtree(folder, ignore_errors=True)
                procs = start_load(args.competitors) if load == "loaded" else []
                try:
                    results[(policy, load)] = r = run_once(policy, folder, args.runs,
                                                           args.timeout)
                finally:
                    stop_load(procs)
                print(f"{policy:>8} {load:>6}: {r['seconds']:.1f} s, exit {r['code']}, "
                      f"load {r['load_at_start']:.1f} at start", flush=True)
                if r["code"] in OK_CODES:
                    sums[f"{policy}-{load}"] = digests(folder)
    finally:
        diff = differences(sums) if sums else []
        n_files = len(set().union(*sums.values())) if sums else 0
        text = report(results, diff, n_files, args.competitors)
        print(text)
        (base / "bench_shared.json").write_text(json.dumps(
            {"runs": args.runs, "competitors": args.competitors, "differ": diff,
             "results": {f"{p}-{lo}": r for (p, lo), r in results.items()}}, indent=1))
        if not args.out:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if not diff and all(r["code"] in OK_CODES for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
