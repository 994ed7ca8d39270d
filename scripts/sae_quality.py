"""How good an SAE a token budget buys on a real model: explained variance, L0, dead latents
and the seed floor (what two seeds share) against the training tokens.

    python scripts/sae_quality.py --out DIR [--profile small] [--model smollm2-135m]
        [--sequences 192 384 768] [--epochs 1 4] [--k 16 32] [--width 1024] [--lr 2e-3]
        [--lr-decay 0.3] [--batch 256]

Captures the model's probe activations of the study's `sae_train` stream once (as many
sequences as the largest budget asks for, cached in DIR) and of its `eval` stream, then
trains, for every (k, sequences, epochs), two SAEs from seeds 0 and 1 with the project's
own training (`repro.science.saes.fit_sae`, the replayed and reshuffled activations of
later epochs included) and measures each on the eval activations: explained variance, L0,
the fraction of latents that never fire, and the seed floor, the share of seed 0's alive
features whose Hungarian-matched decoder cosine in seed 1 is at least the study's tau
(`repro.science.match`), which is RQ1's shared fraction. Writes DIR/quality.json and
DIR/quality.png (seed floor and explained variance against training tokens, a line per k
and epoch count: more tokens buy both; a larger k buys explained variance and costs seed
agreement). Values not given are the profile's [sae] section.
The arithmetic is the process's (`REPRO_NUMERICS=native` for the machine's own).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from repro.science.numerics import pin_cpu


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile", default="small")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sequences", type=int, nargs="+", default=[192, 384, 768])
    p.add_argument("--epochs", type=int, nargs="+", default=[1, 4])
    p.add_argument("--width", type=int)
    p.add_argument("--k", type=int, nargs="+")
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-decay", type=float)
    p.add_argument("--batch", type=int)
    p.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    return p.parse_args()


def capture(study, key: str, stream: str, n_sequences: int, out: Path):
    """(activations at non-special positions, float32 on the CPU) of one stream, cached."""
    from repro.inputs import data
    from repro.inputs.models import load_model, load_tokenizer
    from repro.science.activations import iter_probe

    path = out / f"acts-{key}-{stream}-{n_sequences}.pt"
    if path.is_file():
        return torch.load(path)
    spec = study.models[key]
    tok = load_tokenizer(spec)
    sspec = dataclasses.replace(study.data.streams[stream], n_sequences=n_sequences)
    ids = data.token_stream(sspec, tok)
    keep = data.special_token_mask(ids, tok)
    model = load_model(spec, dtype="float32", device=torch.device("cpu"))
    started = time.time()
    parts = [a[keep[i * 8:(i + 1) * 8]].float()
             for i, a in enumerate(iter_probe(model, ids, spec.probe_layer, 8))]
    acts = torch.cat(parts)
    print(f"captured {len(acts)} {stream} activations of {key} in {time.time() - started:.0f}s",
          flush=True)
    torch.save(acts, path)
    return acts


def measure(sae_folder: Path, eval_acts: torch.Tensor) -> dict:
    from repro.science import evaluate, saes

    sae = saes.load_sae(sae_folder, "cpu")
    metrics = evaluate.reconstruction_metrics(sae, iter([eval_acts]))
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for _, f in saes.encode(sae, eval_acts):
        fires |= (f > 0).any(0)
    return {**metrics, "alive": fires.numpy(), "W_dec": sae.W_dec.detach().double().numpy()}


def main() -> None:
    args = _arguments()
    pin_cpu()
    from repro.science import match, sae_streams, saes
    from repro.study.reader import load_study, profile_path

    args.out.mkdir(parents=True, exist_ok=True)
    study = load_study(profile_path(args.profile))
    given = {"width": args.width, "lr": args.lr, "lr_decay": args.lr_decay,
             "batch_tokens": args.batch}
    spec = dataclasses.replace(study.sae, **{k: v for k, v in given.items() if v is not None})
    layer = study.models[args.model].probe_layer
    train = capture(study, args.model, "sae_train", max(args.sequences), args.out)
    eval_acts = capture(study, args.model, "eval", study.data.eval.n_sequences, args.out)
    per_seq = len(train) / max(args.sequences)
    rows = []
    for k, n_seq, epochs in itertools.product(args.k or [spec.k], sorted(args.sequences),
                                              sorted(args.epochs)):
        acts = train[: int(n_seq * per_seq)]
        sp = dataclasses.replace(spec, k=k, epochs=epochs)
        found = []
        for seed in args.seeds:
            stream = sae_streams.tensor_stream(acts, batch_tokens=sp.batch_tokens, seed=seed,
                                        epochs=epochs)
            started = time.time()
            sae, _ = saes.fit_sae(stream, spec=sp, seed=seed, device=torch.device("cpu"),
                                  layer=layer, metadata={})
            seconds = time.time() - started
            folder = args.out / f"sae-{k}-{n_seq}-{epochs}-{seed}"
            folder.mkdir(exist_ok=True)
            saes.save_sae(sae, folder)
            found.append({**measure(folder, eval_acts), "seconds": seconds})
        m = match.hungarian_match(found[0]["W_dec"], found[1]["W_dec"])
        alive = found[0]["alive"]
        row = {"k": k, "sequences": n_seq, "tokens": len(acts), "epochs": epochs,
               "token_steps": len(acts) * epochs,
               "seed_floor": float((m.cosine[alive] >= sp.survival_threshold).mean()),
               **{key: float(sum(f[key] for f in found) / 2) for key in
                  ("explained_variance", "l0", "seconds")},
               "dead_fraction": float(sum(1 - f["alive"].mean() for f in found) / 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "quality.json").write_text(json.dumps(
        {"model": args.model, "profile": args.profile, "width": spec.width, "lr": spec.lr,
         "lr_decay": spec.lr_decay, "batch_tokens": spec.batch_tokens, "rows": rows},
        indent=1))
    plot(rows, args.out / "quality.png", f"{args.model}: width {spec.width}")


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, epochs in sorted({(r["k"], r["epochs"]) for r in rows}):
        mine = [r for r in rows if (r["k"], r["epochs"]) == (k, epochs)]
        x = [r["token_steps"] for r in mine]
        label = f"k {k}, {epochs} epoch(s)"
        line, = ax.plot(x, [r["seed_floor"] for r in mine], "o-", label=f"seed floor, {label}")
        ax.plot(x, [r["explained_variance"] for r in mine], "s--", color=line.get_color(),
                label=f"explained variance, {label}")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens seen (tokens x epochs)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
