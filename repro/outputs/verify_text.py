"""How a verification result reads: verification.md and the summary `repro verify` prints.

Kept apart from the checks so the checks stay short and the wording can change freely.
verification.json holds every check; the Markdown lists claims and tables in full and
failures up to a cap, because a broken run can fail thousands of cells at once.
"""

from __future__ import annotations

import math
from typing import Any

from repro.outputs import ranges
from repro.outputs.check import Kind, Verdict

MAX_LISTED = 200
FAILING = (Verdict.FAIL, Verdict.INCONCLUSIVE)
"""Agreement verdicts that make a verification fail: INCONCLUSIVE is a failure with its
reason. A reproduction answer other than HOLDS fails only the paper profile's verdict.
UNCHECKED is neither: the bless left nothing to check there, and it is listed on its own."""


def _counts(counts: dict[str, int]) -> str:
    text = f"{counts['pass']} pass, {counts['fail']} fail"
    if counts.get("inconclusive"):
        text += f", {counts['inconclusive']} inconclusive"
    if counts.get("unchecked"):
        text += f", {counts['unchecked']} unchecked (their bands cover every value)"
    return text + (f", {counts['info']} informational" if counts.get("info") else "")


def _reproduction_counts(counts: dict[str, int]) -> str:
    text = (f"{counts['holds']} hold, {counts['does not hold']} do not hold, "
            f"{counts['undecided']} undecided")
    return text + (f", {counts['info']} informational" if counts.get("info") else "")


DECIDES = {"agreement": "agreement with the expected outputs",
           "reproduction": "the paper's claims in this run"}


