"""How output files name the places a run read from: the same for every install.

A study file names its local inputs relative to itself and the reader resolves them to
absolute paths; the shipped profiles' models and SAEs live inside the package, so those paths
lead into site-packages, an image's /opt/venv or a checkout. An output file that records such a
path goes through `recorded_path`, which writes a path inside the package as `repro/...` (the
same bytes wherever the package is installed). Any other path is the user's own (a model
folder of theirs) and is kept as given.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

PACKAGE_DIR = Path(__file__).resolve().parents[1]
"""The installed (or checked-out) `repro` package folder."""


def recorded_path(path: str | Path) -> str:
    """`path` as an output file records it: `repro/<path inside the package>` for the
    package's own files, anything else unchanged (relative paths, Hub ids, `package:` names)."""
    given = Path(path)
    if not given.is_absolute():
        return str(path)
    try:
        inside = given.resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return str(path)
    return str(PurePosixPath(PACKAGE_DIR.name, *inside.parts))
