"""A run folder that lacks runs: what ran, what did not, and the comparison of what finished.

`repro all --runs ...` or `--shard I/N` can leave runs unfinished; the analysis, tables,
figures and claims need every run, so they wait. Until then `repro all`, `repro verify` and
`repro report` say the same thing about such a folder: which runs finished, which did not,
the PARTIAL verdict of the rows that can already be compared, and the command that finishes
the rest (exit code 3; 1 when a compared row already fails).

What "compare what finished" means: a row of the expected tables is compared when every
stage its numbers are read from has finished, in every replicate (an expected value is a
mean over replicates), and it is computed by the analysis's own code for that row:

    T1 (a variant)        prune and perplexity of the variant, perplexity of its dense model
    T2 (a model)          sae of each of the model's dense seeds
    T3 (a condition)      sae of the condition's run and of its model's dense run, and of
                          both control-seed runs when the study has a control seed
    T4 (model, pattern,   T3's stages for the Wanda and the magnitude condition
        sparsity)
    T5 (a variant)        evaluate of the variant's run
    T6 (a condition)      T3's stages, and evaluate of the condition's and the dense run

Each such row is compared cell by cell with the expected row, within the same tolerances as
`repro verify`. The claims, the sanity gates and the file integrity need the whole study and
are not compared. Nothing is written but verification.json and verification.md, which the
complete run's verification replaces.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from repro.errors import ReproError
from repro.files import atomic_write_text, write_json
from repro.outputs.check import Check, Verdict
from repro.outputs.expected import expected_dir, load_tolerances, tolerances_path
from repro.stages import layout
from repro.stages.store import read_manifest
from repro.study.methods import UNSTRUCTURED
from repro.study.spec import Run, Study, Variant

PARTIAL_EXIT = 3
"""`repro all`, `repro verify`: the run is unfinished and nothing compared failed."""
STUDY_STAGES = (layout.ANALYSIS_DIR, layout.TABLES_DIR, layout.FIGURES_DIR,
                layout.METHOD_CONTROLS_DIR)


@dataclass(frozen=True)
class Unit:
    """Rows of one table that come from one variant, model or (model, pattern, sparsity)."""

    table: str
    key: Any
    needs: tuple[str, ...]
    """Stage folders under the run folder that must have finished, every replicate."""


def _sae(run: Run | None) -> list[str]:
    return [] if run is None else [layout.run_part(run.id, "sae")]


def units(study: Study, replicate: int) -> list[Unit]:
    """Every unit of rows of one replicate with the stages it needs (the table above)."""
    from repro.outputs.analysis import Analysis

    a = Analysis(study, Path("."), replicate=replicate)
    out = []
    for v in study.variants:
        dense = Variant(v.model, "dense", 0.0)
        out.append(Unit("T1_pruning", v, (layout.variant_part(v, "prune"),
                                          layout.variant_part(v, "perplexity"),
                                          layout.variant_part(dense, "perplexity"))))
        out.append(Unit("T5_transfer", v, (layout.run_part(a.condition_run(v).id, "evaluate"),)))
    for model in study.models:
        out.append(Unit("T2_seed_stability", model,
                        tuple(s for r in a.dense_seeds(model) for s in _sae(r))))
    t3: dict[Variant, tuple[str, ...]] = {}
    for v in study.conditions:
        dense = Variant(v.model, "dense", 0.0)
        t3[v] = tuple(_sae(a.dense_run(v.model)) + _sae(a.condition_run(v))
                      + _sae(a.control_run(dense)) + _sae(a.control_run(v)))
        out.append(Unit("T3_survival", v, t3[v]))
        out.append(Unit("T6_fragility_causal", v, t3[v] + (
            layout.run_part(a.condition_run(v).id, "evaluate"),
            layout.run_part(a.dense_run(v.model).id, "evaluate"))))
    for v in study.conditions:
        other = Variant(v.model, "magnitude", v.sparsity, v.pattern)
        if v.method == "wanda" and other in t3:
            out.append(Unit("T4_ratios", (v.model, v.pattern, v.sparsity), t3[v] + t3[other]))
    return out


def comparable(study: Study, run_dir: Path) -> list[Unit]:
    """The units (as replicate 0 names them) whose stages finished in every replicate."""
    done: dict[str, bool] = {}

    def finished(path: str) -> bool:
        if path not in done:
            done[path] = read_manifest(run_dir / path) is not None
        return done[path]

    per_replicate = [units(study, r) for r in range(study.verdict.replicates)]
    return [u for u, *others in zip(*per_replicate, strict=True)
            if all(finished(p) for x in (u, *others) for p in x.needs)]


def _rows(a: Any, chosen: list[Unit]) -> dict[str, list[dict]]:
    """One replicate's rows of the chosen units, by the analysis's own code, study order."""
    keys = {(u.table, u.key) for u in chosen}

    def pick(table: str) -> list[Any]:
        return [k for (name, k) in keys if name == table]

    out: dict[str, list[dict]] = {}
    if pick("T1_pruning"):
        ids = {v.id for v in pick("T1_pruning")}
        out["T1_pruning"] = [r for r in a.t1_pruning() if r["id"] in ids]
    out["T2_seed_stability"] = [r for m in a.study.models if m in pick("T2_seed_stability")
                                for r in a.seed_rows(m)]
    t3 = [a.survival_row(v) for v in a.study.conditions if v in pick("T3_survival")]
    out["T3_survival"] = t3
    pairs = set(pick("T4_ratios"))
    out["T4_ratios"] = [r for r in a.t4_ratios(t3)
                        if (r["model"], r.get("pattern", UNSTRUCTURED), r["sparsity"]) in pairs]
    out["T5_transfer"] = [a.transfer_row(v) for v in a.study.variants
                          if v in pick("T5_transfer")]
    out["T6_fragility_causal"] = [a.fragility_row(v) for v in a.study.conditions
                                  if v in pick("T6_fragility_causal")]
    return {k: v for k, v in out.items() if v}


def partial_tables(study: Study, run_dir: Path) -> dict[str, list[dict]]:
    """The comparable rows, as means over the replicates like the tables stage writes them."""
    from repro.outputs.analysis import Analysis
    from repro.outputs.replicates import combine_tables

    chosen = comparable(study, run_dir)
    if not chosen:
        return {}
    per = [_rows(Analysis(study, run_dir, replicate=r), chosen)
           for r in range(study.verdict.replicates)]
    return combine_tables(per)[0]


def _as_table(rows: list[dict]) -> Any:
    """Rows as `repro verify` reads a CSV: text cells, exactly as the tables stage writes."""
    from repro.outputs.tables import to_csv
    from repro.outputs.verify import Table

    lines = list(csv.reader(io.StringIO(to_csv(rows))))
    return Table(lines[0], {line[0]: dict(zip(lines[0], line, strict=True))
                            for line in lines[1:]}, [])


def compare(tables: dict[str, list[dict]], exp_dir: Path, profile: str,
            tolerances: Path | None = None) -> tuple[list[Check], dict[str, list[str]], int]:
    """Cell checks of the computed rows against the same rows of the expected tables; also
    the ids compared per table and the number of expected rows in all."""
    from repro.outputs.verify import Table, compare_tables, read_table

    tols = load_tolerances(tolerances or tolerances_path(exp_dir), profile)
    checks: list[Check] = []
    compared: dict[str, list[str]] = {}
    total = 0
    for path in sorted(exp_dir.glob("*.csv")):
        exp = read_table(path)
        total += len(exp.rows)
        rows = tables.get(path.stem)
        if not rows:
            continue
        got = _as_table(rows)
        mine = Table(exp.columns, {k: r for k, r in exp.rows.items() if k in got.rows}, [])
        checks += compare_tables(path.stem, mine, got, tols)
        compared[path.stem] = list(got.rows)
    return checks, compared, total


def _stages_done(run_dir: Path, run: Run) -> list[str]:
    stages = ("sae", "evaluate") if run.is_evaluated else ("sae",)
    return [s for s in stages if read_manifest(layout.run_dir(run_dir, run, s)) is not None]


def progress(study: Study, run_dir: Path) -> dict[str, list[str]]:
    """Runs finished (last stage done), partly done (an earlier stage), not started, and the
    study-level stages not done."""
    out: dict[str, list[str]] = {"finished": [], "partly": [], "not_started": []}
    for run in study.runs:
        done = _stages_done(run_dir, run)
        last = "evaluate" if run.is_evaluated else "sae"
        out["finished" if last in done else "partly" if done else "not_started"].append(run.id)
    out["study_stages"] = [s for s in STUDY_STAGES if read_manifest(run_dir / s) is None]
    return out


def finish_command(run_dir: Path, study_path: Path | None = None,
                   expected: Path | None = None) -> str:
    """The `repro all` that completes this folder: the study it ran (a shipped profile when
    the folder's study.toml is one), the folder as --out, no --runs or --shard."""
    from repro.study.reader import PROFILES_DIR

    text = (run_dir / layout.STUDY_FILE).read_text(encoding="utf-8")
    profile = next((p.stem for p in sorted(PROFILES_DIR.glob("*.toml"))
                    if p.read_text(encoding="utf-8") == text), None)
    which = (f"--profile {profile}" if profile else
             f"--study {study_path}" if study_path else "--study YOUR_STUDY.toml")
    more = f" --expected {expected}" if expected else ""
    return f"repro all {which} --out {run_dir}{more}"


def _runs(n: int) -> str:
    return f"{n} run" + ("" if n == 1 else "s")


def _shown(ids: list[str], n: int = 4) -> str:
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def verify_partial(run_dir: Path, study: Study, expected: Path | None = None,
                   command: str | None = None, tolerances: Path | None = None
                   ) -> dict[str, Any]:
    """Compare what finished, write verification.json/.md, return the result (its
    `exit_code`: 1 when a compared cell fails, else PARTIAL_EXIT)."""
    state = progress(study, run_dir)
    exp_dir, profile = expected_dir(run_dir, expected)
    if expected is not None and not exp_dir.is_dir():
        raise ReproError(f"--expected {expected}: no such folder; pass the folder of expected "
                         "tables or leave the option out")
    if tolerances is not None and not tolerances.is_file():
        raise ReproError(f"--tolerances {tolerances}: no such file; pass an existing "
                         "tolerances.toml or leave the option out")
    checks: list[Check] = []
    compared: dict[str, list[str]] = {}
    total = None
    if exp_dir.is_dir():
        checks, compared, total = compare(partial_tables(study, run_dir), exp_dir, profile,
                                          tolerances)
    failed = sum(c.verdict == Verdict.FAIL for c in checks)
    result = {"run_dir": str(run_dir.resolve()), "expected_dir": str(exp_dir),
              "profile": profile, "partial": True, "ok": False,
              "exit_code": 1 if failed else PARTIAL_EXIT, "progress": state,
              "n_runs": len(study.runs), "compared": compared, "expected_rows": total,
              "counts": {Verdict.PASS: sum(c.verdict == Verdict.PASS for c in checks),
                         Verdict.FAIL: failed, Verdict.INCONCLUSIVE: 0,
                         Verdict.UNCHECKED: sum(c.verdict == Verdict.UNCHECKED for c in checks),
                         Verdict.INFO: 0},
              "finish": command or finish_command(run_dir, expected=expected),
              "checks": [asdict(c) for c in checks]}
    result["line"] = headline(result)
    write_json(run_dir / "verification.json", result)
    atomic_write_text(run_dir / "verification.md", markdown(result))
    return result


def headline(result: dict[str, Any]) -> str:
    """`verification PARTIAL: N of M runs finished, ...` (FAIL when a compared cell fails)."""
    done, n = len(result["progress"]["finished"]), result["n_runs"]
    word = "FAIL" if result["counts"][Verdict.FAIL] else "PARTIAL"
    if result["expected_rows"] is None:
        return (f"verification {word}: {done} of {n} runs finished; no expected outputs to "
                f"compare with at {result['expected_dir']}")
    rows = sum(len(v) for v in result["compared"].values())
    per = ", ".join(f"{t} {len(v)}" for t, v in result["compared"].items())
    return (f"verification {word}: {done} of {n} runs finished, {rows} of "
            f"{result['expected_rows']} expected rows compared" + (f" ({per})" if per else "")
            + f": {result['counts']['pass']} cells pass, {result['counts']['fail']} fail; "
            "the claims need every run")


def lines(result: dict[str, Any]) -> list[str]:
    """What ran, what did not, and how to finish: the lines under the headline."""
    p = result["progress"]
    out = [f"ran: {_runs(len(p['finished']))}" + (f" ({_shown(p['finished'])})"
                                                 if p["finished"] else "")]
    if p["partly"]:
        out.append(f"partly: {_runs(len(p['partly']))} with an SAE but no evaluation yet "
                   f"({_shown(p['partly'])})")
    pending = [*p["partly"], *p["not_started"]]
    stages = ", ".join(p["study_stages"]) or "none"
    out.append(f"not finished: {_runs(len(pending))} ({_shown(pending)}) and the study-level "
               f"stages ({stages})" if pending else
               f"not finished: the study-level stages ({stages})")
    return out + [f"finish with: {result['finish']} (it resumes: finished stages are kept)"]


def summary(result: dict[str, Any], max_failures: int = 20) -> str:
    """What `repro all` and `repro verify` print for an unfinished run folder."""
    bad = [c for c in result["checks"] if c["verdict"] == Verdict.FAIL]
    out = [result["line"], *(f"  {line}" for line in lines(result))]
    out += [f"  FAIL {c['name']}: expected {c['expected']}, got {c['got']} [{c['tolerance']}]"
            for c in bad[:max_failures]]
    return "\n".join(out + [f"  details: {result['run_dir']}/verification.md"])


def markdown(result: dict[str, Any]) -> str:
    """verification.md of an unfinished run: the headline, progress, rows compared."""
    out = ["# Verification: PARTIAL" if result["exit_code"] == PARTIAL_EXIT
           else "# Verification: FAIL (partial)", "", f"- {result['line']}",
           *(f"- {line}" for line in lines(result)), "",
           "Compared: the rows of the expected tables whose every input stage has finished "
           "(repro/outputs/partial.py says which stages each table reads); the claims and "
           "the other rows need every run.", ""]
    for table, ids in result["compared"].items():
        out += [f"## {table}", "", *(f"- {i}" for i in ids), ""]
    bad = [c for c in result["checks"] if c["verdict"] == Verdict.FAIL]
    if bad:
        out += [f"## Failures ({len(bad)})", ""]
        out += [f"- {c['name']}: expected {c['expected']}, got {c['got']} [{c['tolerance']}]"
                for c in bad]
    return "\n".join(out) + "\n"


def is_partial(run_dir: Path) -> Study | None:
    """The run's study when the folder lacks runs or study-level stages, else None (complete,
    or not a `repro all` folder whose study can be read)."""
    from repro.study.reader import load_study

    if not (run_dir / layout.STUDY_FILE).is_file():
        return None
    try:
        study = load_study(run_dir / layout.STUDY_FILE)
    except ReproError:
        return None
    state = progress(study, run_dir)
    return study if state["partly"] or state["not_started"] or state["study_stages"] else None

