"""The container without a Docker engine: the Dockerfile parsed and linted, the lock files
checked, and entrypoint.sh run against the installed package.

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

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        buf += " " + line[:-1] if line.endswith("\\") else " " + line
        if not line.endswith("\\"):
            keyword, _, args = buf.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            buf = ""
    return out


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
