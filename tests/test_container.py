"""The container without a Docker engine: the Dockerfile parsed and linted, the lock files
checked, the build context against what the package reads at run time, and entrypoint.sh run
against the installed package. tests/test_installed.py builds and installs the package as the
image does.

    .venv/bin/python -m pytest tests/test_container.py -q
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import image
import pytest
from image import SRC, checkout_files, context, instructions, layout, package_files

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def args_defaults(ins: list[tuple[str, str]]) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in ins if k == "ARG" and "=" in a)


def expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def lock_pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", path.read_text(), re.M))


# ---- the Dockerfile -----------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["cuda", "cpu"])
def test_every_base_image_is_pinned_by_digest(variant: str) -> None:
    ins = instructions()
    values = {**args_defaults(ins), "VARIANT": variant}
    stages: list[str] = []
    for keyword, arg in ins:
        if keyword != "FROM":
            continue
        image, *rest = expand(arg, values).split()
        if image not in stages:
            assert DIGEST.search(image), f"FROM {image} is neither a stage nor pinned by digest"
        if rest:
            stages.append(rest[-1])
    assert stages[-1] == "final"


def test_cuda_base_matches_the_locked_torch_build() -> None:
    base = args_defaults(instructions())["CUDA_BASE"]
    tag = re.search(r"nvidia/cuda:(\d+\.\d+\.\d+)-cudnn-runtime-ubuntu24\.04@", base)
    assert tag, base
    cuda = lock_pins(ROOT / "requirements" / "cuda.lock")
    cpu = lock_pins(ROOT / "requirements" / "cpu.lock")
    assert cuda["cuda-toolkit"].startswith(tag.group(1) + ".")
    assert cuda["torch"] == cpu["torch"].split("+")[0]  # the same release, two builds
    assert cpu["torch"].endswith("+cpu") and "+" not in cuda["torch"]


def test_locks_are_installed_with_hashes_before_the_code() -> None:
    ins = instructions()
    runs = [(i, a) for i, (k, a) in enumerate(ins) if k == "RUN" and "pip install" in a]
    locked = [(i, a) for i, a in runs if "-r " in a]
    assert len(locked) == 1
    index, cmd = locked[0]
    assert "--require-hashes" in cmd and "--no-deps" in cmd and "$REPRO_LOCK_FILE" in cmd
    code = next(i for i, (k, a) in enumerate(ins) if k == "COPY" and a.split()[0] == "repro/")
    assert index < code, "a code change must not reinstall the dependencies"
    package = [a for i, a in runs if i > code]
    assert package and all("--no-deps" in a for a in package)
    envs = " ".join(a for k, a in ins if k == "ENV")
    for name in ("cpu", "cuda"):
        assert f"/opt/repro/requirements/{name}.lock" in envs


@pytest.mark.parametrize("name", ["cpu.lock", "cuda.lock"])
def test_every_locked_package_has_a_hash(name: str) -> None:
    blocks = re.split(r"\n(?=[a-z0-9])", (ROOT / "requirements" / name).read_text())
    reqs = [b for b in blocks if re.match(r"[a-z0-9][a-z0-9._-]*==", b)]
    assert len(reqs) > 50
    for block in reqs:
        assert "--hash=sha256:" in block, block.splitlines()[0]
    assert not re.search(r"^[a-z0-9][a-z0-9._-]*(>=|<=|~=|>|<)", "\n".join(reqs), re.M)


def test_user_volumes_entrypoint_and_labels() -> None:
    ins = instructions()
    keys = [k for k, _ in ins]
    users = [a for k, a in ins if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert max(i for i, k in enumerate(keys) if k == "USER") < keys.index("ENTRYPOINT")
    assert json.loads(dict(ins)["ENTRYPOINT"]) == ["/usr/local/bin/entrypoint.sh"]
    assert json.loads(dict(ins)["CMD"]) == ["all"]
    assert any(k == "COPY" and a.endswith("entrypoint.sh /usr/local/bin/entrypoint.sh")
               for k, a in ins)
    volumes = json.loads(next(a for k, a in ins if k == "VOLUME"))
    assert set(volumes) == {"/cache", "/results"}
    env = " ".join(a for k, a in ins if k == "ENV")
    assert "HF_HOME=/cache/huggingface" in env
    labels = " ".join(a for k, a in ins if k == "LABEL")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f'org.opencontainers.image.licenses="{meta["license"]}"' in labels
    assert "org.opencontainers.image.source=" in labels
    assert args_defaults(ins)["VERSION"] == meta["version"]


def test_no_secret_is_baked_into_a_layer() -> None:
    for keyword, arg in instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"(\w+)=", arg) or [arg.split("=")[0]]
            assert not any(re.search(r"TOKEN|SECRET|PASSWORD|API_KEY", n, re.I) for n in names)
            assert "hf_" not in arg.lower().replace("hf_home", "")


def test_copied_files_exist_and_pass_the_dockerignore() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [p[1:] for p in ignore if p.startswith("!")]
    for keyword, arg in instructions():
        if keyword != "COPY" or "--from" in arg:
            continue
        source = [a for a in shlex.split(arg) if not a.startswith("--")][0]
        assert (ROOT / source).exists(), source
        assert any(source.rstrip("/") == a.rstrip("/") or a.startswith(source) for a in allowed)


def test_hadolint_passes() -> None:
    run = subprocess.run([BIN / "hadolint", "Dockerfile"], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_shellcheck_passes() -> None:
    scripts = ["entrypoint.sh", ".ci/run", *sorted(str(p.relative_to(ROOT))
                                                  for p in (ROOT / "scripts").glob("*.sh"))]
    run = subprocess.run([BIN / "shellcheck", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


# ---- entrypoint.sh ------------------------------------------------------------------------

def entrypoint(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "REPRO_PROFILE")}
    full.update(PATH=f"{path or BIN}:{os.environ['PATH']}", **env)
    return subprocess.run([ROOT / "entrypoint.sh", *args], capture_output=True, text=True,
                          env=full, cwd=ROOT, timeout=120)


def test_help_lists_the_commands() -> None:
    run = entrypoint("--help")
    assert run.returncode == 0
    for command in ("all", "list", "fetch", "doctor", "prune"):
        assert re.search(rf"^\s+{command}\s", run.stdout, re.M), command


def test_list_prints_the_22_runs_of_the_default_profile() -> None:
    run = entrypoint("list", REPRO_PROFILE="tiny")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith(
        "22 runs + 20 control-seed SAEs (17 conditions, 3 models)")
    assert "tiny.toml" in run.stdout


def test_unknown_command_is_one_line_and_exit_2() -> None:
    run = entrypoint("frobnicate")
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1
    assert "frobnicate" in run.stderr and "invalid choice" in run.stderr


@pytest.fixture
def fake_repro(tmp_path: Path) -> Path:
    """A `repro` that prints its pid, arguments and HF_HUB_OFFLINE instead of running."""
    script = tmp_path / "repro"
    script.write_text('#!/usr/bin/env bash\necho "pid=$$"\necho "offline=${HF_HUB_OFFLINE-}"\n'
                      'printf "arg=%s\\n" "$@"\n')
    script.chmod(0o755)
    return tmp_path


def _args(run: subprocess.CompletedProcess) -> list[str]:
    return [line[4:] for line in run.stdout.splitlines() if line.startswith("arg=")]


def test_defaults_are_added_only_where_missing(fake_repro: Path) -> None:
    env = {"REPRO_PROFILE": "paper", "REPRO_OUT": "/results"}
    assert _args(entrypoint(path=str(fake_repro), **env)) == [
        "all", "--profile", "paper", "--out", "/results"]
    assert _args(entrypoint("all", "--out=/x", "--study", "s.toml", path=str(fake_repro),
                            **env)) == ["all", "--out=/x", "--study", "s.toml"]
    assert _args(entrypoint("fetch", path=str(fake_repro), **env)) == [
        "fetch", "--profile", "paper"]
    assert _args(entrypoint("verify", "/results", path=str(fake_repro), **env)) == [
        "verify", "/results"]


def test_runs_offline_except_fetch_and_execs(fake_repro: Path) -> None:
    proc = subprocess.Popen([ROOT / "entrypoint.sh", "list"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PATH": f"{fake_repro}:{os.environ['PATH']}",
                                 "HF_HUB_OFFLINE": ""})
    out, _ = proc.communicate(timeout=30)
    assert f"pid={proc.pid}" in out, "repro must replace the shell (exec) to receive signals"
    assert "offline=1" in entrypoint("all", path=str(fake_repro)).stdout
    assert "offline=\n" in entrypoint("fetch", path=str(fake_repro)).stdout + "\n"
    assert "offline=0" in entrypoint("all", path=str(fake_repro), HF_HUB_OFFLINE="0").stdout


# ---- the build context against what the package reads ------------------------------------

def missing_from_image(files: dict[str, str], ins: list[tuple[str, str]]) -> list[str]:
    """What the package, its build or the image's commands read that the image would lack."""
    need = [f"{SRC}/{f}" for f in package_files()]
    need += [f"{SRC}/{f}" for f in ("pyproject.toml", "setup.py", "README.md", "LICENSE")]
    need += ["/usr/local/bin/entrypoint.sh"]
    for keyword, arg in ins:  # REPRO_LOCK_FILE of both variants, build.lock of the RUN
        if keyword in ("ENV", "RUN"):
            need += re.findall(r"/opt/repro/requirements/[\w.]+\.lock", arg)
    return sorted(set(need) - set(files))


