"""Figures 5 and 6 of the paper, RQ4 and RQ5: how fragile each feature is under compression,
and whether survival predicts a feature's causal weight, at each method's most compressed
condition. The other four and the writer: repro.outputs.figures.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from repro.outputs.figure_style import (
    DOUBLE,
    GREY,
    SINGLE,
    RunData,
    blank,
    finite_pairs,
    handles,
    method_colour,
    method_rank,
    methods_of,
    new_figure,
    note,
    num,
    pct,
    rho_text,
    rows_by,
    sparsity_axis,
    sparsity_xy,
)
from repro.science.survival import alive

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Drawn = tuple["Figure", str]
"""A drawn figure and its caption (repro.outputs.figures writes both)."""


def _most_pruned(rows: list[dict]) -> list[dict]:
    """Per method, the condition with the highest sparsity (first model wins ties)."""
    best: dict[str | None, dict] = {}
    for r in rows:
        m = r.get("method")
        if m not in best or num(r.get("sparsity")) > num(best[m].get("sparsity")):
            best[m] = r
    return [best[m] for m in sorted(best, key=method_rank)]


def _rate_scatter(ax: Axes, d: RunData, row: dict) -> Any:
    from matplotlib.lines import Line2D

    rate, r = finite_pairs(d.feature(f"{row['id']}|pearson_rate"),
                           d.feature(f"{row['id']}|pearson_r"))
    rate, r = rate[alive(rate)], r[alive(rate)]
    c = method_colour(row["method"])
    label = f"{row['model']} {row['method']} {pct(row.get('sparsity'))}"
    if rate.size == 0:
        return None
    ax.scatter(rate, r, s=2, color=c, alpha=0.2, lw=0, rasterized=True)
    edges = np.logspace(np.log10(rate.min()), np.log10(rate.max()) + 1e-9, 13)
    idx = np.digitize(rate, edges) - 1
    mids = [(np.sqrt(edges[k] * edges[k + 1]), np.median(r[idx == k]))
            for k in range(12) if np.any(idx == k)]
    ax.plot(*zip(*mids, strict=True), color=c, lw=1.8, marker=d.marker(row["model"]),
            mec="white", mew=0.5)
    return Line2D([], [], color=c, lw=1.8, marker=d.marker(row["model"]),
                  label=f"{label} (binned median)")


def _silenced(rows: list[dict]) -> str:
    values = [num(r.get("n_silenced")) for r in rows]
    counts = [int(v) for v in values if math.isfinite(v)]
    return (f"{sum(counts)} over {len(counts)} conditions, at most {max(counts)} in one"
            if counts else "none counted")


def f5_fragility(d: RunData) -> Drawn:
    rows, fragile_r = d.rows("T6_fragility_causal"), d.thresholds.fragile_r
    fig = new_figure(DOUBLE, 3.0)
    ax_f, ax_r = fig.subplots(1, 2)
    for (model, method), pts in rows_by(rows, "model", "method").items():
        ax_f.plot(*sparsity_xy(pts, "fragile_fraction"), color=method_colour(method),
                  marker=d.marker(model))
    sparsity_axis(ax_f)
    ax_f.set(title="(a) Fragile features vs sparsity", ylim=(0, 1.03),
             ylabel=f"Fragile fraction (Pearson r < {fragile_r:g})")
    shown = [h for h in (_rate_scatter(ax_r, d, r) for r in _most_pruned(rows)) if h]
    ax_r.axhline(fragile_r, color=GREY, ls=":", lw=1)
    ax_r.set(title="(b) Activation correlation vs firing rate", ylim=(-1.05, 1.05),
             xlabel="Dense firing rate (fraction of tokens, log scale)",
             ylabel="Pearson r (dense vs pruned)")
    if shown:
        ax_r.set_xscale("log")
    else:
        note(ax_r, "no per-feature correlations in this run")
    if blank(rows, "fragile_fraction"):
        note(ax_f, "no fragile fractions" if rows else "no pruned conditions in this run",
             clear=False)
    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = handles(d, methods_of(rows), models)
    if keys:
        fig.legend(handles=keys, loc="outside lower left", ncol=3)
    if shown:
        fig.legend(handles=shown, loc="outside lower right", ncol=1)
    fig.suptitle("RQ4: feature fragility (dense SAE applied to the pruned model)")
    return fig, (
        "RQ4 fragility: (a) fraction of the dense model's alive features whose activations on "
        f"the pruned model correlate with those on the dense model below r = {fragile_r:g} "
        "(dotted line in b), or that never fire on the pruned model (silenced, counted as "
        f"fragile: {_silenced(rows)}); (b) per-"
        "feature Pearson r against the feature's dense firing rate for the most pruned condition "
        "of each method, with the median in 12 log-spaced rate bins. Features counted as alive "
        f"and surviving elsewhere use τ = {d.tau:g}.")


def _f6_panel(ax: Axes, d: RunData, row: dict) -> None:
    from matplotlib.ticker import MaxNLocator

    surv, dce = finite_pairs(d.feature(f"{row['id']}|causal_survival"),
                        d.feature(f"{row['id']}|causal_delta_ce"))
    method = str(row.get("method"))
    ax.set_title(f"{row['model']}\n{method} {pct(row.get('sparsity'))}\n"
                 f"{rho_text(row.get('causal_rho'))}", fontsize=7, linespacing=1.1)
    ax.axvline(d.tau, color=GREY, ls=":", lw=1)
    if surv.size:
        ax.scatter(surv, dce, s=5, color=method_colour(method), marker=d.marker(row["model"]),
                   alpha=0.6, lw=0, rasterized=True)
    else:
        note(ax, "no causal\nsample", clear=False)
    ax.set(xlim=(-0.02, 1.02), xticks=(0, 0.5, 1), xticklabels=("0", "0.5", "1"))
    ax.yaxis.set_major_locator(MaxNLocator(4))


def f6_causal_vs_survival(d: RunData) -> Drawn:
    rows = d.rows("T6_fragility_causal")
    ncols = min(max(len(rows), 1), 6)
    nrows = max(math.ceil(len(rows) / ncols), 1)
    fig = new_figure(DOUBLE if ncols > 2 else SINGLE, max(2.8, 0.9 + 1.75 * nrows))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i < len(rows):
            _f6_panel(ax, d, rows[i])
            # sharex hides tick labels above a panel; show them where nothing is below.
            ax.xaxis.set_tick_params(labelbottom=i + ncols >= len(rows))
        elif rows:
            ax.set_axis_off()
        else:
            note(ax, "no pruned conditions in this run")
    fig.supxlabel(f"Survival score (matched decoder cosine; dotted: τ = {d.tau:g})", fontsize=8)
    fig.supylabel("ΔCE when ablated (nats/token)", fontsize=8)
    fig.suptitle("RQ5 / C4: causal importance vs survival")
    finite = [abs(x) for x in (num(r.get("causal_rho")) for r in rows) if math.isfinite(x)]
    worst = f"max |ρ| = {max(finite):.2f}" if finite else "no finite ρ"
    return fig, (
        "RQ5 causal importance vs survival: for a firing-rate-stratified sample of dense-SAE "
        "features, the rise in CE loss when the feature is ablated at the probe layer of the "
        "dense model against its survival score (matched cosine) in each condition; titles give "
        f"the Spearman ρ per condition ({worst}); dotted line: τ = {d.tau:g}. Small |ρ| means "
        "survival does not predict causal importance (C4). All panels share one y scale. Colour: "
        "method; marker: model.")
