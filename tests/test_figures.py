"""The six figures from a synthetic run folder: all drawn, real images, captions naming tau,
and no crash on a partial run (a model with one method, NaNs, missing per-feature arrays)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from matplotlib import rc_context

from repro.errors import ReproError
from repro.outputs.figure_style import RC, load_run
from repro.outputs.figures import FIGURES, write_figures
from repro.study.reader import load_study, profile_path

PAPER_GRID = {"gemma-3-1b": {"magnitude": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                             "wanda": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
              "gemma-2-2b": {"wanda": [0.3, 0.5], "magnitude": [0.5]},
              "llama-3.2-1b": {"wanda": [0.5]}}
"""The paper's grid less one condition; the llama model has a single method."""
GRID = {"gemma-3-1b": {"magnitude": [0.2, 0.4, 0.6], "wanda": [0.2, 0.4, 0.6]},
        "gemma-2-2b": {"wanda": [0.3, 0.5], "magnitude": [0.5]},
        "llama-3.2-1b": {"wanda": [0.5]}}
"""Small enough for a fast test, with the same shapes: several levels, one method only."""
STAND_IN = "llama-3.2-1b"
NAN_ID = "llama-3.2-1b/wanda/50"


def _cond(model: str, method: str, s: float) -> str:
    return f"{model}/{method}/{round(s * 100, 6):g}"


def _features(rng: np.random.Generator, cid: str, method: str, s: float, n: int,
              n_causal: int) -> dict[str, np.ndarray]:
    """Rarer features and Wanda survive more; correlation falls with sparsity."""
    rate = 10 ** rng.uniform(-5, -1, n)
    keep = 1.15 - 0.9 * s * (0.5 if method == "wanda" else 1.0) - 0.06 * (np.log10(rate) + 5)
    cos = np.clip(keep + rng.normal(0, 0.15, n), 0, 1)
    r = np.clip(1 - s * (0.6 if method == "wanda" else 1.1) + 0.05 * np.log10(rate)
                + rng.normal(0, 0.2, n), -1, 1)
    pick = rng.choice(n, n_causal, replace=False)
    return {f"{cid}|firing_rate": rate, f"{cid}|matched_cosine": cos,
            f"{cid}|pearson_r": r, f"{cid}|pearson_rate": rate,
            f"{cid}|causal_delta_ce": np.abs(rng.gamma(1.0, 0.01, n_causal)),
            f"{cid}|causal_survival": cos[pick]}


def _rows(cid: str, model: str, method: str, s: float, f: dict, tau: float) -> dict[str, dict]:
    rate, cos = f[f"{cid}|firing_rate"], f[f"{cid}|matched_cosine"]
    bins = np.array_split(np.argsort(rate), 5)
    rates = [float(np.mean(cos[b] >= tau)) for b in bins]
    rho = -1.0 if all(a > b for a, b in zip(rates, rates[1:], strict=False)) else -0.9
    base = {"id": cid, "model": model, "method": method, "sparsity": s}
    t3 = {**base, "survival": float(np.mean(cos >= tau)),
          "survival_max_cosine": float(np.mean(np.minimum(cos + 0.05, 1) >= tau)),
          **{f"survival_bin{i + 1}": v for i, v in enumerate(rates)}, "binned_rho": rho,
          "feature_rho": -0.4}
    r = f[f"{cid}|pearson_r"]
    t6 = {**base, "fragile_fraction": float(np.mean(r < 0.5)), "mean_r": float(np.mean(r)),
          "causal_rho": 0.05 - 0.1 * s}
    return {"T3_survival": t3, "T6_fragility_causal": t6}


def _transfer(model: str, method: str, s: float) -> dict:
    drop = s ** 2 * (1.0 if method == "wanda" else 2.5)
    return {"id": _cond(model, method, s), "model": model, "method": method, "sparsity": s,
            "dense_ce_loss_score": 0.97 - drop, "pretrained_ce_loss_score": 0.95 - 1.1 * drop,
            "dense_explained_variance": 0.8 - drop, "pretrained_explained_variance": 0.7 - drop,
            "pretrained_is_stand_in": model == STAND_IN}


def make_run(root: Path, n: int = 400, n_causal: int = 40, seed: int = 0,
             grid: dict[str, dict[str, list[float]]] = GRID) -> Path:
    """A run folder holding only what the figures read; one condition carries NaNs."""
    rng, tau = np.random.default_rng(seed), 0.7
    tables: dict[str, list[dict]] = {k: [] for k in ("T1_pruning", "T2_seed_stability",
                                                    "T3_survival", "T4_ratios",
                                                    "T5_transfer", "T6_fragility_causal")}
    feats: dict[str, np.ndarray] = {}
    for a, b in ((0, 1), (0, 2), (1, 2)):
        pair = f"gemma-3-1b/dense/0/seed-{a}-vs-seed-{b}"
        feats[f"{pair}|matched_cosine"] = np.clip(rng.beta(8, 2, n), 0, 1)
        tables["T2_seed_stability"].append({"id": pair, "model": "gemma-3-1b", "seed_a": a,
                                            "seed_b": b, "shared_fraction": 0.8})
    for model, methods in grid.items():
        tables["T5_transfer"].append(_transfer(model, "dense", 0.0))
        for method, levels in methods.items():
            for s in levels:
                cid = _cond(model, method, s)
                f = _features(rng, cid, method, s, n, n_causal)
                for name, row in _rows(cid, model, method, s, f, tau).items():
                    tables[name].append(row)
                tables["T5_transfer"].append(_transfer(model, method, s))
                feats.update(f)
    _add_nans(tables, feats)
    (root / "analysis").mkdir(parents=True)
    (root / "analysis" / "tables.json").write_text(json.dumps(tables))
    np.savez(root / "analysis" / "features.npz", **feats)
    return root


