"""Perplexity of every variant of a study, by the pipeline's own prune and perplexity stages:
the cheap part of the beyond profile (no SAE), enough to compare the pruning methods.

    nice -n 10 python scripts/method_perplexity.py --out DIR [--profile beyond] [--runs ID ...]

For the study's dense model and each of its pruned variants (or the variant ids given to
--runs), in study order: the tokens stage of the calibration and perplexity streams, the
prune stage (`repro.stages.pipeline.prune_stage`, the registry's function for the method and
pattern) and the perplexity stage, on the study's device and CPU arithmetic, as `repro all`
runs them. DIR gets the run folder's layout (tokens/, variants/ID/prune, variants/ID/perplexity),
so the perplexities are the ones the study's T1 table holds; a second call skips the stages
already done. Prints a Markdown table: achieved sparsity, perplexity, its ratio to the dense
model's, and the wall seconds of the prune stage as its manifest recorded them (the
process that ran it, on a machine as loaded as it was then).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from repro.errors import ReproError
from repro.science.numerics import MODE_VARIABLE, pin_cpu, share_cores_politely
from repro.study.reader import load_study, profile_path
from repro.study.spec import Variant

# torch is imported below, after OpenMP is told to let idle threads sleep (as the `repro`
# command does): on a shared machine spinning threads made SparseGPT's many small operations
# several times slower


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="run folder (created)")
    p.add_argument("--profile", default="beyond")
    p.add_argument("--runs", nargs="+", metavar="ID", help="variant ids (default: all)")
    return p.parse_args()


def variants(study, ids: list[str] | None) -> list[Variant]:
    """The variants asked for (default: all) with their models' dense ones, in study order."""
    if ids is None:
        return list(study.variants)
    unknown = sorted(set(ids) - {v.id for v in study.variants})
    if unknown:
        raise ReproError(f"no variant {', '.join(unknown)} in study {study.name}; "
                         f"`repro list --profile {study.name}` lists them")
    models = {v.model for v in study.variants if v.id in ids}
    return [v for v in study.variants if v.id in ids or (v.is_dense and v.model in models)]


def measure(ctx, chosen: list[Variant]) -> list[dict]:
    """Each variant's row, its stages run (or skipped when already done)."""
    from repro.stages.context import ModelHolder
    from repro.stages.pipeline import perplexity_stage, prune_stage, tokens_stage
    from repro.stages.store import read_manifest

    holder = ModelHolder(ctx)
    rows, dense_ppl = [], {}
    for v in chosen:
        spec = ctx.study.models[v.model]
        for stream in ("calibration", "perplexity"):
            tokens_stage(ctx, spec, stream, lambda spec=spec: holder.tokenizer_for(spec))
        prune_stage(ctx, holder, v)
        perplexity_stage(ctx, holder, v)
        result = read_manifest(ctx.variant_dir(v, "perplexity"))["result"]
        pruned = read_manifest(ctx.variant_dir(v, "prune"))
        if v.is_dense:
            dense_ppl[v.model] = result["perplexity"]
        rows.append({"id": v.id, "method": v.method, "pattern": v.pattern,
                     "achieved": pruned["result"]["achieved_sparsity"],
                     "perplexity": result["perplexity"],
                     "ratio": result["perplexity"] / dense_ppl[v.model],
                     "prune_s": pruned.get("wall_seconds")})
        ctx.log(f"{v.id}: perplexity {result['perplexity']:.2f}")
    return rows


def table(rows: list[dict]) -> str:
    """The rows as Markdown."""
    out = ["| variant | method | pattern | achieved sparsity | perplexity | x dense | prune s |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        seconds = "?" if r["prune_s"] is None else f"{r['prune_s']:.0f}"
        out.append(f"| {r['id']} | {r['method']} | {r['pattern']} | {r['achieved']:.3f} | "
                   f"{r['perplexity']:.2f} | {r['ratio']:.2f} | {seconds} |")
    return "\n".join(out) + "\n"


def main() -> None:
    args = _arguments()
    study = load_study(profile_path(args.profile))
    if study.device != "cpu":
        raise SystemExit(f"profile {args.profile} is for {study.device}; this script runs "
                         "CPU profiles")
    share_cores_politely()
    os.environ.setdefault(MODE_VARIABLE, study.numerics)
    pin_cpu()  # as `repro all` does, before the first torch kernel
    import torch

    from repro.stages.context import Context

    ctx = Context(study=study, out=args.out, device=torch.device("cpu"))
    try:
        print(table(measure(ctx, variants(study, args.runs))), end="")
    except ReproError as exc:
        raise SystemExit(f"method_perplexity: {exc}") from None


if __name__ == "__main__":
    main()
