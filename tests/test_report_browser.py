"""The report's first screen in a real browser: headless Chromium lays out report.html at a
desktop width (1400 px) and a phone width (390 px), takes a screenshot of each, and a small
script measures the page: every claim has its row with no empty cell, nothing in the first
screen is wider than the window, the claims table needs no scrolling, and the unflattened
SAEs are folded away. Planted faults (a very long unbreakable claim value, a claim missing
from the verification) must fail the same measurement.

Needs a Chromium binary (Debian: `apt-get install chromium`; .ci/run installs it); without
one the tests are skipped, saying so. REPRO_CHROMIUM names another binary; with
REPRO_SCREENSHOTS=DIR the screenshots are also copied there to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import runfolder
from browser import Browser, chromium
from runfolder import make_run

from repro.outputs.report import write_report
from repro.outputs.verify import verify_run

WIDTHS = {"desktop": (1400, 1000), "phone": (390, 844)}

pytestmark = pytest.mark.skipif(
    chromium() is None,
    reason="no Chromium binary (chromium, chromium-browser, google-chrome) on PATH: install "
           "Debian's with `apt-get install chromium` (.ci/run does) or set REPRO_CHROMIUM")

MEASURE = """(function () {
  var w = window.innerWidth, screen = document.getElementById("first-screen");
  var wide = [];
  screen.querySelectorAll("*").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > w + 0.5 || r.left < -0.5)) {
      wide.push(el.tagName.toLowerCase() + "." + (el.className || "") + " right=" +
                Math.round(r.right));
    }
  });
  var wrap = document.querySelector(".claims-wrap");
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-claim]"));
  var items = Array.prototype.slice.call(screen.querySelectorAll("details.unflattened li"));
  return {width: w, page: document.documentElement.scrollWidth,
          table: wrap ? wrap.scrollWidth : -1, table_box: wrap ? wrap.clientWidth : -1,
          claims: rows.map(function (tr) { return tr.getAttribute("data-claim"); }),
          empty: rows.reduce(function (n, tr) {
            return n + Array.prototype.filter.call(tr.cells, function (td) {
              return !td.textContent.trim(); }).length; }, 0),
          wide: wide.slice(0, 10), banner: !!screen.querySelector(".banner"),
          legend: screen.querySelectorAll(".legend dt").length,
          unflattened: items.length,
          folded: items.filter(function (li) { return !li.checkVisibility(); }).length};
})()"""
"""What the test measures in the laid-out page (the report itself carries no script)."""


def measure(browser: Browser, report: Path, size: tuple[int, int]) -> dict:
    """Lay out report.html at `size` and return what MEASURE found."""
    browser.open(report, *size)
    return browser.evaluate(MEASURE)


def problems(m: dict, claims: list[str], width: int) -> list[str]:
    """Everything wrong with a first screen measured in a `width` px viewport; empty when it
    reads as intended."""
    out = []
    if m["width"] != width:  # a phone zooms out to fit content wider than its screen
        out.append(f"the window widened to {m['width']} px from {width}")
    if m["claims"] != claims:
        out.append(f"claim rows {m['claims']} instead of {claims}")
    if m["empty"]:
        out.append(f"{m['empty']} empty cells in the claim rows")
    if m["page"] > m["width"]:
        out.append(f"the page is {m['page']} px wide in a {m['width']} px window")
    if m["table"] > m["table_box"]:
        out.append(f"the claims table needs {m['table']} px in a {m['table_box']} px box")
    if m["wide"]:
        out.append(f"wider than the window: {m['wide']}")
    if not m["banner"] or m["legend"] < 6:
        out.append(f"banner {m['banner']}, {m['legend']} legend entries")
    if m["folded"] != m["unflattened"]:
        out.append(f"{m['unflattened'] - m['folded']} unflattened-SAE lines shown unfolded")
    return out


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _curves(run: Path, n: int) -> None:
    """n SAEs whose explained variance still rises at the end: n warnings to fold away."""
    for i in range(n):
        folder = run / "runs" / f"gemma-3-tiny/wanda/{i}" / "sae"
        folder.mkdir(parents=True)
        points = [{"step": s + 1, "tokens": (s + 1) * 100, "explained_variance": 0.02 * s,
                   "l0": 4.0, "dead_fraction": 0.1} for s in range(40)]
        (folder / "curve.json").write_text(json.dumps({"run": str(i), "points": points}))


def _report(tmp: Path, claims: dict | None = None) -> tuple[Path, list[str]]:
    run, expected = make_run(tmp, claims=claims)
    _curves(run, 12)
    result = verify_run(run, expected)
    names = list(dict.fromkeys(c["name"] for c in result["checks"]
                               if c["kind"] in ("claim", "reproduction")))
    return write_report(run)[1], names


def test_the_first_screen_fits_a_desktop_and_a_phone(tmp_path: Path) -> None:
    page, names = _report(tmp_path)
    keep = os.environ.get("REPRO_SCREENSHOTS")
    with Browser(tmp_path / "profile") as browser:
        for label, size in WIDTHS.items():
            m = measure(browser, page, size)
            assert problems(m, names, size[0]) == [], (label, m)
            assert m["unflattened"] == 12
            shot = tmp_path / f"report-{label}.png"
            browser.screenshot(shot)
            assert _png_size(shot) == size and shot.stat().st_size > 10_000
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(keep) / shot.name)


def test_a_planted_overflow_and_a_missing_claim_fail_the_measurement(tmp_path: Path) -> None:
    """Negative controls: a claim value of 400 unbreakable characters overflows the window
    (at both widths); a claim the verification lacks leaves its row missing."""
    claims = json.loads(json.dumps(runfolder.CLAIMS))
    claims["C2"]["value"] = "9" * 400
    long_page, names = _report(tmp_path / "long", claims)
    page, _ = _report(tmp_path / "ok")
    result = json.loads((page.parent / "verification.json").read_text())
    result["checks"] = [c for c in result["checks"] if c["name"] != "C3"]
    (page.parent / "verification.json").write_text(json.dumps(result))
    page = write_report(page.parent)[1]
    with Browser(tmp_path / "profile") as browser:
        for size in WIDTHS.values():
            found = problems(measure(browser, long_page, size), names, size[0])
            assert any(" wide" in p for p in found), found
        found = problems(measure(browser, page, WIDTHS["desktop"]), names, 1400)
    assert found and found[0].startswith("claim rows") and "'C3'" not in found[0].split(
        " instead")[0]
