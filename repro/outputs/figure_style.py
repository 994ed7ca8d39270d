"""The look shared by the six figures and the run data they read (used by repro.outputs.figures).

One colour per pruning method and one marker per model, the same in every figure; paper
sizes (single column 3.5 in, double column 7 in); fonts no smaller than 7 pt. Colours come
from the Okabe-Ito palette, which stays distinguishable under the common colour-vision
deficiencies. matplotlib is imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repro.errors import ReproError
from repro.stages import layout
from repro.study.methods import PRUNING_METHODS
from repro.study.spec import SURVIVAL_TAU, Study, Thresholds

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

SINGLE, DOUBLE = 3.5, 7.0
"""Figure widths in inches: one and two columns of a paper."""
DPI = 200
METHOD_COLOURS = {"magnitude": "#D55E00", "wanda": "#0072B2", "sparsegpt": "#009E73",
                  "dense": "#000000"}
METHOD_RAMPS = {"magnitude": "Oranges", "wanda": "Blues", "sparsegpt": "Greens"}
"""Sequential maps in each method's hue, for one line per sparsity level."""
EXTRA_COLOURS = ("#CC79A7", "#E69F00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
METHOD_ORDER = PRUNING_METHODS
"""Methods in the registry's order (repro.study.methods), in legends and tables."""
GREY = "#555555"
RC: dict[RcKeyType, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 9, "lines.linewidth": 1.2,
    "lines.markersize": 4, "axes.spines.top": False, "axes.spines.right": False,
    "legend.frameon": False, "pdf.fonttype": 42, "font.family": "DejaVu Sans"}


def num(x: Any) -> float:
    """A table cell as a float; None and non-numbers become NaN."""
    try:
        return float("nan") if x is None else float(x)
    except (TypeError, ValueError):
        return float("nan")


def pct(sparsity: Any) -> str:
    return f"{num(sparsity) * 100:.0f} %"


def rho_text(rho: Any) -> str:
    r = num(rho)
    return "ρ = n/a" if math.isnan(r) else f"ρ = {r:+.2f}".replace("-", "−")


@dataclass
class RunData:
    """The analysis outputs of one run folder, plus the thresholds the figures draw."""

    tables: dict[str, list[dict]]
    features: dict[str, np.ndarray] = field(default_factory=dict)
    tau: float = SURVIVAL_TAU
    """The study's survival threshold ([sae] survival_threshold)."""
    thresholds: Thresholds = field(default_factory=Thresholds)
    """The study's [thresholds] (viable_ce_score, fragile_r)."""

    def rows(self, table: str) -> list[dict]:
        """Rows of a table, sorted by model (first-seen order), method and sparsity."""
        rank: dict[str | None, int] = {m: i for i, m in enumerate(self.models)}
        rows = [r for r in self.tables.get(table) or [] if isinstance(r, dict)]
        return sorted(rows, key=lambda r: (rank.get(r.get("model"), len(rank)),
                                           method_rank(r.get("method")), num(r.get("sparsity"))))

    @property
    def models(self) -> list[str]:
        seen = (r.get("model") for rows in self.tables.values() for r in rows or []
                if isinstance(r, dict))
        return [m for m in dict.fromkeys(seen) if isinstance(m, str)]

    def feature(self, key: str) -> np.ndarray:
        """A per-feature array as float; empty when the run has none under that key."""
        return np.asarray(self.features.get(key, np.empty(0)), dtype=float).ravel()

    def marker(self, model: str) -> str:
        models = self.models
        return MARKERS[models.index(model) % len(MARKERS)] if model in models else MARKERS[-1]


def method_rank(method: Any) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER),
            str(method))


def method_colour(method: str) -> str:
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return EXTRA_COLOURS[sum(map(ord, method)) % len(EXTRA_COLOURS)]


