"""The pruning methods side by side, from a finished run with several methods and patterns.

`python scripts/method_comparison.py RUN_DIR --out DIR` (e.g. RUN_DIR = runs/beyond) writes
DIR/method_comparison.{png,pdf} and prints a Markdown table, one row per condition: the
perplexity; feature survival under the paper's protocol and under the seed control, each
with its standard deviation over replicates and its ratio to magnitude pruning at the same
sparsity and pattern (C2's ratio, for every method); the firing-rate effect on survival
(binned Spearman rho, -1 when rarer features survive better in every bin: C1); the fraction
of fragile features; the dense-trained SAE's CE-loss score on the pruned model. Everything is
read from the run's analysis (means over replicates, analysis/tables.json and spread.json);
nothing is recomputed. The six paper figures stay as they are; this one adds the methods.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from repro.outputs.figure_style import (
    DOUBLE,
    GREY,
    RC,
    bottom_legend,
    load_run,
    method_colour,
    method_rank,
    new_figure,
    num,
    save,
)
from repro.study.methods import UNSTRUCTURED

PATTERN_HATCH = {UNSTRUCTURED: None}
"""Bars of N:M conditions are hatched."""


def spreads(run_dir: Path) -> dict[tuple[str, str, str], float]:
    """(table, row id, column) -> standard deviation over replicates."""
    path = run_dir / "analysis" / "spread.json"
    if not path.is_file():
        return {}
    cells = json.loads(path.read_text())["cells"]
    return {(c["table"], c["id"], c["column"]): num(c["sd"]) for c in cells}


def _bins(row: dict, prefix: str) -> list[float]:
    """A T3 row's per-bin survival, bin 1 (rarest) first; 10 sorts after 9."""
    keys = [k for k in row if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return [num(row[k]) for k in sorted(keys, key=lambda k: int(k[len(prefix):]))]


def conditions(run_dir: Path) -> list[dict]:
    """One record per condition, joined over T1, T3, T5 and T6, ordered by method then pattern."""
    data = load_run(run_dir)
    sd = spreads(run_dir)
    by = {name: {r["id"]: r for r in data.rows(name)} for name in
          ("T1_pruning", "T3_survival", "T5_transfer", "T6_fragility_causal")}
    out = []
    for cid, t3 in by["T3_survival"].items():
        t1, t5, t6 = by["T1_pruning"][cid], by["T5_transfer"][cid], by["T6_fragility_causal"][cid]
        out.append({
            "id": cid, "model": t3["model"], "method": t3["method"],
            "pattern": t3.get("pattern", UNSTRUCTURED), "sparsity": num(t3["sparsity"]),
            "perplexity": num(t1["perplexity"]), "dense_perplexity": num(t1["dense_perplexity"]),
            "survival": num(t3["survival"]),
            "survival_sd": sd.get(("T3_survival", cid, "survival"), math.nan),
            "survival_control": num(t3.get("survival_control")),
            "survival_control_sd": sd.get(("T3_survival", cid, "survival_control"), math.nan),
            "seed_floor": num(t3.get("seed_floor")),
            "binned_rho": num(t3["binned_rho"]), "binned_rho_control":
            num(t3.get("binned_rho_control")),
            "bins": _bins(t3, "survival_bin"),
            "bins_control": _bins(t3, "survival_control_bin"),
            "fragile_fraction": num(t6["fragile_fraction"]),
            "ce_loss_score": num(t5["dense_ce_loss_score"]),
        })
    out.sort(key=lambda r: (r["model"], r["sparsity"], method_rank(r["method"]),
                            r["pattern"] != UNSTRUCTURED, r["pattern"]))
    for r in out:  # C2's ratio for every method: survival over magnitude's, same everything else
        mag = next((m for m in out if m["method"] == "magnitude" and m["model"] == r["model"]
                    and m["pattern"] == r["pattern"] and m["sparsity"] == r["sparsity"]), None)
        for key in ("survival", "survival_control"):
            r[f"{key}_vs_magnitude"] = (r[key] / mag[key] if mag and mag[key] > 0
                                        else math.inf if mag and r[key] > 0 else math.nan)
    return out


def table(rows: list[dict]) -> str:
    """The conditions as a Markdown table, survival as mean ± sd over replicates."""
    cols = ["id", "perplexity", "survival", "vs magnitude", "survival (control)",
            "vs magnitude (control)", "seed floor", "binned rho", "binned rho (control)",
            "fragile", "CE-loss score"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["id"], f"{r['perplexity']:.4g}",
            f"{r['survival']:.3f} ± {r['survival_sd']:.3f}", f"{r['survival_vs_magnitude']:.3g}",
            f"{r['survival_control']:.3f} ± {r['survival_control_sd']:.3f}",
            f"{r['survival_control_vs_magnitude']:.3g}", f"{r['seed_floor']:.3f}",
            f"{r['binned_rho']:+.2f}", f"{r['binned_rho_control']:+.2f}",
            f"{r['fragile_fraction']:.3f}", f"{r['ce_loss_score']:.3f}"]) + " |")
    return "\n".join(lines) + "\n"


