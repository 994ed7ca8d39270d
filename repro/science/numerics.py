"""The CPU arithmetic `repro` pins, so that a CPU profile gives the same bits on one machine
whatever its thread count and ISA settings, and nearly the same bits on any x86-64.

Measured on the project's 2-core AMD EPYC (AVX-512) with the tiny profile (the dense,
Wanda 50 % and magnitude 50 % runs of gemma-3-tiny), changing one setting at a time and
comparing every stage's output bytes with the run at the machine's own settings:

| setting changed | what differs |
|---|---|
| `ATEN_CPU_CAPABILITY` avx2 or default (AVX-512 here) | perplexity, activations, SAEs, all tables |
| `MKL_CBWR=COMPATIBLE` (MKL picks a GEMM per CPU) | the same |
| `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN runs some float32 linears) | the same |
| 1 thread instead of 2 | evaluation sums (explained variance in the 9th digit) |

Each of these is what another x86 CPU changes by itself (a CPU without AVX-512 takes other
ATen, MKL and oneDNN kernels; a machine with other cores another thread count), and the
SAE features, firing-rate bins and Hungarian matches amplify a last-bit difference into
other table values. MKL honours only `COMPATIBLE` on AMD CPUs (with `MKL_CBWR=AVX2` its
MKL_VERBOSE line says `CNR:AUTO`).

So a CPU run of `repro` sets, before torch runs any kernel: ATen's capability AVX2 (on every
x86-64 CPU of the last decade), MKL's CNR branch COMPATIBLE with dynamic threading off,
oneDNN's ISA AVX2, and 2 intra-op threads whatever the machine's core count (a 1-core
machine is slower, not different). What is in force goes into every manifest
(`numerics()`), and `repro verify` reports a run whose numerics differ from the blessed
run's. `REPRO_NUMERICS=native` leaves everything as the machine chooses (faster on many
cores, not bit-stable).

What the pins do not hold: another CPU vendor. The tiny profile pinned on an Intel Xeon
(Sapphire Rapids) and on the AMD EPYC gives the same perplexities to every printed digit (T1)
and the same claims, but trained SAEs whose metrics differ from the 7th digit on (T5's MSE
and explained variance), and from there survival statistics that move by up to 3 % (T3's
feature-level Spearman rho of a condition near rho = 0, its p-value by 1 %).
The stages call no oneDNN primitive and no numpy BLAS (OPENBLAS_CORETYPE changes nothing);
MKL's SGEMM is the only outside kernel they run (MKL_VERBOSE), so its code path per vendor
is the likely cause. The verdict's bands therefore come from runs perturbed in the last bits
on purpose (scripts/measure_spread.py), not from runs the pins make identical.
CUDA runs are not pinned: GPU kernels are another matter (see the README).

Waiting, not arithmetic: torch's CPU wheels run ATen's and MKL's parallel regions on GNU
OpenMP (libgomp; `torch.__config__.parallel_info()`), whose idle threads spin for a while by
default before they sleep. On a machine other jobs share, a spinning thread burns the time
slice the thread it waits for needs: a loop of small GEMMs on the project's 2 cores at load 7
took 109 s with OpenMP's default and 13.5 s with `OMP_WAIT_POLICY=PASSIVE`. So every run of
the `repro` command sleeps while it waits (`share_cores_politely`, called before anything
loads torch; an `OMP_WAIT_POLICY` already in the environment wins, e.g. ACTIVE on a machine
of one's own). How a thread waits decides no operand and no order of summation, so it is
recorded (`omp_wait_policy` in `numerics()`) but not compared (`comparable`).
KMP_BLOCKTIME is Intel OpenMP's equivalent, which these wheels do not load; torch's
inter-op pool waits on a condition variable and never spins.
"""

from __future__ import annotations

import functools
import os
import platform

PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
"""Environment read lazily by torch, MKL and oneDNN at their first kernel."""
PINNED_THREADS = 2
"""Intra-op threads of every pinned CPU run: fixes the order of parallel reductions."""
MODE_VARIABLE = "REPRO_NUMERICS"
"""`native` disables the pins; unset or `pinned` keeps them."""
MODES = ("pinned", "native")
POLITE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Read by OpenMP once, when torch loads it: idle threads sleep instead of spinning."""


def share_cores_politely() -> dict[str, str]:
    """Make OpenMP's idle threads sleep (unless the environment already says how they wait);
    return the settings in force. Only effective before torch is imported."""
    for name, value in POLITE_ENV.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in POLITE_ENV}


def mode() -> str:
    value = os.environ.get(MODE_VARIABLE, "pinned") or "pinned"
    if value not in MODES:
        from repro.errors import ReproError

        raise ReproError(f"{MODE_VARIABLE}={value!r}: use one of {', '.join(MODES)}")
    return value


def pin_cpu() -> dict:
    """Pin the CPU arithmetic for this process (unless REPRO_NUMERICS=native); return it.

    Must run before torch executes its first CPU kernel: ATen reads its capability once.
    Checked afterwards, so a caller that ran a kernel too early fails loudly instead of
    producing quietly different bits.
    """
    if mode() == "pinned":
        os.environ.update(PINNED_ENV)
        import torch

        torch.set_num_threads(PINNED_THREADS)
        capability = torch.backends.cpu.get_cpu_capability()
        if capability.lower() != PINNED_ENV["ATEN_CPU_CAPABILITY"] and _has_avx2():
            raise RuntimeError(f"ATen already chose CPU capability {capability} before "
                               "repro.science.numerics.pin_cpu() ran; pin before any torch kernel")
    return numerics()


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


@functools.cache  # numerics() is in every manifest's provenance: read /proc/cpuinfo once
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numerics() -> dict:
    """What decides the CPU arithmetic of this process, as recorded in every manifest."""
    import torch

    return {"mode": mode(), "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **{name.lower(): os.environ.get(name) for name in PINNED_ENV},
            # how idle threads wait: recorded, never compared (it changes no arithmetic)
            **{name.lower(): os.environ.get(name) for name in POLITE_ENV},
            "cpu": _cpu_model()}


def comparable(a: dict | None, b: dict | None) -> list[str]:
    """The settings in which two runs' numerics differ (the CPU model is not one of them)."""
    if not a or not b:
        return []
    keys = ("mode", "threads", "cpu_capability", *(n.lower() for n in PINNED_ENV))
    return [f"{k}: {a.get(k)} vs {b.get(k)}" for k in keys if a.get(k) != b.get(k)]