def ramp_colour(method: str, sparsity: float | None, top: float) -> Any:
    """Lighter for less pruning, darker for more, in the method's own hue."""
    from matplotlib import colormaps

    if method not in METHOD_RAMPS:
        return method_colour(method)
    frac = num(sparsity) / top if top > 0 else 1.0
    return colormaps[METHOD_RAMPS[method]](0.35 + 0.6 * min(max(frac, 0.0), 1.0))


def load_run(run_dir: Path, study: Study | None = None) -> RunData:
    """Read analysis/tables.json (required) and features.npz; the thresholds are the study's
    (the defaults without one)."""
    path = run_dir / layout.ANALYSIS_DIR / layout.TABLES_JSON
    try:
        tables = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReproError(f"{path}: cannot read the analysis tables ({exc}); "
                         "run the analysis stage first (`repro all`)") from None
    features: dict[str, np.ndarray] = {}
    npz = run_dir / layout.ANALYSIS_DIR / layout.FEATURES_NPZ
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as f:
            features = {k: f[k] for k in f.files}
    data = RunData(tables if isinstance(tables, dict) else {}, features)
    if study is not None:
        data.tau, data.thresholds = study.sae.survival_threshold, study.thresholds
    return data


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas (no pyplot, no global state) with constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def note(ax: Axes, text: str, clear: bool = True) -> None:
    """Mark a panel that has nothing to show, instead of leaving it blank.

    clear=False keeps the ticks: on shared axes, clearing one panel's clears them all.
    """
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            color=GREY, fontsize=7)
    if clear:
        ax.set_xticks([])
        ax.set_yticks([])


def blank(rows: list[dict], *keys: str) -> bool:
    """True when none of the rows has a finite value under any of the keys."""
    return not any(math.isfinite(num(r.get(k))) for r in rows for k in keys)


def handles(data: RunData, methods: list[str], models: list[str]) -> list[Any]:
    """Legend proxies: a colour swatch per method, then a grey marker per model."""
    from matplotlib.lines import Line2D

    out: list[Any] = [Line2D([], [], color=method_colour(m), lw=2, label=m) for m in methods]
    out += [Line2D([], [], color=GREY, ls="none", marker=data.marker(m), label=m) for m in models]
    return out


def bottom_legend(fig: Figure, items: list[Any], ncol: int = 6) -> None:
    """A legend below the panels, never over data; two columns at most on a single column."""
    if items:
        ncol = min(ncol, 2 if fig.get_figwidth() < 5 else ncol, len(items))
        fig.legend(handles=items, loc="outside lower center", ncol=ncol, handlelength=2.2,
                   columnspacing=1.2)


def save(fig: Figure, out_dir: Path, stem: str) -> None:
    """PNG and PDF; the PDF without its creation date, so that the same figure is the same
    bytes in every run (the figures stage's fingerprint depends on them)."""
    for ext in ("png", "pdf"):
        fig.savefig(out_dir / f"{stem}.{ext}", dpi=DPI,
                    metadata={"CreationDate": None} if ext == "pdf" else None)


# ---- table rows to plotted points ------------------------------------------------------

def rows_by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Table rows grouped by the values of `keys`, in first-seen order."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def methods_of(rows: list[dict]) -> list[str]:
    """The pruning methods among the rows (not dense), in the figures' order."""
    found: set[Any] = {r.get("method") for r in rows} - {"dense", None}  # JSON values (str)
    return sorted(found, key=method_rank)


def sparsity_xy(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(sparsity in %, value of `key`) per row, for a line over sparsity."""
    return [num(r.get("sparsity")) * 100 for r in rows], [num(r.get(key)) for r in rows]


def finite_pairs(*arrays: np.ndarray) -> list[np.ndarray]:
    """The arrays cut to one length and to the positions finite in all of them."""
    n = min(len(a) for a in arrays)
    ok = np.all([np.isfinite(a[:n]) for a in arrays], axis=0)
    return [a[:n][ok] for a in arrays]


def sparsity_axis(ax: Axes, label: bool = True) -> None:
    ax.set_xlim(-3, 65)
    ax.set_xticks(range(0, 70, 10))
    if label:
        ax.set_xlabel("Sparsity (% of weights removed)")