def _bars(ax, rows: list[dict], key: str, sd_key: str | None = None) -> None:
    for i, r in enumerate(rows):
        err = r.get(sd_key) if sd_key else None
        ax.bar(i, r[key], color=method_colour(r["method"]), edgecolor="white",
               hatch=PATTERN_HATCH.get(r["pattern"], "////"),
               yerr=err if err is not None and math.isfinite(err) else None,
               error_kw={"lw": 0.8, "capsize": 2})
    ax.set_xticks(range(len(rows)), [f"{r['method']}\n{r['pattern']}" for r in rows],
                  rotation=0, fontsize=6)


def figure(rows: list[dict], out: Path) -> None:
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    with matplotlib.rc_context(RC):
        fig = new_figure(DOUBLE, 5.2)
        (ax_p, ax_s), (ax_c, ax_b) = fig.subplots(2, 2)
        _bars(ax_p, rows, "perplexity")
        ax_p.set_yscale("log")
        ax_p.axhline(rows[0]["dense_perplexity"], color=GREY, ls="--", lw=0.8)
        ax_p.set_title("(a) Perplexity (dashed: dense)")
        _bars(ax_s, rows, "survival", "survival_sd")
        ax_s.set_title("(b) Survival, paper protocol (shared seed)")
        _bars(ax_c, rows, "survival_control", "survival_control_sd")
        ax_c.axhline(rows[0]["seed_floor"], color=GREY, ls="--", lw=0.8)
        ax_c.set_title("(c) Survival, seed control (dashed: seed-to-seed floor)")
        for ax in (ax_s, ax_c):
            tops = [num(r[k]) for r in rows for k in ("survival", "survival_control")]
            ax.set_ylim(0, max(0.05, 1.15 * max((t for t in tops if math.isfinite(t)),
                                                default=1)))
            ax.set_ylabel("fraction of alive dense features")
        for r in rows:
            bins = r["bins_control"] or r["bins"]
            ax_b.plot(range(1, len(bins) + 1), bins, color=method_colour(r["method"]),
                      ls="-" if r["pattern"] == UNSTRUCTURED else "--", marker="o")
        ax_b.set_xlabel("firing-rate bin of the dense feature (1 = rarest)")
        ax_b.set_ylabel("survival")
        ax_b.set_title("(d) Survival by firing rate, seed control (C1: falling = rare survive)")
        methods = list(dict.fromkeys(r["method"] for r in rows))
        items = [Patch(color=method_colour(m), label=m) for m in methods]
        items += [Patch(facecolor="white", edgecolor=GREY, hatch="////", label="2:4 (bars)"),
                  Line2D([], [], color=GREY, ls="--", label="2:4 (lines)")]
        bottom_legend(fig, items)
        fig.suptitle(f"{rows[0]['model']}: pruning methods and patterns at "
                     f"{rows[0]['sparsity']:.0%} (means over replicates, bars ± sd)")
        out.mkdir(parents=True, exist_ok=True)
        save(fig, out, "method_comparison")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the figure")
    args = parser.parse_args()
    rows = conditions(args.run_dir)
    figure(rows, args.out)
    print(table(rows), end="")


if __name__ == "__main__":
    main()
