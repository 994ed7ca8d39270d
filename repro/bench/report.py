"""bench.md: the record of `repro bench` (repro/bench/run.py) as Markdown tables."""

from __future__ import annotations

from typing import Any

from repro.bench.estimate import hms, lines


def _rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _ratio_rows(record: dict[str, Any]) -> list[str]:
    rows = ["| comparison | min | median | max | goal | same result |",
            "|---|---:|---:|---:|---:|---|"]
    for r in record["ratios"].values():
        goal = f">= {r['goal']}" if r.get("goal") else ""
        rows.append(f"| {r['what']} | {r['min']:.2f}x | {r['median']:.2f}x | {r['max']:.2f}x "
                    f"| {goal} | {'yes' if r['check'] else 'NO'} |")
    return rows


def _paper_rows(record: dict[str, Any]) -> list[str]:
    rows = ["| model | layers built / real | capture tok/s (to probe) | SAE training tok/s "
            "| CE-loss eval tok/s | Wanda s/layer (128 x 2048) | SparseGPT s/layer (128 x 2048) "
            "| SAE step tok/s (16k) |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for key, p in record["paper"].items():
        d, rates = p["derived"], p["rates"]
        rows.append(f"| {key} | {p['layers_built']} / {p['layers_real']} "
                    f"| {_rate(d['capture_tokens_per_s'])} "
                    f"| {_rate(d['sae_training_tokens_per_s'])} "
                    f"| {_rate(d['ce_eval_tokens_per_s'])} "
                    f"| {d['wanda_s_per_layer_128x2048']:.3g} "
                    f"| {d.get('sparsegpt_s_per_layer_128x2048', float('nan')):.3g} "
                    f"| {_rate(1 / rates['sae_s_per_token'])} |")
    return rows


def _tiny_rows(record: dict[str, Any]) -> list[str]:
    rows = ["| tiny model | capture tok/s | SAE training tok/s | CE-loss eval tok/s "
            "| Wanda s/layer (32 x 128) |", "|---|---:|---:|---:|---:|"]
    for name, t in record["tiny"].items():
        rows.append(f"| {name} | {_rate(t['capture_tokens_per_s']['median'])} "
                    f"| {_rate(t['sae_training_tokens_per_s'])} "
                    f"| {_rate(t['ce_eval_tokens_per_s']['median'])} "
                    f"| {t['wanda_s_per_layer']:.3g} |")
    return rows


def _sae_rows(record: dict[str, Any]) -> list[str]:
    """SAEs per hour, the three ways side by side: median (min-max over the rounds)."""
    ways = list(next(iter(record["sae"].values()))["saes_per_hour"])
    rows = ["| model (d_model, width, k, batch, tokens) | " + " | ".join(
        w.replace("_", " ") for w in ways) + " |", "|---|" + "---:|" * len(ways)]
    for model, x in record["sae"].items():
        cells = [f"{_rate(x['saes_per_hour'][w]['median'])} "
                 f"({_rate(x['saes_per_hour'][w]['min'])}-{_rate(x['saes_per_hour'][w]['max'])})"
                 for w in ways]
        rows.append(f"| {model} ({x['d_model']}, {x['width']}, {x['k']}, {x['batch_tokens']}, "
                    f"{x['tokens']:,}) | " + " | ".join(cells) + " |")
    return rows


def _arithmetic_rows(x: dict[str, Any]) -> list[str]:
    rows = ["| setting | SAE s/step | SAE speed-up | SAE EV (held-out) | EV - pinned fp32 "
            "| forward s | forward speed-up | forward rel. RMS error |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in x["settings"].items():
        rows.append(f"| {name} | {r['sae_seconds_per_step']:.3f} | {r['sae_speedup']:.2f}x "
                    f"| {r['explained_variance']:.4f} | {r['ev_minus_pinned_fp32']:+.4f} "
                    f"| {r['forward_seconds']:.3f} | {r['forward_speedup']:.2f}x "
                    f"| {r['forward_relative_rms_error']:.1e} |")
    return rows


def markdown(record: dict[str, Any]) -> str:
    s, prov = record["settings"], record["provenance"]
    out = ["# repro bench", "",
           f"Device: {prov['device']}; dtype: paper architectures "
           f"{record['dtype']['paper_archs']}, tiny models {record['dtype']['tiny']}; "
           f"code {prov['code_version']}; torch {prov['packages']['torch']}, transformers "
           f"{prov['packages']['transformers']}, sae-lens {prov['packages']['sae-lens']}.",
           f"Repeats: {s['repeats']}{' (--quick)' if s['quick'] else ''}; wall time "
           f"{hms(record.get('wall_seconds', 0))}. Ratios are speed-ups (reference time / "
           "project time) of runs made side by side; spread over the repeats.", ""]
    if record["ratios"]:
        out += ["## Side-by-side ratios", "", *_ratio_rows(record), ""]
    for part, why in record.get("skipped", {}).items():
        out += [f"Skipped `{part}`: {why}.", ""]
    if "paper" in record:
        layers, seq = s["paper_layers"], s["seq_len"]
        built = ("All layers built;" if layers is None else
                 f"Built with {layers} of their layers and {seq}-token sequences on this device;")
        out += ["## Paper architectures (random weights, declared configs)", "",
                f"{built} per-token costs of one layer and of the head are measured and "
                "scaled to the real depth and probe layer (derived, not measured end to end). "
                f"Wanda's per-layer time is scaled from {s['calib_seqs']} x {seq} "
                "calibration tokens.", "", *_paper_rows(record), ""]
    if "sae" in record:
        out += ["## SAEs per hour", "",
                "One epoch over the tokens, the model's forward included: sae-lens's runner "
                "(one SAE per run), one at a time with sae-lens's SAETrainer (saes.train_sae; "
                "replayed: a further seed reading recorded activations), and S SAEs in one "
                "pass (repro.science.sae_batch). Median (min-max) over the rounds.", "",
                *_sae_rows(record), ""]
    if "arithmetic" in record:
        x = record["arithmetic"]
        cpu = x["cpu"]
        has = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if cpu.get(f))
        out += ["## Arithmetic: pinned float32, native float32, native bfloat16", "",
                f"CPU: {cpu['cpu']} ({cpu['cores']} cores; {has or 'none of the listed'}). "
                f"SmolLM2-135M: SAE {x['shapes']['sae']}, one epoch of the small profile's "
                f"sae_train activations; forward {x['shapes']['forward']}. Times: the fastest "
                "of the repeats; speed-ups against pinned float32.", "",
                *_arithmetic_rows(x), ""]
    if "tiny" in record:
        out += ["## Tiny models (shipped, stage functions as the pipeline calls them)", "",
                *_tiny_rows(record), ""]
    if "estimate" in record:
        est = record["estimate"]
        out += [f"## Estimated budget of the {est.get('profile', 'paper')} profile", "",
                f"Rates measured here for {', '.join(est['models_measured'])} (other models "
                "use gemma-3-1b's rates); matching "
                f"{est['match_seconds_per_pair']['value']:.0f} s per pair "
                f"({est['match_seconds_per_pair']['source']}).", "",
                *lines(est, est["footprint"], record["provenance"]["device"]), ""]
    return "\n".join(out) + "\n"