def test_every_tracked_file_of_the_package_is_a_module_or_package_data() -> None:
    """Nothing in repro/ that git tracks is left out of the wheel (a new data folder must be
    declared in pyproject.toml's package-data, or an install would lack it)."""
    tracked = {f for f in checkout_files() if f.startswith("repro/")}
    assert tracked - set(package_files()) == set()
    assert {"repro/expected_outputs/tolerances.toml", "repro/expected_outputs/paper/claims.toml",
            "repro/expected_outputs/tiny/T3_survival.csv", "repro/study/studies/tiny.toml",
            "repro/assets/tiny/SHA256SUMS"} <= set(package_files())


def test_everything_the_package_reads_is_in_the_build_context() -> None:
    ins = instructions()
    files = layout(ins, context(checkout_files(), (ROOT / ".dockerignore").read_text()))
    assert missing_from_image(files, ins) == []
    assert not any("__pycache__" in f or f.startswith(f"{SRC}/repro/REVISION") for f in files)


def test_the_context_check_finds_what_a_dockerignore_drops() -> None:
    """Negative control: a .dockerignore that drops the expected outputs and the README (as
    the image's did) leaves exactly those out, and the check names them."""
    ins = instructions()
    ignore = (ROOT / ".dockerignore").read_text().replace("!README.md\n", "")
    files = layout([(k, a.replace("README.md ", "")) for k, a in ins],
                   context(checkout_files(), ignore + "repro/expected_outputs\n"))
    missing = missing_from_image(files, ins)
    assert f"{SRC}/README.md" in missing
    assert f"{SRC}/repro/expected_outputs/tiny/claims.toml" in missing
    assert all(m == f"{SRC}/README.md" or "/expected_outputs/" in m for m in missing)


