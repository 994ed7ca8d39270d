"""Does the sparse arithmetic of repro.science.sae_batch pay on this CPU? Each piece of one
SAE's training step timed against the dense product sae-lens runs for it, on the same
tensors, and checked equal to round-off:

    .venv/bin/python scripts/sae_kernels.py [--repeats 15] [--threads N]

- decode: the k chosen decoder rows summed per token (embedding_bag) vs the dense
  (batch x width) @ (width x d) product of sae-lens;
- chosen-latent gradient: each chosen row's dot product with the output gradient
  (embedding_bag's own backward) vs the dense (batch x d) @ (d x width) product, gathered;
- decoder and encoder gradients: a bag per latent over the batch x k entries
  (embedding_bag) vs the dense (width x batch) @ (batch x d) products.
Shapes: the tiny profile's SAE (d 96, width 512, k 16, batch 1024) and the small
profile's (SmolLM2-135M: d 576, width 2048, k 32, batch 512). Pinned arithmetic, as
`repro all` runs it (2 threads; --threads 1 shows the work without the waits of two
threads on a busy machine). Times in ms, the minimum and median of the repeats.
"""

from __future__ import annotations

import argparse
import time

from repro.science.numerics import pin_cpu

SHAPES = {"tiny": (1024, 96, 512, 16), "smollm2": (512, 576, 2048, 32)}


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0] * 1e3, times[len(times) // 2] * 1e3


def pieces(batch: int, d: int, width: int, k: int):
    """(name, dense, sparse) pairs of callables computing the same tensor."""
    import torch

    from repro.science.sae_batch import latent_sums, rows_sum

    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(width, d, generator=g) / d ** 0.5
    u, grad_y = torch.randn(batch, d, generator=g), torch.randn(batch, d, generator=g)
    values, latents = torch.randn(batch, width, generator=g).topk(k, dim=-1, sorted=False)
    acts = values.relu()
    flat = latents.reshape(-1)
    rows, order = torch.sort(flat, stable=True)
    tokens = torch.arange(batch).repeat_interleave(k)[order]

    def dense_acts():
        return torch.zeros(batch, width).scatter_(-1, latents, acts)

    return [
        ("decode", lambda: dense_acts() @ W_dec, lambda: rows_sum(latents, W_dec, acts)[0]),
        ("chosen-latent gradient", lambda: (grad_y @ W_dec.T).gather(-1, latents),
         lambda: rows_sum(latents, W_dec, acts)[1](grad_y)),
        ("decoder gradient", lambda: dense_acts().T @ grad_y,
         lambda: latent_sums(rows, tokens, acts.reshape(-1)[order], grad_y, width)),
        ("encoder gradient", lambda: dense_acts().T @ u,
         lambda: latent_sums(rows, tokens, acts.reshape(-1)[order], u, width)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the pinned 2)")
    args = parser.parse_args()
    pin_cpu()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print("| shape | piece | dense min / median | sparse min / median | speed-up (min) "
          "| max abs difference |")
    print("|---|---|---:|---:|---:|---:|")
    for shape, dims in SHAPES.items():
        for name, dense, sparse in pieces(*dims):
            diff = float((dense() - sparse()).abs().max())
            (d_min, d_med), (s_min, s_med) = timed(dense, args.repeats), timed(sparse,
                                                                               args.repeats)
            print(f"| {shape} | {name} | {d_min:.2f} / {d_med:.2f} | {s_min:.2f} / {s_med:.2f} "
                  f"| {d_min / s_min:.1f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
