"""`repro bench --only arithmetic`: what pinned float32, native float32 and native bfloat16
cost and what they do to the results, on the small profile's shapes.

Measured per setting: SAE training (repro.science.sae_batch, one SAE, one epoch of
SmolLM2-135M's probe activations over the small profile's sae_train tokens; d_model 576,
the small profile's width, k, batch and learning-rate schedule) with the explained variance
of the trained SAE on held-out activations (the eval stream), and a model forward
(SmolLM2-135M to its probe layer 15, 8 x 128 tokens) with its activations' relative error
against pinned float32. The three settings:
- pinned_fp32: repro's default (repro.science.numerics: AVX2 kernels, MKL's COMPATIBLE
  branch, 2 threads), bit-stable;
- native_fp32: `REPRO_NUMERICS=native`, the machine's own kernels and threads;
- native_bf16: native, the SAE's encoder product in bfloat16 (`sae.autocast`), the model's
  weights in bfloat16.
The settings are process-wide (ATen picks its kernels at the first one), so each runs in a
subprocess, `python -m repro.bench.arithmetic SETTING DATA OUT`, on activations the parent
captured once (pinned float32): every setting trains on the same data. The CPU's features
(lscpu flags: avx512_bf16, amx_bf16, amx_tile) are recorded: bfloat16 is fast only where the
CPU multiplies it natively (AMX, AVX-512 BF16); elsewhere it is emulated.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SETTINGS = {"pinned_fp32": ("pinned", False), "native_fp32": ("native", False),
            "native_bf16": ("native", True)}
"""Setting: (REPRO_NUMERICS, bfloat16)."""
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
MODEL = "smollm2-135m"


def cpu_features(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's model and which of FLAGS it has, from /proc/cpuinfo (what lscpu shows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name", ""), **{flag: flag in flags for flag in FLAGS},
            "cores": os.cpu_count()}


def arithmetic(quick: bool, repeats: int) -> dict[str, Any]:
    """Every setting in its own process, on the same captured activations; ratios against
    pinned float32 (above 1: faster)."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.safetensors"
        save_file(_capture(quick), str(data))
        got = {name: _run(name, data, Path(tmp) / f"{name}.json", repeats)
               for name in SETTINGS}
        _compare_forwards(got, Path(tmp))
    base = got["pinned_fp32"]
    for x in got.values():
        x["sae_speedup"] = base["sae_seconds_per_step"] / x["sae_seconds_per_step"]
        x["forward_speedup"] = base["forward_seconds"] / x["forward_seconds"]
        x["ev_minus_pinned_fp32"] = x["explained_variance"] - base["explained_variance"]
    return {"cpu": cpu_features(), "settings": got,
            "shapes": {"d_model": 576, "sae": _sae_shape(),
                       "forward": "8 x 128 tokens to layer 15"}}


def _capture(quick: bool) -> dict[str, Any]:
    """SmolLM2's probe activations (pinned float32) over the small profile's sae_train and
    eval tokens (a quarter of them with --quick), special tokens dropped."""
    import torch

    from repro.inputs.data import special_token_mask, token_stream
    from repro.inputs.models import load_model, load_tokenizer
    from repro.science.activations import iter_probe

    study = _small_study()
    spec = study.models[MODEL]
    model = load_model(spec, dtype="float32", device=torch.device("cpu"))
    tokenizer = load_tokenizer(spec)
    out = {}
    for stream in ("sae_train", "eval"):
        ids = token_stream(study.data.streams[stream], tokenizer)
        ids = ids[: len(ids) // 4] if quick else ids
        acts = torch.cat(list(iter_probe(model, ids, spec.probe_layer, 8)))
        out[stream] = acts[special_token_mask(ids, tokenizer)].float().contiguous()
    out["forward_ids"] = token_stream(study.data.streams["eval"], tokenizer)[:8].contiguous()
    return out


def _sae_shape() -> str:
    sae = _small_study().sae
    return f"width {sae.width}, k {sae.k}, batch {sae.batch_tokens}"


def _small_study():
    from repro.study.reader import load_study, profile_path

    return load_study(profile_path("small"))


def _run(name: str, data: Path, out: Path, repeats: int) -> dict[str, Any]:
    """One setting in a fresh process, with none of this process's pins in its environment."""
    from repro.science.numerics import MODE_VARIABLE, PINNED_ENV

    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    env[MODE_VARIABLE] = SETTINGS[name][0]
    subprocess.run([sys.executable, "-m", "repro.bench.arithmetic", name, str(data), str(out),
                    str(repeats)], env=env, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


def _compare_forwards(got: dict[str, dict[str, Any]], folder: Path) -> None:
    """Relative RMS error of each setting's probe activations against pinned float32's."""
    from safetensors.torch import load_file

    base = load_file(str(folder / "pinned_fp32.acts.safetensors"))["acts"].double()
    for name, x in got.items():
        acts = load_file(str(folder / f"{name}.acts.safetensors"))["acts"].double()
        x["forward_relative_rms_error"] = float((acts - base).pow(2).mean().sqrt()
                                                / base.pow(2).mean().sqrt())


def measure(name: str, data: Path, out: Path, repeats: int) -> None:
    """In the subprocess: pin (or not), then time SAE training and the forward."""
    from repro.science.numerics import pin_cpu

    numerics = pin_cpu()  # before any kernel; does nothing when REPRO_NUMERICS=native
    import time

    import torch
    from safetensors.torch import load_file, save_file

    from repro.inputs.models import load_model
    from repro.science import sae_batch, sae_streams

    bf16 = SETTINGS[name][1]
    tensors = load_file(str(data))
    sae_spec = _small_study().sae
    sae_spec = dataclasses.replace(sae_spec, epochs=1, autocast=bf16)
    seconds, ev = [], 0.0
    for _ in range(repeats):
        stream = sae_streams.tensor_stream(tensors["sae_train"], batch_tokens=sae_spec.batch_tokens,
                                    seed=0)
        started = time.perf_counter()
        (sae, record), = sae_batch.fit_saes([stream], spec=sae_spec, seeds=[0],
                                            device=torch.device("cpu"), layer=15,
                                            metadata=[{}])
        seconds.append((time.perf_counter() - started) / record["steps"])
        ev = _explained_variance(sae, tensors["eval"])
    model = load_model(_small_study().models[MODEL], dtype="bfloat16" if bf16 else "float32",
                       device=torch.device("cpu"))
    forward = []
    for _ in range(repeats + 1):  # the first call warms up
        started = time.perf_counter()
        acts = _probe(model, tensors["forward_ids"])
        forward.append(time.perf_counter() - started)
    save_file({"acts": acts.float().contiguous()}, str(out.with_suffix(".acts.safetensors")))
    out.write_text(json.dumps({
        "numerics": numerics, "bfloat16": bf16, "sae_seconds_per_step": min(seconds),
        "sae_seconds_per_step_all": seconds, "explained_variance": ev,
        "forward_seconds": min(forward[1:]), "forward_seconds_all": forward[1:]}))


def _probe(model: Any, ids: Any) -> Any:
    from repro.science.activations import probe

    return probe(model, ids, _small_study().models[MODEL].probe_layer)


def _explained_variance(sae: Any, x: Any) -> float:
    import torch

    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


if __name__ == "__main__":
    measure(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
