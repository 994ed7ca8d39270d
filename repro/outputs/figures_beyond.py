"""The figures of the tables beyond the paper, drawn when the run has them: F7, RQ6's
cross-validated AUC per condition and predictor (T7), with its shuffled-label control."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from repro.outputs.figure_style import DOUBLE, GREY, RunData, new_figure, note, num
from repro.science.predict import ALL, PREDICTORS, SHUFFLED, SHUFFLES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SHOWN = (*PREDICTORS, ALL, SHUFFLED)
NAMES = {"log_firing_rate": "firing rate (log)", "peak_activation": "peak activation",
         "mean_activation": "mean activation", "decoder_norm": "decoder norm",
         "encoder_decoder_cosine": "encoder-decoder cosine", ALL: "all together",
         SHUFFLED: "all, shuffled labels (control)"}
COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#000000", GREY)


def _condition(row: dict) -> str:
    """A condition's label: its variant id (the row id without label and predictor)."""
    return str(row["id"]).rsplit("/", 2)[0]


def f7_predictability(d: RunData) -> tuple[Figure, str]:
    rows = d.tables.get("T7_predictability") or []
    conditions = list(dict.fromkeys(_condition(r) for r in rows))
    height = max(2.4, 0.32 * len(conditions) * 2 + 1.2)
    fig = new_figure(DOUBLE, height)
    axes = fig.subplots(1, 2, sharey=True)
    step = 0.8 / len(SHOWN)
    for ax, label in zip(axes, ("survival", "robustness"), strict=True):
        ax.set_title({"survival": "survival (RQ2: matched cosine >= tau)",
                      "robustness": "robustness (RQ4: frozen-SAE r >= fragile_r)"}[label])
        ax.axvline(0.5, color=GREY, lw=0.8, ls="--")
        mine = {(_condition(r), r["predictor"]): r for r in rows if r["label"] == label}
        if not mine:
            note(ax, "no rows")
        for j, name in enumerate(SHOWN):
            ys, xs, lows, highs = [], [], [], []
            for i, cond in enumerate(conditions):
                r = mine.get((cond, name))
                if r is None or not np.isfinite(num(r["auc"])):
                    if j == 0 and r is not None:
                        ax.text(0.52, i, "too few features of one class to fold", fontsize=6,
                                color=GREY, va="center")
                    continue
                ys.append(i + (j - len(SHOWN) / 2) * step)
                xs.append(num(r["auc"]))
                lows.append(num(r["auc"]) - num(r["auc_ci_low"]))
                highs.append(num(r["auc_ci_high"]) - num(r["auc"]))
            ax.errorbar(xs, ys, xerr=[lows, highs], fmt="o", ms=3, lw=0.8,
                        color=COLOURS[j], label=NAMES[name])
        ax.set_xlim(0.2, 1.0)
        ax.set_xlabel("cross-validated AUC (0.5: chance)")
    axes[0].set_yticks(range(len(conditions)), conditions)
    axes[0].invert_yaxis()
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4, frameon=False, fontsize=7)
    caption = ("RQ6 (beyond the paper): how well statistics of the dense model alone predict "
               "which dense-SAE features survive each compression (left: matched into the "
               "compressed model's SAE at cosine >= tau; right: the frozen dense SAE's "
               "activation still correlated at r >= fragile_r). Cross-validated logistic "
               "regression, AUC with a 95 % bootstrap interval over features; the grey points "
               f"fit every predictor to shuffled labels, {SHUFFLES} times (mean and middle 95 %), "
               "and must sit at 0.5.")
    return fig, caption


FIGURES = {"F7_predictability": ("T7_predictability", f7_predictability)}
"""Each figure beyond the paper: the table it needs, and how it is drawn."""
