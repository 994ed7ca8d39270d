"""The report's first screen: what this run says about the paper's claims, in a table that a
reviewer who reads nothing else cannot misread (repro.outputs.report renders the rest).

From top to bottom: on a CPU profile a banner that says what such a run can and cannot show
about the paper; the one decisive line (repro.outputs.verify_text.headline); one row per
claim with the paper's statement, the paper's number, this run's value and 95 % interval,
and the two answers, each in its own column (does the paper's claim hold here? does this run
match the profile's blessed run, within its band?); a legend of every column and word; one
line per model on the quality of its SAEs; and the SAEs whose training had not flattened,
folded away. Numbers are rounded to what they mean: values and intervals to 3 significant
digits, bands to 2, counts as integers.
"""

from __future__ import annotations

import html
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.outputs import report_curves, sae_quality
from repro.outputs.check import Kind, Verdict
from repro.stages import layout

BANNERS = {
    "tiny": ("a check of the code, not a test of the paper. Its tiny models were trained by "
             "this project on text it generates, so whether the paper's claims hold on them "
             "says nothing about the paper. What it shows: every stage runs and the numbers "
             "match this profile's blessed run, which is the verdict."),
    "small": ("real pretrained models (SmolLM2-135M, Gemma 3 270M) on the CPU, with small SAEs "
              "(2,048 latents) trained on Shakespeare: far below the paper's scale (1-2B "
              "models, 16k-latent SAEs, web text), so its answers on the paper's claims are "
              "indicative only. The verdict is agreement with this profile's blessed run."),
}
"""What each CPU profile can and cannot show about the paper."""
OTHER_CPU_BANNER = ("a study whose verdict is agreement with its own blessed run: a check "
                    "that the pipeline gives the numbers it gave before, not a reproduction of "
                    "the paper at the paper's scale.")
VERDICTS = set(Verdict)
FIELD_WORDS = {"abs_rho_ci_high": "the largest upper 95 % bound of |ρ| over conditions",
               "value": "the value"}
"""How the report names the field of claims.json a claim reads, when it is not `value`."""
MEASURES = {
    "C1": "conditions whose Spearman ρ of firing-rate quintile vs survival rate is −1.0",
    "C1_of": "conditions C1 counts over",
    "C2": "largest Wanda / magnitude survival ratio over model and sparsity (T4)",
    "C3": "highest sparsity up to which every Wanda level is viable with the pre-trained SAE",
    "C4": "largest upper 95 % bound of |ρ(causal importance, survival)| over conditions",
    "C4_per_firing": "as C4, with causal importance per token on which the feature fires",
    "C1_control": "as C1, against the pruned models' control-seed SAEs",
    "C2_control": "as C2, against the pruned models' control-seed SAEs",
}
"""What each claim's number is, for the legend."""
HEADER = ["claim", "the paper says", "paper", "this run (95 % interval)",
          "holds here?", "matches the blessed run?"]


def value_text(x: Any, digits: int = 3) -> str:
    """A number rounded to what it means: integers as integers, else `digits` significant."""
    if x is None or isinstance(x, bool):
        return "—" if x is None else str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "—"
        if x.is_integer() and abs(x) < 1e9:
            return str(int(x))
        return f"{x:.{digits}g}"
    return str(x)


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def small_text(x: float, digits: int = 2) -> str:
    """A band or margin to 2 significant digits, powers of ten written as such (1.0×10⁻⁶),
    which no browser breaks across lines as it does `1e-06`."""
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.{digits}g}"
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(SUPERSCRIPT)}"


def band_text(tolerance: str, expected: Any) -> str:
    """A check's accepted region, from its tolerance text (`±a`, `x/÷ f`, `>= lo`, `<= hi`): a
    band to 2 significant digits (`11 ± 2`, `1.02 ± 1e-06`, a ratio's `5.7 ×÷ 5.6`: times or
    divided by), a bound as `≥ 0.5`."""
    m = re.fullmatch(r"\s*(±|>=|<=|x/÷)\s*(\S+)\s*", tolerance or "")
    if m is None:
        return tolerance or "—"
    sign, number = m.groups()
    try:
        amount = float(number)
    except ValueError:
        return tolerance
    if sign == "x/÷":
        return f"{value_text(expected)} ×÷ {small_text(amount)}"
    if sign == "±":
        return f"{value_text(expected)} (exact)" if amount == 0 else \
            f"{value_text(expected)} ± {small_text(amount)}"
    return f"{'≥' if sign == '>=' else '≤'} {value_text(amount, 4)}"


