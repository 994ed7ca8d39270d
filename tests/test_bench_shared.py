"""scripts/bench_shared.py's bookkeeping: which outputs differ between runs (timings and paths
left out), and busy-loop competitors that never outlive the bench."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_shared", ROOT / "scripts" / "bench_shared.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _folder(root: Path, value: str, wall: float) -> Path:
    (root / "runs" / "a" / "sae").mkdir(parents=True)
    (root / "runs" / "a" / "sae" / "weights.bin").write_text(value)
    (root / "runs" / "a" / "sae" / "manifest.json").write_text(json.dumps({"wall": wall}))
    (root / "report.html").write_text(str(root))
    return root


def test_only_result_files_are_compared(tmp_path: Path) -> None:
    same = {n: bench.digests(_folder(tmp_path / n, "w", wall)) for n, wall in (("a", 1), ("b", 2))}
    assert bench.differences(same) == []  # wall times and paths differ: not results
    changed = {**same, "c": bench.digests(_folder(tmp_path / "c", "w2", 1))}
    assert bench.differences(changed) == ["runs/a/sae/weights.bin"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited: it only waits for its parent to read its status
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_the_competing_load_stops_with_the_bench_however_it_ends() -> None:
    procs = bench.start_load(1)
    bench.stop_load(procs)
    assert all(p.poll() is not None for p in procs)
    # a bench killed outright (no finally runs): its busy loop must still not outlive it
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench_shared as b, os; "
            "p = b.start_load(1)[0]; print(p.pid, flush=True); os._exit(0)")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT / "scripts")],
                          capture_output=True, text=True, timeout=60)
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), f"busy loop {pid} outlived the bench"
