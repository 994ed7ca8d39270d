"""Build hook: the code revision goes into the built package as repro/REVISION.

Everything else about the package is declared in pyproject.toml. A checkout reads its revision
from git at run time (repro.stages.provenance.code_version); an installed package has no git,
so the build writes the revision into the package, from (first that gives one):

1. REPRO_REVISION in the environment: the image's build passes its REVISION build argument
   (`docker build --build-arg REVISION="$(git describe --always --dirty --abbrev=12)"`);
2. `git describe --always --dirty --abbrev=12` when the source folder is a checkout's root (a
   wheel built from the checkout);
3. the REVISION file already in the source folder (a wheel built from an sdist, which got it
   from 1 or 2 when the sdist was made).

With none of these the package has no REVISION file and reports its bare version.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
FILE = "REVISION"


def revision() -> str | None:
    """The revision this build packages (see the module docstring for the order)."""
    given = os.environ.get("REPRO_REVISION", "").strip()
    if given:
        return given
    if (HERE / ".git").exists():  # a checkout's root; .git is a file in a git worktree
        try:
            run = subprocess.run(["git", "-C", str(HERE), "describe", "--always", "--dirty",
                                  "--abbrev=12"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            run = None
        if run is not None and run.returncode == 0 and run.stdout.strip():
            return run.stdout.strip()
    shipped = HERE / "repro" / FILE
    if shipped.is_file():
        return shipped.read_text(encoding="utf-8").strip() or None
    return None


def _write(package_dir: Path) -> None:
    """REVISION in a built copy of the package: this build's revision, never a stale one left
    in a reused build folder, and never written through a hard link into the sources."""
    target = package_dir / FILE
    target.unlink(missing_ok=True)
    rev = revision()
    if rev:
        package_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(rev + "\n", encoding="utf-8")


class BuildPy(build_py):
    """build_py, then the revision into the built package (never into the source tree)."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install is a checkout: git answers there
            _write(Path(self.build_lib) / "repro")


class Sdist(sdist):
    """sdist with the revision in its copy of the package, for wheels built from it."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        _write(Path(base_dir) / "repro")


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