@dataclass(frozen=True)
class ClaimRow:
    """One claim on the first screen, every cell already text."""

    name: str
    statement: str
    """The paper's statement, up to its first colon (the rest is in `full`)."""
    full: str
    paper: str
    value: str
    value_note: str
    """What the number is when it is not the claim's plain value (C4's CI bound)."""
    reproduction: str
    reproduction_note: str
    agreement: str
    agreement_note: str


def _paper_specs() -> dict[str, Any]:
    """The paper's claims (repro/expected_outputs/paper/claims.toml), by name, in file order."""
    from repro.outputs.expected import BASE_CLAIMS_PROFILE, EXPECTED_ROOT, load_claims

    return {s.name: s for s in load_claims(EXPECTED_ROOT / BASE_CLAIMS_PROFILE)}


def _paper_text(spec: Any) -> str:
    """The paper's number and accepted region, as `band_text` writes a check's."""
    from repro.outputs.verify_claims import region

    low, high = region(spec)
    if spec.compare == "near":
        return band_text(f"±{spec.tolerance.allowance(spec.expected)!r}", spec.expected)
    return band_text(f">= {low!r}" if spec.compare == "at_least" else f"<= {high!r}",
                     spec.expected)


def _value(check: dict[str, Any], entry: dict[str, Any]) -> str:
    got, iv = check.get("got"), check.get("interval")
    text = value_text(got)
    if isinstance(entry.get("of"), int | float) and check.get("name") in ("C1", "C1_control"):
        text += f" of {value_text(entry['of'])}"
    if iv and iv[0] != iv[1]:
        text += f" [{value_text(iv[0])}, {value_text(iv[1])}]"
    return text


def _value_note(name: str, field: str, entry: dict[str, Any]) -> str:
    if field not in FIELD_WORDS or field == "value" or field not in entry:
        return ""  # a plain value, a count (C1_of's `of`), or nothing measured yet
    point = entry.get("value")
    return (f"{FIELD_WORDS.get(field, field)}; its point estimate: "
            f"{value_text(point) if isinstance(point, int | float) else '—'}")


def claim_rows(verification: dict[str, Any] | None, claims: dict[str, Any]) -> list[ClaimRow]:
    """One row per claim: both answers when `repro verify` has run, else the run's numbers."""
    checks = (verification or {}).get("checks", [])
    unanswered = "NOT YET" if (verification or {}).get("partial") else "NOT VERIFIED"
    reproduced = {c["name"]: c for c in checks if c["kind"] == Kind.REPRODUCTION}
    agreed = {c["name"]: c for c in checks if c["kind"] == Kind.CLAIM}
    specs = _paper_specs()
    names = list(dict.fromkeys([*reproduced, *agreed])) or list(specs)
    rows = []
    for name in names:
        r, a = reproduced.get(name, {}), agreed.get(name, {})
        spec = specs.get(name)
        field = spec.field if spec else "value"
        entry = claims.get(spec.claim if spec else name)
        entry = entry if isinstance(entry, dict) else {}
        shown = r or a or {"name": name, "got": entry.get(field)}
        full = str(r.get("statement") or a.get("statement") or (spec.statement if spec else ""))
        missing = "—" if reproduced or agreed else unanswered
        agreement = str(a["verdict"]).upper() if a else missing
        rows.append(ClaimRow(
            name, full.split(": ")[0], full,
            band_text(r["tolerance"], r["expected"]) if r else (
                _paper_text(spec) if spec else "—"),
            _value(shown, entry), _value_note(name, field, entry),
            str(r["verdict"]).upper() if r else missing,
            _short(r.get("detail", "")) or ("needs every run" if missing == "NOT YET" else ""),
            agreement,
            "; ".join(x for x in (f"blessed {band_text(a['tolerance'], a['expected'])}",
                                  _short(a.get("detail", ""))) if x) if a else "",
        ))
    return rows


def _short(detail: str) -> str:
    """A check's detail without what the table already says (`1 replicate: no interval`)."""
    parts = [p for p in str(detail or "").split("; ") if p and "replicate" not in p]
    return "; ".join(parts)