def test_dockerignore_rules_follow_docker() -> None:
    """The matcher tests/image.py uses, on the cases the file relies on: `*` then `!` lines
    (last match wins, a parent folder's match covers its files) and `**`."""
    rules = image.ignore_rules("*\n!repro/\nrepro/**/__pycache__\n!requirements/*.lock\n")
    assert image.in_context("repro/study/studies/tiny.toml", rules)
    assert not image.in_context("repro/outputs/__pycache__/x.pyc", rules)
    assert not image.in_context("repro/__pycache__/x.pyc", rules)  # `**/` matches no folder
    assert image.in_context("requirements/build.lock", rules)
    assert not image.in_context("requirements/cpu.in", rules)
    assert not image.in_context(".venv/lib/python3.11/site-packages/repro/cli.py", rules)


UP = re.compile(r"Path\((repro\.)?__file__\)\.resolve\(\)"
                r"((?:\.parent(?!s))*)(?:\.parents\[(\d+)\])?")
ABOVE_THE_PACKAGE = {
    "repro/inputs/doctor.py": "a checkout's requirements/*.lock when REPRO_LOCK_FILE is unset",
    "repro/stages/provenance.py": "a checkout's .git, for the revision (else repro/REVISION)",
}
"""Modules that may look above the package folder, and why: a checkout's files, never needed
by an installed package (the image sets REPRO_LOCK_FILE, the build writes REVISION)."""


