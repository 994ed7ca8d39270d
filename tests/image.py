"""The image without a Docker engine: the Dockerfile's instructions, the build context the
.dockerignore lets through, the files the COPY instructions put where, and the files the
package reads at run time.

Used by tests/test_container.py (what the image holds) and tests/installed.py (the package
installed as the image installs it).
"""

from __future__ import annotations

import glob
import re
import shlex
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
SRC = "/opt/repro/src"
"""Where the Dockerfile assembles the package's build folder before `pip install`."""


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


def _pattern(text: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over a relative path."""
    text = str(PurePosixPath("/" + text.strip()).relative_to("/"))  # filepath.Clean, no slashes
    out, i = "", 0
    while i < len(text):
        if text.startswith("**", i):
            out += ".*"
            i += 2
            if text.startswith("/", i):  # `**/` also matches no folder at all
                out, i = out[:-2] + "(?:.*/)?", i + 1
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) per line of a .dockerignore, in order; `!` lines re-include."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((not negated, _pattern(line[1:] if negated else line)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker sends `path` (relative, with /): the last rule that matches the path or
    one of its parent folders decides, as moby's patternmatcher does."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for excludes, pattern in rules:
        if any(pattern.match(p) for p in prefixes):
            excluded = excludes
    return not excluded


def checkout_files(root: Path = ROOT) -> list[str]:
    """The files a build from this checkout sees: tracked, and untracked ones git does not
    ignore (what a fresh clone plus a developer's new files holds)."""
    run = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True, text=True, check=True)
    return sorted({p for p in run.stdout.split("\0") if p and (root / p).is_file()})


def context(files: list[str], dockerignore: str) -> list[str]:
    """The build context: the files the .dockerignore lets through."""
    rules = ignore_rules(dockerignore)
    return [f for f in files if in_context(f, rules)]


def layout(ins: list[tuple[str, str]], context_files: list[str]) -> dict[str, str]:
    """Image path -> context path for every file a COPY (not --from a stage) puts into the
    image. A missing source is an error, as it is for `docker build`."""
    out: dict[str, str] = {}
    for keyword, arg in ins:
        if keyword != "COPY" or "--from" in arg:
            continue
        *sources, dest = [a for a in shlex.split(arg) if not a.startswith("--")]
        for source in sources:
            src = source.rstrip("/")
            hits = [f for f in context_files if f == src or f.startswith(src + "/")]
            if not hits:
                raise FileNotFoundError(f"COPY {source}: not in the build context")
            for f in hits:
                if f == src:  # a file: into the folder dest/, or onto dest
                    target = dest + PurePosixPath(f).name if dest.endswith("/") else dest
                else:  # a folder: its contents into dest
                    target = dest.rstrip("/") + "/" + f[len(src) + 1:]
                out[target] = f
    return out


def image_files(root: Path = ROOT) -> dict[str, str]:
    """What the checkout's Dockerfile and .dockerignore put into the image."""
    files = context(checkout_files(root), (root / ".dockerignore").read_text())
    return layout(instructions(root / "Dockerfile"), files)


def build_folder(dest: Path, root: Path = ROOT) -> Path:
    """The package's build folder as the image assembles it at SRC, made at `dest`."""
    for target, source in image_files(root).items():
        if target.startswith(SRC + "/"):
            path = dest / target[len(SRC) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes((root / source).read_bytes())
    return dest


def package_install_command(ins: list[tuple[str, str]]) -> str:
    """The RUN that installs the package from SRC, without the cleanup after it."""
    runs = [a for k, a in ins if k == "RUN" and "pip install" in a and SRC in a]
    assert len(runs) == 1, runs
    return runs[0].split("&&")[0].strip()


def package_files(root: Path = ROOT) -> list[str]:
    """The files the package reads at run time, relative to the checkout: its modules and the
    package data pyproject.toml declares (expanded as setuptools expands it)."""
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["repro"]
    data = {f"repro/{p}" for g in globs for p in glob.glob(g, root_dir=root / "repro",
                                                            recursive=True)
            if (root / "repro" / p).is_file()}
    modules = {f for f in checkout_files(root) if f.startswith("repro/") and f.endswith(".py")}
    return sorted(data | modules)