def read_study(run_dir: Path) -> dict[str, Any]:
    """The run's study.toml as a plain dict ({} when absent or unreadable)."""
    try:
        raw = tomllib.loads((run_dir / layout.STUDY_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}
    return raw if isinstance(raw, dict) else {}


def study_table(study: dict[str, Any], key: str) -> dict[str, Any]:
    """A table of the study file ([study], [verdict]); {} when it is missing or not a table."""
    table = study.get(key)
    return table if isinstance(table, dict) else {}


def banner(study: dict[str, Any]) -> str | None:
    """What a CPU profile can and cannot show about the paper; None for a GPU study decided
    by reproduction (the paper profile)."""
    meta = study_table(study, "study")
    verdict = study_table(study, "verdict")
    decides = verdict.get("decides", "agreement")
    if meta.get("device", "cpu") != "cpu" and decides != "agreement":
        return None
    name = str(meta.get("name") or "this")
    return f"The {name} profile is " + BANNERS.get(name, OTHER_CPU_BANNER)


def legend(decides: str, replicates: int) -> list[tuple[str, str]]:
    """(term, meaning) for every column and word of the claims table."""
    deciding = ("holds here?" if decides == "reproduction" else "matches the blessed run?")
    interval = ("the 95 % t-interval of the mean over the run's "
                f"{replicates} replicates (SAEs retrained from other seeds)" if replicates > 1
                else "none: the run has 1 replicate, so the value is a single measurement")
    return [
        ("the paper says", "the paper's claim, shortened (hover it for the whole sentence)"),
        ("paper", "the paper's number and the region this project accepts as agreeing with it "
                  "(± a tolerance, or a bound ≥ / ≤); from "
                  "repro/expected_outputs/paper/claims.toml"),
        ("this run", f"the number this run measured for the claim (its mean); interval: "
                     f"{interval}"),
        ("holds here?", "does the paper's claim hold in this run? HOLDS: the whole interval "
                        "lies in the paper's region; DOES NOT HOLD: none of it does; UNDECIDED: "
                        "it straddles the bound, or evidence the claim requires is missing "
                        "(the note says which); INFO: a control the paper has no number for"),
        ("matches the blessed run?", "does this run agree with the stored expected outputs of "
                                     "its profile? PASS: within the blessed value ± its band "
                                     "(the spread measured between runs, 2 significant "
                                     "digits); FAIL: the whole interval is outside; "
                                     "INCONCLUSIVE: the mean is outside but the interval "
                                     "reaches the band, or the band is too wide to tell the "
                                     "finding from its opposite; counts as a failure"),
        ("verdict", f"the column “{deciding}” decides this profile's verdict and exit code "
                    "(0 pass, 1 fail; 3 partial, 2 bad input); the other is reported beside it"),
        *((name, words) for name, words in MEASURES.items()),
        ("SAE quality", sae_quality.LEGEND),
    ]


# ---- rendering ------------------------------------------------------------------------------

def markdown(headline: str, rows: list[ClaimRow], decides: str, replicates: int,
             the_banner: str | None, quality: list[str], curves: dict, gain: float) -> list[str]:
    """The first screen as Markdown lines: banner, verdict, claims table, legend, SAE quality."""
    out = [headline, ""]
    out += [f"> **What this run can show.** {the_banner}", ""] if the_banner else []
    out += ["## Claims", "", "| " + " | ".join(HEADER) + " |", "|---" * len(HEADER) + "|"]
    for r in rows:
        cells = [r.name, r.statement, r.paper,
                 r.value + (f" ({r.value_note})" if r.value_note else ""),
                 r.reproduction + (f" ({r.reproduction_note})" if r.reproduction_note else ""),
                 r.agreement + (f" ({r.agreement_note})" if r.agreement_note else "")]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if quality:
        out += ["", "**SAE quality**: " + "; ".join(quality) + "."]
    warned = report_curves.warnings(curves, gain)
    if warned:
        out += ["", "<details><summary>" + html.escape(report_curves.summary_line(curves, gain)
                                                      or "") + "</summary>", ""]
        out += [f"- {line}" for line in warned] + ["", "</details>"]
    out += ["", "Legend:", ""]
    return out + [f"- **{term}**: {words}" for term, words in legend(decides, replicates)] + [""]


def _cell(label: str, text: str, note: str = "", cls: str = "", title: str = "") -> str:
    attrs = f' data-label="{html.escape(label)}"'
    attrs += f' class="{cls}"' if cls else ""
    attrs += f' title="{html.escape(title)}"' if title else ""
    small = f'<span class="note">{html.escape(note)}</span>' if note else ""
    return f"<td{attrs}>{html.escape(text)}{small}</td>"


def _verdict_class(text: str) -> str:
    word = text.lower()
    return ("verdict " + word.replace(" ", "-")) if word in VERDICTS else "verdict"


def html_parts(headline: str, rows: list[ClaimRow], decides: str, replicates: int,
               the_banner: str | None, quality: list[str], curves: dict, gain: float,
               figures: dict[str, str]) -> list[str]:
    """The first screen as HTML, `headline` already HTML (the report wraps it in
    <section id="first-screen">, which tests/test_report_browser.py measures)."""
    parts = [f'<p class="headline">{headline}</p>']
    parts += [f'<div class="banner"><b>What this run can show.</b> '
              f'{html.escape(the_banner)}</div>'] if the_banner else []
    parts.append("<h2>Claims</h2>")
    decisive = 4 if decides == "reproduction" else 5
    classes = {2: "num", 3: "num", decisive: "decides"}
    head = "".join(f'<th{f" class={classes[i]}" if i in classes else ""}>{html.escape(h)}'
                   + ('<span class="note">decides the verdict</span>' if i == decisive else "")
                   + "</th>" for i, h in enumerate(HEADER))
    body = []
    for r in rows:
        name = html.escape(r.name)
        link = f'<a href="#{html.escape(figures[r.name])}">{name}</a>' if r.name in figures \
            else name
        body.append(f'<tr data-claim="{name}"><td data-label="claim" class="name">{link}</td>'
                    + _cell(HEADER[1], r.statement, cls="says", title=r.full)
                    + _cell(HEADER[2], r.paper, cls="num")
                    + _cell(HEADER[3], r.value, r.value_note, cls="num")
                    + _cell(HEADER[4], r.reproduction, r.reproduction_note,
                            cls=_verdict_class(r.reproduction))
                    + _cell(HEADER[5], r.agreement, r.agreement_note,
                            cls=_verdict_class(r.agreement)) + "</tr>")
    parts.append(f'<div class="claims-wrap"><table class="claims"><thead><tr>{head}</tr></thead>'
                 f'<tbody>{"".join(body)}</tbody></table></div>')
    if quality:
        parts.append('<p class="quality"><b>SAE quality</b>: '
                     + "; ".join(html.escape(q) for q in quality) + ".</p>")
    warned = report_curves.warnings(curves, gain)
    if warned:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warned)
        parts.append(f'<details class="unflattened"><summary>'
                     f'{html.escape(report_curves.summary_line(curves, gain) or "")}</summary>'
                     f"<ul>{items}</ul></details>")
    terms = "".join(f"<dt>{html.escape(t)}</dt><dd>{html.escape(w)}</dd>"
                    for t, w in legend(decides, replicates))
    return parts + [f'<details class="legend" open><summary>Legend</summary><dl>{terms}</dl>'
                    "</details>"]


