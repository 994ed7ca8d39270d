"""The six figures of the paper, drawn from a run's analysis outputs:
`python -m repro.outputs.figures RUN_DIR [OUT_DIR]` (OUT_DIR defaults to RUN_DIR/figures).

Reads RUN_DIR/analysis/tables.json and features.npz (see repro.outputs.analysis) and writes each
figure as PNG (200 dpi) and PDF, plus captions.json ({figure stem: caption}) for the report. A run
with fewer conditions than the full study (one model, one method, NaNs) still gets all six figures;
panels without data say so.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repro.files import write_json
from repro.outputs import figures_beyond
from repro.outputs.figure_style import (
    DOUBLE,
    GREY,
    RC,
    SINGLE,
    RunData,
    blank,
    bottom_legend,
    finite_pairs,
    handles,
    load_run,
    method_colour,
    methods_of,
    new_figure,
    note,
    num,
    pct,
    ramp_colour,
    rho_text,
    rows_by,
    save,
    sparsity_axis,
    sparsity_xy,
)
from repro.outputs.figures_rq45 import Drawn, f5_fragility, f6_causal_vs_survival
from repro.science.survival import survival_rate
from repro.stages import layout
from repro.study.reader import load_study
from repro.study.spec import Study

if TYPE_CHECKING:
    from matplotlib.axes import Axes

BIN_LABELS = ("1\nrarest", "2", "3", "4", "5\nmost\nfrequent")


def f1_seed_stability(d: RunData) -> Drawn:
    from matplotlib.lines import Line2D

    fig = new_figure(DOUBLE, 2.7)
    ax_h, ax_t = fig.subplots(1, 2)
    taus, items = np.linspace(0, 1, 201), []
    pairs = d.rows("T2_seed_stability")
    for i, row in enumerate(pairs):
        cos = finite_pairs(d.feature(f"{row.get('id')}|matched_cosine"))[0]
        if cos.size == 0:
            continue
        colour, marker = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9")[i % 4], d.marker(row["model"])
        ax_h.hist(cos, bins=np.linspace(0, 1, 41), histtype="step", color=colour, lw=1.2)
        shared = [survival_rate(cos, tau) for tau in taus]
        ax_t.plot(taus, shared, color=colour, marker=marker, markevery=20)
        items.append(Line2D([], [], color=colour, marker=marker, label=(
            f"{row['model']}: seed {row.get('seed_a')} vs {row.get('seed_b')} "
            f"(shared {num(row.get('shared_fraction')):.2f})")))
    for ax in (ax_h, ax_t):
        ax.set_xlim(0, 1)
        if items:
            ax.axvline(d.tau, color=GREY, ls=":", lw=1)
    if items:
        ax_t.annotate(f"τ = {d.tau:g}", (d.tau, 1.0), xytext=(3, 0), textcoords="offset points",
                      fontsize=7, color=GREY, va="top")
    ax_h.set(title="(a) Matched-cosine distribution", ylabel="Features (count)",
             xlabel="Matched decoder cosine (Hungarian, one-to-one)")
    ax_t.set(title="(b) Shared fraction vs threshold", xlabel="Threshold τ (cosine)",
             ylabel="Shared fraction (cosine ≥ τ)", ylim=(0, 1.03))
    if not items:
        note(ax_h, "no seed pairs in this run")
        note(ax_t, "no seed pairs in this run")
    bottom_legend(fig, items, ncol=min(len(items), 3))
    fig.suptitle("RQ1: seed stability of dense SAEs")
    return fig, (
        "RQ1 seed stability. (a) Distribution of the Hungarian-matched decoder cosine between "
        "dense SAEs trained with different seeds; (b) fraction of features shared (matched "
        f"cosine ≥ τ) as the threshold τ varies; dotted line: τ = {d.tau:g}, the threshold "
        f"used throughout. {len(items)} seed pair(s).")


def f2_survival_vs_sparsity(d: RunData) -> Drawn:
    from matplotlib.lines import Line2D

    rows = d.rows("T3_survival")
    models = list(dict.fromkeys(r["model"] for r in rows)) or ["(none)"]
    fig = new_figure(SINGLE if len(models) == 1 else DOUBLE, 2.9)
    axes = np.atleast_1d(fig.subplots(1, len(models), sharey=True))
    for ax, model in zip(axes, models, strict=True):
        mine = [r for r in rows if r["model"] == model]
        for method in methods_of(mine):
            pts = [r for r in mine if r.get("method") == method]
            c, m = method_colour(method), d.marker(model)
            ax.plot(*sparsity_xy(pts, "survival"), color=c, marker=m)
            ax.plot(*sparsity_xy(pts, "survival_max_cosine"), color=c, marker=m, ls="--",
                    mfc="white")
        sparsity_axis(ax)
        ax.set(title=model, ylim=(0, 1.03))
        if blank(mine, "survival", "survival_max_cosine"):
            note(ax, "no survival values" if mine else "no pruned conditions in this run",
                 clear=False)
    axes[0].set_ylabel(f"Survival rate (fraction, cosine ≥ {d.tau:g})")
    styles = [Line2D([], [], color=GREY, label="one-to-one matched"),
              Line2D([], [], color=GREY, ls="--", mfc="white", marker="o",
                     label="max cosine (not one-to-one)")]
    bottom_legend(fig, handles(d, methods_of(rows), []) + styles)
    fig.suptitle("RQ2: feature survival vs sparsity")
    return fig, (
        "RQ2 feature survival vs sparsity: fraction of the dense SAE's alive features whose "
        f"matched decoder cosine in the pruned model's SAE is ≥ τ = {d.tau:g}; solid: one-to-one "
        "(Hungarian) matching, dashed with hollow markers: best match without the one-to-one "
        "constraint. Colour: pruning method; marker: model.")


def _f3_panel(ax: Axes, d: RunData, pts: list[dict], top: float) -> None:
    from matplotlib.lines import Line2D

    controlled = False
    for r in pts:
        y = [num(r.get(f"survival_bin{i}")) for i in range(1, 6)]
        colour = ramp_colour(r["method"], r.get("sparsity"), top)
        ax.plot(range(1, 6), y, color=colour,
                marker=d.marker(r["model"]), label=f"{pct(r.get('sparsity'))}, "
                f"{rho_text(r.get('binned_rho'))}")
        control = [num(r.get(f"survival_control_bin{i}")) for i in range(1, 6)]
        if any(math.isfinite(v) for v in control):  # the seed control, no shared init
            ax.plot(range(1, 6), control, color=colour, ls="--", lw=0.9)
            controlled = True
    lines, labels = ax.get_legend_handles_labels()
    if controlled:  # the line styles, so that the dashed lines are not left to the caption
        lines += [Line2D([], [], color=GREY, ls="-"), Line2D([], [], color=GREY, ls="--",
                                                                 lw=0.9)]
        labels += ["dense SAE's seed", "control seed"]
    ax.legend(lines, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), handlelength=1.6,
              title="sparsity, binned ρ", title_fontsize=7, borderaxespad=0.2)


def f3_survival_by_frequency(d: RunData) -> Drawn:
    rows = d.rows("T3_survival")
    models = list(dict.fromkeys(r["model"] for r in rows)) or ["(none)"]
    methods = methods_of(rows) or ["(none)"]
    top = max([num(r.get("sparsity")) for r in rows if math.isfinite(num(r.get("sparsity")))],
              default=0.6)
    fig = new_figure(SINGLE if len(methods) == 1 else DOUBLE, 0.7 + 1.8 * len(models))
    axes = np.atleast_2d(fig.subplots(len(models), len(methods), sharex=True, sharey=True))
    groups = rows_by(rows, "model", "method")
    for i, model in enumerate(models):
        for j, method in enumerate(methods):
            ax, pts = axes[i, j], groups.get((model, method), [])
            ax.set_title(f"{model} · {method}")
            ax.set(xticks=range(1, 6), xticklabels=BIN_LABELS, ylim=(0, 1.03), xlim=(0.7, 5.3))
            if pts:
                _f3_panel(ax, d, pts, top)
            bins = [f"survival_bin{k}" for k in range(1, 6)]
            if blank(pts, *bins):
                note(ax, f"no {method} condition" if not pts else "no survival values",
                     clear=False)
    fig.supxlabel("Firing-rate quintile of the dense SAE's alive features", fontsize=8)
    fig.supylabel(f"Survival rate (fraction, cosine ≥ {d.tau:g})", fontsize=8)
    fig.suptitle("RQ2 / C1: survival by firing-rate quintile")
    strict = sum(1 for r in rows if num(r.get("binned_rho")) == -1.0)
    control = sum(1 for r in rows if num(r.get("binned_rho_control")) == -1.0)
    has_control = any(math.isfinite(num(r.get("binned_rho_control"))) for r in rows)
    return fig, (
        "Headline (C1): survival rate (matched cosine ≥ τ = "
        f"{d.tau:g}) per firing-rate quintile of the dense SAE's alive features, one line per "
        "condition, darker for higher sparsity; legends give the Spearman ρ of quintile rank "
        f"vs survival rate (ρ = −1: strictly rarer survives more). {strict} of {len(rows)} "
        "conditions have ρ = −1.0 (paper: 11 of 17)."
        + (" Dashed: the same against the pruned model's SAE trained from the control seed, "
           f"which shares no initialisation with the dense SAE ({control} of {len(rows)} "
           "with ρ = −1.0)." if has_control else ""))


def _f4_lines(ax: Axes, d: RunData, rows: list[dict], metric: str, stand_in: bool) -> None:
    dense = [r for r in rows if r.get("method") == "dense"]
    for method in methods_of(rows) or ["dense"]:
        pts = dense + [r for r in rows if r.get("method") == method and r not in dense]
        c, m = method_colour(method), d.marker(rows[0]["model"])
        ax.plot(*sparsity_xy(pts, f"dense_{metric}"), color=c, marker=m)
        ax.plot(*sparsity_xy(pts, f"pretrained_{metric}"), color=c, marker=m, ls="--",
                mfc="white" if stand_in else c)


def f4_transferability(d: RunData) -> Drawn:
    from matplotlib.lines import Line2D

    rows, viable = d.rows("T5_transfer"), d.thresholds.viable_ce_score
    models = list(dict.fromkeys(r["model"] for r in rows)) or ["(none)"]
    fig = new_figure(SINGLE if len(models) == 1 else DOUBLE, 4.4)
    axes = fig.subplots(2, len(models), sharex=True, sharey="row", squeeze=False)
    metrics = (("ce_loss_score", "CE-loss score"), ("explained_variance", "Explained variance"))
    for j, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        stand_in = any(bool(r.get("pretrained_is_stand_in")) for r in mine)
        for i, (key, label) in enumerate(metrics):
            ax = axes[i, j]
            if i == 0:
                ax.axhline(viable, color=GREY, ls=":", lw=1)
                ax.set_title(model + ("\n(pre-trained SAE = stand-in)" if stand_in else ""))
            if mine:
                _f4_lines(ax, d, mine, key, stand_in)
            if blank(mine, f"dense_{key}", f"pretrained_{key}"):
                note(ax, "no values" if mine else "no runs", clear=False)
            sparsity_axis(ax, label=i == 1)
            if j == 0:
                ax.set_ylabel(f"{label} (fraction)")
    items = handles(d, methods_of(rows), []) + [
        Line2D([], [], color=GREY, marker="o", label="dense-trained SAE"),
        Line2D([], [], color=GREY, marker="o", ls="--", label="pre-trained SAE"),
        Line2D([], [], color=GREY, marker="o", ls="--", mfc="white",
               label="stand-in for pre-trained"),
        Line2D([], [], color=GREY, ls=":", label=f"viable: CE score ≥ {viable:g}")]
    bottom_legend(fig, items, ncol=4)
    fig.suptitle("RQ3: SAE transferability to pruned models")
    return fig, (
        "RQ3 transferability: CE-loss score (top; 1 = SAE reconstruction costs nothing, 0 = as bad "
        "as zero-ablating the layer) and explained variance (bottom) of the dense-trained SAE "
        "(solid) and the public pre-trained SAE (dashed) on each pruned model; 0 % is the dense "
        f"model. Dotted: viability threshold (CE-loss score {viable:g}). Hollow markers: no "
        "public SAE exists, the dense-trained SAE stands in. Survival threshold elsewhere: "
        f"τ = {d.tau:g}.")


FIGURES: dict[str, Callable[[RunData], Drawn]] = {
    "F1_seed_stability": f1_seed_stability,
    "F2_survival_vs_sparsity": f2_survival_vs_sparsity,
    "F3_survival_by_frequency": f3_survival_by_frequency,
    "F4_transferability": f4_transferability,
    "F5_fragility": f5_fragility,
    "F6_causal_vs_survival": f6_causal_vs_survival,
}


def write_figures(run_dir: Path, out_dir: Path, study: Study | None) -> dict[str, str]:
    """Draw the six figures of run_dir into out_dir (PNG + PDF) with the study's thresholds
    (the defaults for None), and those beyond the paper whose table the run has
    (repro.outputs.figures_beyond); return {stem: caption}."""
    import matplotlib

    data = load_run(run_dir, study)
    out_dir.mkdir(parents=True, exist_ok=True)
    captions: dict[str, str] = {}
    beyond = {stem: draw for stem, (table, draw) in figures_beyond.FIGURES.items()
              if data.tables.get(table)}
    with matplotlib.rc_context(RC):
        for stem, draw in {**FIGURES, **beyond}.items():
            fig, caption = draw(data)
            save(fig, out_dir, stem)
            captions[stem] = caption
    write_json(out_dir / layout.CAPTIONS_JSON, captions)
    return captions


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        raise SystemExit("usage: python -m repro.outputs.figures RUN_DIR [OUT_DIR]")
    run_dir = Path(args[0])
    study_file = run_dir / layout.STUDY_FILE
    study = load_study(study_file) if study_file.is_file() else None
    out_dir = Path(args[1]) if len(args) == 2 else run_dir / layout.FIGURES_DIR
    out = write_figures(run_dir, out_dir, study)
    print("\n".join(sorted(out)))


if __name__ == "__main__":
    main()
