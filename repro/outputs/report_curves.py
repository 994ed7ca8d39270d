"""The report's "Training curves" section: is each SAE of the run trained enough to trust?

Reads every runs/<id>/sae/curve.json (repro.science.training_curves), draws one figure with all SAEs
(explained variance, L0 and dead fraction against training tokens) next to the report as
report_training_curves.png, and lists each SAE's final values, its explained-variance gain
over the last quarter of its training at the full learning rate (before a decaying rate
lowers the loss by itself) and whether its curve has flattened. An SAE that has not
is named in a warning line: its numbers may still move with more tokens. The warning is the
report's, not the verdict's: verification and claims do not read curves. The figure lives
with the report, outside figures/, so the figures stage's six files stay what verify expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.outputs import shapes
from repro.outputs.figure_style import DOUBLE, GREY, RC, bottom_legend, method_colour, new_figure
from repro.science.training_curves import (
    CURVE_FILE,
    LAST_SHARE,
    summarize,
)
from repro.stages.layout import RUNS_DIR, STUDY_FILE
from repro.study.reader import thresholds_of

FIGURE = "report_training_curves.png"
HEADER = ["SAE", "training tokens", "points", "final EV", "final L0", "final dead fraction",
          "EV gain, last quarter at full lr", "flattened"]
CAPTION = (f"Training curves of every SAE of the run: explained variance, mean L0 and dead "
           f"fraction (latents silent for the dead-feature window) of the training batches "
           f"against the tokens seen, recorded during training. Colour: pruning method; "
           f"dashed: control-seed SAEs; dotted: extra seeds. An SAE has flattened when its "
           f"explained variance gained less than the study's curve_flat_ev_gain over the last "
           f"{LAST_SHARE:.0%} of its tokens at the full learning rate (least-squares slope "
           f"over that stretch; a rate decaying to 0 at the end lowers the loss by itself).")


def gather_curves(run_dir: Path) -> dict[str, dict[str, Any]]:
    """{SAE name (its folder under runs/): curve} for every SAE that recorded one."""
    found = {}
    for path in sorted((run_dir / RUNS_DIR).glob(f"**/sae/{CURVE_FILE}")):
        parts = path.relative_to(run_dir / RUNS_DIR).parts
        if any(part.startswith(".") for part in parts):  # unfinished (.partial) work
            continue
        curve = shapes.read(path, shapes.CURVE)
        if curve is not None:
            found["/".join(parts[:-2])] = curve
    return found


def flat_gain(run_dir: Path) -> float:
    """The run's study threshold curve_flat_ev_gain, else the default."""
    return thresholds_of(run_dir / STUDY_FILE).curve_flat_ev_gain


def rows(curves: dict[str, dict[str, Any]], gain: float) -> list[list[Any]]:
    out = []
    for name, curve in curves.items():
        s = summarize(curve, gain)
        flat = {True: "yes", False: "NO", None: "too few points"}[s["flattened"]]
        out.append([name, s["tokens"], s["points"], s["explained_variance"], s["l0"],
                    s["dead_fraction"], s["ev_gain_last_quarter"], flat])
    return out


def warnings(curves: dict[str, dict[str, Any]], gain: float) -> list[str]:
    """One line per SAE whose curve has not flattened."""
    out = []
    for name, curve in curves.items():
        s = summarize(curve, gain)
        if s["flattened"] is False:
            out.append(f"SAE {name}: explained variance still rose by "
                       f"{s['ev_gain_last_quarter']:.3f} over the last {LAST_SHARE:.0%} of its "
                       f"training at the full learning rate ({s['tokens']} tokens in all; "
                       f"curve_flat_ev_gain {gain:g}); it has not flattened, so its numbers may "
                       "still change with more tokens.")
    return out


def summary_line(curves: dict[str, dict[str, Any]], gain: float) -> str | None:
    """One line for the top of the report when any SAE has not flattened, else None."""
    n = len(warnings(curves, gain))
    if n == 0:
        return None
    return (f"Training: {n} of {len(curves)} SAEs had not flattened at the end of training "
            "(explained variance still rising); see Training curves. Not part of the verdict.")


def _style(name: str) -> tuple[str, str]:
    """(colour, line style) of an SAE from its folder name: model/method/sparsity[/seed], the
    method with its N:M tag (wanda-2of4) drawn in the method's colour."""
    parts = name.split("/")
    method = parts[1].split("-")[0] if len(parts) > 1 else "?"
    extra = parts[3] if len(parts) > 3 else ""
    return method_colour(method), ("--" if extra.startswith("control") else
                                   ":" if extra else "-")


def draw(curves: dict[str, dict[str, Any]], path: Path) -> None:
    """All curves in three panels, one PNG."""
    from matplotlib import rc_context
    from matplotlib.lines import Line2D

    with rc_context(RC):
        fig = new_figure(DOUBLE, 2.6)
        axes = fig.subplots(1, 3, sharex=True)
        keys = ("explained_variance", "l0", "dead_fraction")
        for name, curve in curves.items():
            colour, style = _style(name)
            tokens = [p["tokens"] for p in curve["points"]]
            for ax, key in zip(axes, keys, strict=True):
                ax.plot(tokens, [p[key] for p in curve["points"]], color=colour, ls=style,
                        lw=0.8, alpha=0.7)
        for ax, title in zip(axes, ("(a) Explained variance", "(b) L0", "(c) Dead fraction"),
                             strict=True):
            ax.set(title=title, xlabel="Training tokens")
        methods = sorted({name.split("/")[1].split("-")[0] for name in curves if "/" in name})
        items = [Line2D([], [], color=method_colour(m), label=m) for m in methods]
        items += [Line2D([], [], color=GREY, ls=ls, label=label) for ls, label in
                  (("-", "run seed"), ("--", "control seed"), (":", "extra seed"))]
        bottom_legend(fig, items)
        fig.savefig(path, dpi=150)


def markdown(curves: dict[str, dict[str, Any]], gain: float, grid: Any) -> list[str]:
    """The section's Markdown lines; `grid(header, rows)` is the report's table renderer."""
    if not curves:
        return ["## Training curves", "", "No SAE of this run recorded a training curve "
                "(trained before curves were recorded, or not trained yet).", ""]
    out = ["## Training curves", ""]
    out += [f"- **Warning**: {line}" for line in warnings(curves, gain)]
    out += ["", f"![training curves]({FIGURE})", "", f"**Training curves.** {CAPTION}", ""]
    return out + [*grid(HEADER, rows(curves, gain)), ""]


def html(run_dir: Path, curves: dict[str, dict[str, Any]], gain: float, grid: Any,
         figure: Any) -> list[str]:
    """The section's HTML parts; `figure(path, caption)` embeds the PNG."""
    import html as escape

    if not curves:
        return ["<h2>Training curves</h2><p>No SAE of this run recorded a training curve.</p>"]
    parts = ["<h2>Training curves</h2>"]
    warned = warnings(curves, gain)
    if warned:  # one line per SAE, folded: a run of 42 SAEs would be 42 paragraphs
        items = "".join(f"<li>Warning: {escape.escape(line)}</li>" for line in warned)
        parts.append(f'<details><summary class="inconclusive">'
                     f'{escape.escape(summary_line(curves, gain) or "")}</summary>'
                     f"<ul>{items}</ul></details>")
    if (run_dir / FIGURE).is_file():  # drawn by report.write before the page is rendered
        parts.append(figure(run_dir / FIGURE, CAPTION))
    return parts + [f'<div class="wide">{grid(HEADER, rows(curves, gain))}</div>']
