"""The package as it is built and installed: a wheel and an sdist from the image's build
folder, and (slow) the package installed as the image installs it, outside the checkout,
running the tiny profile to its verdict from two install locations (tests/installed.py,
docs/container.md).

    .venv/bin/python -m pytest tests/test_installed.py -q   (-m "not slow": seconds)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from image import ROOT, build_folder, package_files

# ---- the package as a wheel and an sdist ---------------------------------------------------

def _backend(hook: str, source: Path, out: Path, **env: str) -> Path:
    """Call setuptools' PEP 517 hook in `source` (offline, the locked setuptools)."""
    out.mkdir(parents=True, exist_ok=True)
    full = {k: v for k, v in os.environ.items() if k != "REPRO_REVISION"} | env
    run = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta "
                          f"as b; print(b.{hook}(sys.argv[1]))", str(out)], cwd=source,
                         capture_output=True, text=True, env=full, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return out / run.stdout.strip().splitlines()[-1]


def _wheel_files(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as wheel:
        return {n: wheel.read(n) for n in wheel.namelist() if ".dist-info/" not in n
                or n.endswith(("/METADATA", "/LICENSE"))}


def test_wheel_and_sdist_carry_the_package_data_readme_license_and_revision(
        tmp_path: Path) -> None:
    """The image's build folder gives a wheel and an sdist; the wheel built from that sdist
    holds the same files; both have every module and data file, the revision given at build
    time, the README (as the description) and the LICENSE. Without a revision (no git, none
    given) there is no REVISION file, and the package reports its bare version."""
    src = build_folder(tmp_path / "src")
    direct = _wheel_files(_backend("build_wheel", src, tmp_path / "w1", REPRO_REVISION="abc1"))
    sdist = _backend("build_sdist", src, tmp_path / "sd", REPRO_REVISION="abc1")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = tmp_path / "unpacked" / sdist.name.removesuffix(".tar.gz")
    via_sdist = _wheel_files(_backend("build_wheel", unpacked, tmp_path / "w2"))
    assert direct.keys() == via_sdist.keys()
    assert set(package_files()) <= direct.keys()
    assert direct["repro/REVISION"] == via_sdist["repro/REVISION"] == b"abc1\n"
    meta = next(v for k, v in direct.items() if k.endswith("/METADATA")).decode()
    readme = (ROOT / "README.md").read_text()
    assert readme.splitlines()[0] in meta and len(meta) > len(readme)
    assert next(v for k, v in direct.items() if k.endswith("/LICENSE")) == (
        ROOT / "LICENSE").read_bytes()
    bare = _wheel_files(_backend("build_wheel", src, tmp_path / "w3"))
    assert "repro/REVISION" not in bare and (set(direct) - set(bare)) == {"repro/REVISION"}


# ---- the installed package, as the image runs it (slow: the session's tiny run) ------------

def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


@pytest.mark.slow
def test_the_installed_package_runs_the_tiny_profile_to_its_verdict(installed_tiny,
                                                                   tmp_path: Path) -> None:
    """`docker run repro:cpu` on the image's install, outside the checkout, ends `verification
    PASS`; `verify` and `report` on its folder work there too; `doctor` finds the installed
    expected outputs; the revision is in `repro --version`, every manifest and a bless."""
    from installed import entrypoint

    from repro.stages.provenance import code_version

    inst, work = installed_tiny, tmp_path / "work"
    assert inst.run.returncode == 0, inst.run.stderr[-3000:] + inst.run.stdout[-3000:]
    assert "verification PASS" in inst.run.stdout
    site = _site_packages(inst.venv)
    where = subprocess.run([str(inst.venv / "bin" / "python"), "-c",
                            "import repro; print(repro.__file__)"], cwd=work.parent,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(site / "repro" / "__init__.py") and not inst.venv.is_relative_to(ROOT)
    verify = entrypoint(inst.venv, "verify", str(inst.out), cwd=work)
    assert verify.returncode == 0 and "verification PASS" in verify.stdout, verify.stdout
    claims = [c["name"] for c in json.loads((inst.out / "verification.json").read_text())[
        "checks"] if c["kind"] == "claim"]
    assert {"C1", "C2", "C3", "C4"} <= set(claims)  # the paper's claims, each with a verdict
    report = entrypoint(inst.venv, "report", str(inst.out), cwd=work)
    assert report.returncode == 0 and (inst.out / "report.html").stat().st_size > 10_000
    doctor = entrypoint(inst.venv, "doctor", cwd=work, REPRO_PROFILE="tiny",
                        REPRO_OUT=str(inst.out))
    assert doctor.returncode == 0, doctor.stdout
    assert f"OK   expected outputs: {site / 'repro' / 'expected_outputs' / 'tiny'}: 6 blessed" \
           in doctor.stdout
    version = entrypoint(inst.venv, "--version", cwd=work)
    assert version.stdout == f"repro {code_version()}\n" == f"repro 0.1.0+{inst.revision}\n"
    recorded = {json.loads(p.read_text())["provenance"]["code_version"]
                for p in inst.out.rglob("manifest.json")}
    assert recorded == {code_version()}
    bless = entrypoint(inst.venv, "bless", str(inst.out), "--expected", str(tmp_path / "b"),
                       "--allow-dirty", cwd=work)
    assert bless.returncode == 0, bless.stderr
    blessed = json.loads((tmp_path / "b" / "PROVENANCE.json").read_text())
    assert blessed["code_version"] == code_version()


@pytest.mark.slow
def test_outputs_do_not_depend_on_where_the_package_is_installed(installed_tiny,
                                                                 tmp_path: Path) -> None:
    """A second install elsewhere redoes part of the run (tests/installed.py: REDONE and every
    study-level stage) and finds the rest done; every file it rewrote equals the first
    install's; neither run holds an install's, the checkout's or a home folder's path. A path
    planted into one cfg.json fails both checks (negative control)."""
    from installed import REDONE, differences, leaked, output_files, rerun_elsewhere, rewritten

    first = installed_tiny
    out, run = rerun_elsewhere(first, tmp_path / "another" / "place")
    assert run.returncode == 0 and "verification PASS" in run.stdout, run.stderr[-3000:]
    redone = rewritten(first.out, out)
    assert sorted(output_files(out)) == sorted(output_files(first.out))
    study_level = [r for r in redone if r.split("/")[0] not in ("tokens", "variants", "runs")]
    assert {r.split("/")[0] for r in study_level} >= {"analysis", "tables", "figures",
                                                      "report.html", "verification.json"}
    assert sorted(set(redone) - set(study_level)) == sorted(
        r for r in output_files(out) if r.startswith(REDONE))  # nothing else was redone
    assert any(r.endswith("sae/cfg.json") for r in redone)
    assert any(r.endswith("evaluate/transfer.json") for r in redone)
    assert differences(first.out, out, redone) == []
    places = [first.venv, out.parent / "second-venv", first.build, ROOT,
              first.out.parent / "work", out.parent / "work"]
    assert leaked(first.out, places) == [] and leaked(out, places) == []
    cfg = next(r for r in redone if r.endswith("sae/cfg.json"))  # negative control
    planted = json.loads((out / cfg).read_text())
    planted["model_name"] = str(_site_packages(first.venv) / "repro" / "assets" / "x")
    (out / cfg).unlink()  # a hard link no more: the first run keeps its file
    (out / cfg).write_text(json.dumps(planted))
    assert differences(first.out, out, redone) == [cfg]
    assert leaked(out, places) == [f"{cfg}: {first.venv}"]