def reads_above_the_package(rel: str, source: str) -> list[str]:
    """The `Path(__file__)` expressions of a module that climb out of the package folder."""
    found = []
    for m in UP.finditer(source):
        to_package = 1 if m.group(1) else len(Path(rel).parts) - 1
        up = m.group(2).count(".parent") + (int(m.group(3)) + 1 if m.group(3) else 0)
        if up > to_package:
            found.append(f"{rel}: {m.group(0)}")
    return found


def test_no_module_reads_above_the_package_but_the_checkout_helpers() -> None:
    found = [line for f in package_files() if f.endswith(".py")
             for line in reads_above_the_package(f, (ROOT / f).read_text())]
    assert sorted({line.split(":")[0] for line in found}) == sorted(ABOVE_THE_PACKAGE)
    # negative control: the line that kept the expected outputs out of the image
    old = 'EXPECTED_ROOT = Path(repro.__file__).resolve().parent.parent / "expected_outputs"'
    assert reads_above_the_package("repro/outputs/expected.py", old)
    assert not reads_above_the_package("repro/outputs/expected.py",
                                       old.replace(".parent.parent", ".parent"))
    assert reads_above_the_package("repro/stages/run.py", "Path(__file__).resolve().parents[2]")
    assert not reads_above_the_package("repro/stages/run.py", "Path(__file__).resolve().parents[1]")


# ---- the lock: wheels, and sdists built only against hash-checked files --------------------

def lock_entries(text: str, names: tuple[str, ...]) -> str:
    """The requirement lines (pin and hashes, no comments) of `names` in a lock's text."""
    keep, out = False, []
    for line in text.splitlines():
        if re.match(r"[a-z0-9]", line):
            keep = line.split("==")[0] in names
        if keep and not line.strip().startswith("#"):
            out.append(line)
    return "\n".join(out)


BACKEND = ("setuptools", "wheel")


def test_build_lock_is_both_locks_build_backend() -> None:
    build = (ROOT / "requirements" / "build.lock").read_text()
    assert sorted(lock_pins(ROOT / "requirements" / "build.lock")) == sorted(BACKEND)
    for name in ("cpu.lock", "cuda.lock"):
        assert lock_entries(build, BACKEND) == lock_entries(
            (ROOT / "requirements" / name).read_text(), BACKEND), name


@pytest.mark.parametrize("where", ["Dockerfile", "scripts/setup.sh"])
def test_the_build_backend_goes_in_first_and_sdists_build_against_it(where: str) -> None:
    """Every install of a lock runs after build.lock's (hash-checked, wheels only) and without
    build isolation, so pip fetches no unhashed setuptools to build the lock's sdists."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / where).read_text())
    installs = re.findall(r"pip install [^\n&]*", text)
    locks = [i for i in installs if re.search(r"-r \S*(cpu\.lock|cuda\.lock|REPRO_LOCK_FILE)", i)]
    backend = [i for i in installs if "build.lock" in i]
    assert locks and len(backend) == 1
    assert "--require-hashes" in backend[0] and "--only-binary :all:" in backend[0]
    assert text.index(backend[0]) < min(text.index(i) for i in locks)
    for cmd in locks:
        assert "--require-hashes" in cmd and "--no-build-isolation" in cmd, cmd


TOOLKIT_VERSIONED = ("cuda-bindings", "nvidia-nvjitlink", "nvidia-cuda-runtime",
                     "nvidia-cuda-nvrtc", "nvidia-cuda-cupti", "nvidia-nvtx")
"""CUDA parts numbered by the toolkit release they belong to (cuBLAS, cuFFT and the other
libraries have their own numbers, which cuda-toolkit pins exactly)."""


def cuda_mismatches(pins: dict[str, str]) -> list[str]:
    release = ".".join(pins["cuda-toolkit"].split(".")[:2])
    return [f"{n}=={pins[n]}" for n in TOOLKIT_VERSIONED
            if not pins[n].startswith(release + ".")]


def test_cuda_parts_of_the_lock_belong_to_the_base_images_toolkit() -> None:
    pins = lock_pins(ROOT / "requirements" / "cuda.lock")
    assert cuda_mismatches(pins) == []
    planted = {**pins, "nvidia-nvjitlink": "13.5.37", "cuda-bindings": "13.5.0"}  # as it was
    assert cuda_mismatches(planted) == ["cuda-bindings==13.5.0", "nvidia-nvjitlink==13.5.37"]