def _add_nans(tables: dict[str, list[dict]], feats: dict[str, np.ndarray]) -> None:
    for name in ("T3_survival", "T5_transfer", "T6_fragility_causal"):
        for row in tables[name]:
            if row["id"] == NAN_ID:
                for key in ("survival_bin2", "binned_rho", "pretrained_ce_loss_score",
                            "causal_rho", "fragile_fraction"):
                    if key in row:
                        row[key] = math.nan
    feats[f"{NAN_ID}|causal_delta_ce"][:5] = np.nan
    del feats[f"{NAN_ID}|pearson_r"]


def _check_images(out: Path) -> None:
    from matplotlib.image import imread

    for stem in FIGURES:
        png, pdf = out / f"{stem}.png", out / f"{stem}.pdf"
        assert png.stat().st_size > 10_000 and pdf.read_bytes()[:5] == b"%PDF-"
        img = imread(png)
        height, width = img.shape[:2]
        assert width in (700, 1400), f"{stem}: {width} px is neither column width at 200 dpi"
        assert 0.25 < height / width < 2.0, f"{stem}: aspect {height / width:.2f}"
        assert float(img[..., :3].std()) > 0.02, f"{stem} is a flat image"


def test_six_figures_from_a_partial_study(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    captions = write_figures(run, tmp_path / "figs", load_study(profile_path("tiny")))
    assert set(captions) == set(FIGURES) and len(captions) == 6
    assert json.loads((tmp_path / "figs" / "captions.json").read_text()) == captions
    assert all("τ = 0.7" in c for c in captions.values())
    _check_images(tmp_path / "figs")


def test_the_figures_draw_the_studys_thresholds(tmp_path: Path) -> None:
    """tau, the viability score and fragile_r come from the study given, not from defaults."""
    run = make_run(tmp_path / "run", n=50, n_causal=10)
    study = load_study(profile_path("tiny"))
    study = replace(study, sae=replace(study.sae, survival_threshold=0.6),
                    thresholds=replace(study.thresholds, viable_ce_score=0.8, fragile_r=0.3))
    data = load_run(run, study)
    with rc_context(RC):
        captions = {stem: draw(data)[1] for stem, draw in FIGURES.items()}
    assert all("τ = 0.6" in c and "τ = 0.7" not in c for c in captions.values())
    assert "CE-loss score 0.8" in captions["F4_transferability"]
    assert "below r = 0.3" in captions["F5_fragility"]


@pytest.mark.parametrize("keep", ["T3_survival", "nothing"])
def test_near_empty_runs_still_draw(tmp_path: Path, keep: str) -> None:
    """One condition or none, no per-feature arrays, no study file: every figure still draws."""
    run = make_run(tmp_path / "run", n=50, n_causal=10)
    tables = json.loads((run / "analysis" / "tables.json").read_text())
    tables = {k: (v[:1] if k == keep else []) for k, v in tables.items()}
    (run / "analysis" / "tables.json").write_text(json.dumps(tables))
    (run / "analysis" / "features.npz").unlink()
    data = load_run(run, None)
    with rc_context(RC):
        for draw in FIGURES.values():
            fig, caption = draw(data)
            fig.canvas.draw()  # lays out and renders, as saving would, without the files
            assert "τ = 0.7" in caption


def test_missing_tables_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReproError, match="tables.json"):
        write_figures(tmp_path, tmp_path / "figs", None)


def test_saved_figures_are_the_same_bytes_twice(tmp_path) -> None:
    """No timestamp inside the PNG or the PDF: a rerun gives byte-identical figures."""
    import matplotlib.pyplot as plt

    from repro.outputs.figure_style import save

    for run in ("a", "b"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        (tmp_path / run).mkdir()
        save(fig, tmp_path / run, "F0")
        plt.close(fig)
    for ext in ("png", "pdf"):
        assert (tmp_path / "a" / f"F0.{ext}").read_bytes() == (
            tmp_path / "b" / f"F0.{ext}").read_bytes()
    # the two saves may share a second: the date must be absent, not merely equal
    assert b"CreationDate" not in (tmp_path / "a" / "F0.pdf").read_bytes()


def test_f3_names_its_dashed_seed_control_lines_in_the_legend(tmp_path: Path) -> None:
    """A panel that draws the seed control (dashed) says so in its legend; a panel without
    one does not (the negative control)."""
    from repro.outputs.figures import f3_survival_by_frequency

    run = make_run(tmp_path / "run", n=60, n_causal=10)
    tables = json.loads((run / "analysis" / "tables.json").read_text())
    for row in tables["T3_survival"]:
        if row["model"] == "gemma-3-1b" and row["method"] == "wanda":
            row.update({f"survival_control_bin{i}": 0.5 for i in range(1, 6)},
                       binned_rho_control=-0.9)
    (run / "analysis" / "tables.json").write_text(json.dumps(tables))
    with rc_context(RC):
        fig, caption = f3_survival_by_frequency(load_run(run))
    legends = {ax.get_title(): [t.get_text() for t in ax.get_legend().get_texts()]
               for ax in fig.axes if ax.get_legend() is not None}
    assert legends["gemma-3-1b · wanda"][-2:] == ["dense SAE's seed", "control seed"]
    assert "control seed" not in legends["gemma-3-1b · magnitude"]
    assert "Dashed: the same against the pruned model's SAE trained from the control seed" \
        in caption