CSS = """.banner{background:#fff6d6;border:1px solid #e0c25a;padding:.5em .8em;margin:.8em 0}
.headline{font-weight:600}table.claims{width:auto;font-size:.92em}
table.claims th{vertical-align:bottom;text-align:left}table.claims th.num{text-align:right}
table.claims td{vertical-align:top;text-align:left}table.claims td.num{text-align:right}
table.claims td.says{min-width:14em;max-width:30em}table.claims td.num,
table.claims td.verdict,table.claims td.name{white-space:nowrap}
.note{display:block;font-size:.8em;font-weight:normal;color:#555;white-space:normal;
max-width:22em}th .note{color:#176117}th.decides{background:#e6f2e6}
.claims-wrap{max-width:100%}.legend dt{font-weight:600;float:left;clear:left;
margin-right:.4em}.legend dt::after{content:":"}.legend dd{margin:0 0 .25em 0}
.legend{font-size:.88em;color:#333;margin:.3em 0 1em}.quality{font-size:.95em}
@media (max-width:720px){table.claims thead{display:none}table.claims,table.claims tbody,
table.claims tr,table.claims td{display:block}table.claims tr{border:1px solid #ccc;
margin:0 0 .6em;padding:.2em .5em}table.claims td,table.claims td.num{border:none;
text-align:left;padding:.1em 0}table.claims td::before{content:attr(data-label) " ";
font-size:.8em;color:#666;font-weight:normal}table.claims td.says{min-width:0}
.legend dt{float:none}}"""
"""The first screen's layout: columns sized to their content (numbers and verdicts never
wrap, the statement wraps), and below 720 px each claim a card of labelled lines."""
