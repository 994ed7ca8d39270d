"""The sanity gates of a run: what it must show before its numbers are worth comparing.

Written by the tables stage as tables/sanity.json; `repro verify` stops at a failed gate.
"""

from __future__ import annotations

import json
import math

from repro.outputs.analysis import Analysis, as_float


def _gate(name: str, value: float, low: float, high: float, source: str) -> dict:
    ok = math.isfinite(value) and low <= value <= high
    return {"gate": name, "value": value, "low": low, "high": high, "ok": ok, "source": source}


def sanity_gates(a: Analysis, t1: list[dict]) -> list[dict]:
    """What a run must show before its numbers are worth comparing (`repro verify` stops
    at a failed gate): each dense model's perplexity inside the study file's
    `perplexity_range`, and each pre-trained SAE's L0 and explained variance on its dense
    model near what its publisher recorded (`pretrained_saes.published_stats`): L0 within
    `sanity_l0_rel` (default 25 %) of it, explained variance within `sanity_ev_abs`
    (default 0.05) where the publisher recorded one.
    """
    rel, ev_abs = a.study.thresholds.sanity_l0_rel, a.study.thresholds.sanity_ev_abs
    gates = []
    for model, spec in a.study.models.items():
        dense = a.dense_run(model)
        if spec.perplexity_range is not None:
            ppl = next(r["perplexity"] for r in t1 if r["id"] == dense.variant.id)
            gates.append(_gate(f"{model}: dense perplexity", ppl, *spec.perplexity_range,
                               "study file: perplexity_range"))
        if spec.pretrained_sae is None:
            continue
        transfer = json.loads((a.run_folder(dense) / "evaluate" / "transfer.json").read_text())
        measured = transfer["saes"]["pretrained"]
        published = measured.get("published") or {}
        if published.get("l0") is not None:
            l0 = float(published["l0"])
            gates.append(_gate(f"{model}: pre-trained SAE L0 on the dense model",
                               as_float(measured["l0"]), l0 * (1 - rel), l0 * (1 + rel),
                               f"{published['source']}: L0 {l0:g}, band {rel:.0%}"))
        if published.get("explained_variance") is not None:
            ev = float(published["explained_variance"])
            gates.append(_gate(f"{model}: pre-trained SAE explained variance on the dense model",
                               as_float(measured["explained_variance"]), ev - ev_abs, ev + ev_abs,
                               f"{published['source']}: {ev:g}, band +-{ev_abs:g}"))
    return gates