def failing(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The checks that make this verification fail: agreement failures, and for a profile
    decided by reproduction also the paper's claims that do not hold or are undecided."""
    by_reproduction = result.get("decides") == "reproduction"
    return [c for c in result["checks"] if c["verdict"] in FAILING
            or (by_reproduction and c["verdict"] in (Verdict.DOES_NOT_HOLD, Verdict.UNDECIDED))]


def headline(result: dict[str, Any]) -> str:
    """The one line that ends `repro verify` and `repro all`."""
    decides = result.get("decides", "agreement")
    counts = (_counts(result["counts"]) if decides == "agreement"
              else _reproduction_counts(result["reproduction"]["counts"]))
    return (f"verification {'PASS' if result['ok'] else 'FAIL'} (profile {result['profile']}, "
            f"decided by {DECIDES[decides]}): {counts}")


def interval_text(c: dict[str, Any]) -> str:
    """A claim's value with its interval, as the report and verification.md print it."""
    got, iv = c.get("got"), c.get("interval")
    if not isinstance(got, int | float) or isinstance(got, bool):
        return fmt(got)
    if not iv or iv[0] == iv[1]:
        return f"{got:.4g}"
    return f"{got:.4g} [{iv[0]:.4g}, {iv[1]:.4g}]"


def fmt(value: Any) -> str:
    """Short, stable text for a number or a value; `—` for none."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("|", "\\|")


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(fmt(c) for c in cells) + " |"


def _grid(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows)]


def _failure_line(c: dict[str, Any]) -> str:
    margin = f", margin {fmt(c['margin'])}" if c["margin"] is not None else ""
    detail = f" ({c['detail']})" if c["detail"] else ""
    return (f"{c['name']}: expected {fmt(c['expected'])}, got {fmt(c['got'])} "
            f"[{c['tolerance']}{margin}]{detail}")


def failure_lines(failures: list[dict[str, Any]]) -> list[str]:
    """One line per failing (or unchecked) check, verdict first; the cells that are UNCHECKED
    because their band covers every value (repro.outputs.ranges) folded into one line per
    column."""
    lines: list[str] = []
    folded: dict[str, list[dict[str, Any]]] = {}
    for c in failures:
        if c["kind"] == Kind.CELL and c["verdict"] == Verdict.UNCHECKED:
            column = f"{c['name'].split('[')[0]}.{c['name'].rsplit('.', 1)[-1]}"
            if column not in folded:
                lines.append(column)
            folded.setdefault(column, []).append(c)
        else:
            lines.append(f"{c['verdict'].upper()} {_failure_line(c)}")
    return [_folded_line(line, folded[line]) if line in folded else line for line in lines]


def _folded_line(column: str, cells: list[dict[str, Any]]) -> str:
    bounds = ranges.column_range(column.rsplit(".", 1)[-1]) or (math.nan, math.nan)
    bands = ", ".join(sorted({c["tolerance"] for c in cells}))
    return (f"UNCHECKED {column}: {len(cells)} cell(s) whose band ({bands}) "
            f"{ranges.COVERED} it can take [{bounds[0]:g}, {bounds[1]:g}]: nothing could fail it")


def markdown(result: dict[str, Any]) -> str:
    """The human-readable verification: verdict, claims, tables, integrity, failures."""
    checks, counts = result["checks"], result["counts"]
    verdict = "PASS" if result["ok"] else "FAIL"
    reproduction = result.get("reproduction", {}).get("counts")
    out = [f"# Verification: {verdict}", "",
           f"- {headline(result)}",
           f"- run folder: `{result['run_dir']}`",
           f"- profile: `{result['profile']}`; expected outputs: `{result['expected_dir']}`",
           f"- replicates: {result.get('replicates', 1)} (every number is their mean; a "
           "claim's interval is the 95 % t-interval of that mean)",
           f"- tolerances: `{result['tolerances'] or 'none (every number exact)'}`",
           f"- agreement with the expected outputs: {_counts(counts)}",
           *([f"- the paper's claims in this run: {_reproduction_counts(reproduction)}"]
             if reproduction else []),
           *[f"- numerics: {c['detail']}" for c in checks if c["kind"] == Kind.NUMERICS], "",
           "Margin = allowance - |got - expected| (positive: inside the tolerance).", "",
           "## Sanity gates", ""]
    gates = [c for c in checks if c["kind"] == Kind.SANITY]
    out += (_grid(["gate", "verdict", "range", "run", "source"],
                  [[c["name"], c["verdict"].upper(), c["tolerance"], c["got"], c["detail"]]
                   for c in gates]) if gates else ["None declared for this profile."])
    out += ["", "## The paper's claims in this run (reproduction)", ""]
    out += _grid(["claim", "answer", "paper", "this run [95 % interval]", "accepts", "detail"],
                 [[c["name"], c["verdict"].upper(), c["expected"], interval_text(c),
                   c["tolerance"], c["detail"]]
                  for c in checks if c["kind"] == Kind.REPRODUCTION])
    out += ["", "## Agreement with the expected claims", ""]
    claims = [c for c in checks if c["kind"] == Kind.CLAIM]
    out += (_grid(["claim", "verdict", "expected", "this run [95 % interval]", "band", "margin",
                   "detail"],
                  [[c["name"], c["verdict"].upper(), c["expected"], interval_text(c),
                    c["tolerance"], c["margin"], c["detail"]] for c in claims])
            if claims else ["No blessed claims for this profile: agreement is not asked."])
    out += ["", "## Tables", ""]
    tables = [c for c in checks if c["kind"] == Kind.TABLE]
    if tables:
        out += _grid(["table", "verdict", "expected", "run", "worst margin", "detail"],
                     [[c["name"], c["verdict"], c["expected"], c["got"], c["margin"],
                       c["detail"]] for c in tables])
    else:
        out.append(f"No expected tables for profile `{result['profile']}` yet: only the "
                   "claims were checked.")
    integrity = [c for c in checks if c["kind"] == Kind.INTEGRITY]
    bad = [c for c in integrity if c["verdict"] == Verdict.FAIL]
    out += ["", "## Integrity", "",
            f"{len(integrity) - len(bad)} of {len(integrity)} recorded table files match the "
            "sha256 in tables/manifest.json."]
    failures = failing(result)
    if failures:
        out += ["", f"## Failures ({len(failures)})", ""]
        listed = failure_lines(failures)
        out += [f"- {line}" for line in listed[:MAX_LISTED]]
        if len(listed) > MAX_LISTED:
            out.append(f"- … and {len(listed) - MAX_LISTED} more in verification.json")
    unchecked = [c for c in checks if c["verdict"] == Verdict.UNCHECKED]
    if unchecked:
        out += ["", f"## Unchecked ({len(unchecked)}): bands that cover every value", "",
                "The expected outputs' band for these numbers is wider than anything they can "
                "be (or, for a ratio, wide enough to pass its inverse): no run could fail them, "
                "so they are no check and count neither way. Their spread over the blessed "
                "run's replicates is too large for this profile to decide them.", ""]
        out += [f"- {line}" for line in failure_lines(unchecked)]
    return "\n".join(out) + "\n"


def summary(result: dict[str, Any], max_failures: int = 20) -> str:
    """What `repro verify` prints: one count line per kind, then the first failures."""
    checks = result["checks"]
    lines = [headline(result)]
    for kind, label in ((Kind.SANITY, "sanity gates"), (Kind.TABLE, "tables"),
                        (Kind.CLAIM, "claims agree"), (Kind.REPRODUCTION, "paper's claims here"),
                        (Kind.INTEGRITY, "files")):
        of_kind = [c for c in checks if c["kind"] == kind]
        if of_kind:
            parts = [f"{c['name']} {c['verdict']}" for c in of_kind] \
                if kind in (Kind.CLAIM, Kind.REPRODUCTION) else [
                f"{sum(c['verdict'] == 'pass' for c in of_kind)}/{len(of_kind)} pass"]
            lines.append(f"  {label}: {', '.join(parts)}")
    if not result["expected_tables"]:
        lines.append(f"  tables: none expected yet for profile {result['profile']} "
                     f"(in {result['expected_dir']}); only claims and file integrity checked")
    failures = failing(result)
    listed = failure_lines(failures)
    lines += [f"  {line}" for line in listed[:max_failures]]
    unchecked = failure_lines([c for c in checks if c["verdict"] == Verdict.UNCHECKED])
    if unchecked:
        lines.append(f"  unchecked (no run could fail their bands): {len(unchecked)} "
                     "column(s) and claim(s), listed in verification.md")
    if len(listed) > max_failures:
        lines.append(f"  … and {len(listed) - max_failures} more")
    numerics = next((c for c in checks if c["kind"] == Kind.NUMERICS), None)
    if numerics is not None and "differs" in numerics["detail"]:
        lines.append(f"  numerics: {numerics['detail']}")
    lines.append(f"  details: {result['run_dir']}/verification.md")
    return "\n".join(lines)
