"""`repro bench [--device cpu|cuda] [--out DIR] [--repeats N] [--quick] [--estimate]`.

Times the hot paths per unit of work and, side by side in one process, against a reference
doing the same work (repro/bench/paths.py, prune_paths.py, saelens.py): activation capture
(probe hook vs all-layers forward), SAE training (SAEs per hour: sae-lens's runner, one
at a time with sae-lens's trainer, and many together, repro.science.sae_batch), Wanda
(project vs the reference algorithm per sequence), matching (block-wise vs one-shot), and
CE-loss evaluation. Models: the paper's architectures from their declared configs with
random weights (repro/bench/paper_configs.py), and the shipped tiny models. On a CPU the paper
architectures run with fewer layers and tokens (said in the output) except the capture
ratio, which needs the real depth. Writes bench.json and bench.md; with --estimate also the
predicted budget of a whole profile (repro/bench/estimate.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repro.bench import arithmetic as bench_arithmetic
from repro.bench import estimate as be
from repro.bench import paths as bp
from repro.bench import prune_paths as pp
from repro.bench import real as bench_real
from repro.bench.paper_configs import PAPER_ARCHS, build_model
from repro.inputs.families import prunable_matrices, weight_of
from repro.inputs.models import to_device
from repro.study.rules import FieldError, whole

PARTS = ("capture", "paper", "tiny", "wanda", "match", "sae", "smollm2", "arithmetic")
TINY_DIR = Path(__file__).resolve().parents[1] / "assets" / "tiny" / "models"
GOALS = {"capture": 1.8, "sae_training": 1.0}
"""Speed-ups the project aims for (issue 7); the others are reported without a goal."""


@dataclass(frozen=True)
class Settings:
    """Sizes of one bench run, chosen from the device and --quick."""

    device: str
    quick: bool
    repeats: int
    seq_len: int
    """Tokens per sequence of the timed forwards."""
    paper_layers: int | None
    """Decoder layers built for the paper architectures (None: all)."""
    paper_models: tuple[str, ...]
    calib_seqs: int
    """Calibration sequences of the Wanda timings on the paper architectures."""
    sae_batch: int
    sae_steps: int
    match_size: int
    tiny_seqs: int
    """Sequences of the tiny-model timings (capture, CE-loss, SAE training)."""

    @classmethod
    def make(cls, device: torch.device, quick: bool, repeats: int | None,
             match_size: int | None) -> Settings:
        cuda = device.type == "cuda"
        return cls(
            device=str(device), quick=quick, repeats=repeats or (2 if quick else 3),
            seq_len=1024 if cuda else (64 if quick else 128),
            paper_layers=None if cuda else 1,
            paper_models=("gemma-3-1b",) if quick else tuple(PAPER_ARCHS),
            calib_seqs=16 if cuda else 2, sae_batch=4096 if cuda else (128 if quick else 256),
            sae_steps=20 if cuda else 1,
            match_size=match_size or (1024 if quick else 16384),
            tiny_seqs=256 if cuda else (64 if quick else 256))


def _log(msg: str, started: float) -> None:
    print(f"[bench {time.time() - started:6.1f}s] {msg}", flush=True)


# ---- parts ----------------------------------------------------------------------------------

def capture_ratio(s: Settings, device: torch.device) -> dict[str, Any]:
    """gemma-3-1b at its real depth (26 layers), probe layer 13: the ratio depends on depth."""
    arch = PAPER_ARCHS["gemma-3-1b"]
    n_layers = arch.n_layers if not s.quick else 4
    model = build_model("gemma-3-1b", n_layers=n_layers, device=device, dtype=_dtype(device))
    layer = arch.probe_layer if not s.quick else 1
    ids = bp.random_ids(1 if device.type == "cpu" else 8, s.seq_len, arch.values["vocab_size"], 2)
    with bp.autocast(device):
        got = bp.capture(model, ids, layer, s.repeats)
    del model
    t = got["times"]
    return {"model": "gemma-3-1b", "layers_built": n_layers, "probe_layer": layer,
            "tokens": got["tokens"], "same_activations": got["same_activations"],
            "ratio_vs_lm": bp.ratio_spread(t["all_layers_lm"], t["probe"]),
            "ratio_vs_stack": bp.ratio_spread(t["all_layers_stack"], t["probe"]),
            "probe_tokens_per_s": bp.per_second(got["tokens"], t["probe"])}


def paper_rates(s: Settings, device: torch.device, key: str) -> dict[str, Any]:
    """Per-unit costs of one paper architecture (reduced depth on a CPU)."""
    arch = PAPER_ARCHS[key]
    model = build_model(key, n_layers=s.paper_layers, device=device, dtype=_dtype(device))
    vocab, bos = arch.values["vocab_size"], arch.values["bos_token_id"]
    with bp.autocast(device):
        split = bp.forward_split(model, bp.random_ids(1, s.seq_len, vocab, bos), s.repeats)
    masks = pp.mask_costs(model, 0.5)
    calib = bp.random_ids(s.calib_seqs, s.seq_len, vocab, bos, seed=1)
    from repro.science import prune
    wanda_s = bp.timed(lambda: prune.prune_wanda(model, calib, 0.5, batch_size=8), device)[0]
    sgpt = pp.sparsegpt_costs(model, calib.numel())
    d = arch.values["hidden_size"]
    step = bp.sae_steps(d, 16384, 64, s.sae_batch, s.sae_steps, device)
    rates = be.Rates(split["layer_s_per_token"], split["head_s_per_token"],
                     masks["mask_seconds_per_layer"], masks["magnitude_seconds_per_layer"],
                     step["seconds"] / step["tokens"], sgpt["sparsegpt_s_per_layer"],
                     sgpt["hessian_s_per_token"])
    L, p = arch.n_layers, arch.probe_layer
    to_probe = (p + 1) * rates.layer_s_per_token
    upper = (L - p - 1) * rates.layer_s_per_token + rates.head_s_per_token
    wanda_layer = (2 * 128 * 2048 * rates.layer_s_per_token + rates.wanda_mask_s_per_layer)
    return {"layers_built": split["layers_run"], "layers_real": L, "probe_layer": p,
            "tokens_per_forward": split["tokens"], "rates": asdict(rates),
            "wanda_measured": {"seconds": wanda_s, "calibration_tokens": calib.numel(),
                               "layers": split["layers_run"]},
            "derived": {"capture_tokens_per_s": 1 / to_probe,
                        "sae_training_tokens_per_s": 1 / (to_probe + rates.sae_s_per_token),
                        "ce_eval_tokens_per_s": 1 / (3 * upper),
                        "wanda_s_per_layer_128x2048": wanda_layer,
                        "sparsegpt_s_per_layer_128x2048": wanda_layer
                        - rates.wanda_mask_s_per_layer + rates.sparsegpt_s_per_layer
                        + 128 * 2048 * rates.hessian_s_per_token}}


def tiny_rates(s: Settings, device: torch.device) -> dict[str, Any]:
    """The stage functions themselves on the shipped tiny models (--quick: gemma-3-tiny only),
    no extrapolation."""
    folders = [TINY_DIR / "gemma-3-tiny"] if s.quick else sorted(TINY_DIR.iterdir())
    return {folder.name: _tiny_one(folder, s, device) for folder in folders}


def _tiny_one(folder: Path, s: Settings, device: torch.device) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from repro.science import activations, prune
    from repro.science.saes import train_sae
    from repro.study.spec import SaeSpec

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model = to_device(model, device).eval().requires_grad_(False)
    cfg = model.config
    ids = bp.random_ids(s.tiny_seqs, 128, cfg.vocab_size, cfg.bos_token_id)
    layer = cfg.num_hidden_layers // 2
    cap = [bp.timed(lambda: [activations.probe(model, ids[i:i + 32], layer)
                             for i in range(0, len(ids), 32)], device)[0]
           for _ in range(s.repeats)]
    dense = {n: weight_of(m).clone() for n, m in prunable_matrices(model).items()}
    calib = bp.random_ids(32, 128, cfg.vocab_size, cfg.bos_token_id, seed=1)
    wanda_s = bp.timed(lambda: prune.prune_wanda(model, calib, 0.5, batch_size=32), device)[0]
    restore(model, dense)
    sae = bp.random_sae(cfg.hidden_size, 512, 16, layer, device)
    ce = bp.ce_eval(model, ids[:64], layer, sae, batch_size=8, repeats=s.repeats)
    keep = ids != cfg.bos_token_id
    spec = SaeSpec(width=512, k=16, lr=1e-3, batch_tokens=1024)
    sae_s, (_, rec) = bp.timed(lambda: train_sae(
        model, ids, keep, layer=layer, spec=spec, seed=0, seq_batch=32,
        metadata={"model_name": folder.name}), device)
    return {"capture_tokens_per_s": bp.per_second(ids.numel(), cap),
            "wanda_s_per_layer": wanda_s / cfg.num_hidden_layers,
            "ce_eval_tokens_per_s": bp.per_second(ce["tokens"], ce["times"]),
            "sae_training_tokens_per_s": rec["n_tokens"] / sae_s,
            "probe_layer": layer, "layers": cfg.num_hidden_layers}


def restore(model: torch.nn.Module, dense: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, m in prunable_matrices(model).items():
            weight_of(m).copy_(dense[n])


def wanda_ratio(s: Settings, device: torch.device) -> dict[str, Any]:
    """Project vs reference Wanda on gemma-3-tiny (the tiny profile's 32 x 128 calibration),
    and on gemma-3-1b's architecture (reduced depth on a CPU) unless --quick."""
    from transformers import AutoModelForCausalLM

    out = {}
    model = to_device(AutoModelForCausalLM.from_pretrained(str(TINY_DIR / "gemma-3-tiny"),
                                                           dtype=torch.float32), device).eval()
    calib = bp.random_ids(32 if not s.quick else 8, 128, model.config.vocab_size, 2, seed=1)
    out["gemma-3-tiny"] = pp.wanda(model.requires_grad_(False), calib, 0.5, batch_size=32,
                                   repeats=s.repeats)
    if not s.quick:
        model = build_model("gemma-3-1b", n_layers=s.paper_layers, device=device,
                            dtype=_dtype(device))
        calib = bp.random_ids(s.calib_seqs, s.seq_len, 262144, 2, seed=1)
        out["gemma-3-1b"] = pp.wanda(model, calib, 0.5, batch_size=8, repeats=s.repeats)
    for r in out.values():
        r["ratio"] = bp.ratio_spread(r["times"]["reference"], r["times"]["project"])
    return out


def match_ratio(s: Settings, device: torch.device) -> dict[str, Any]:
    got = bp.matching(s.match_size, 1152, s.repeats, device)
    got["ratio"] = bp.ratio_spread(got["times"]["reference"], got["times"]["project"])
    return got


def sae_ratio(s: Settings, device: torch.device) -> dict[str, Any]:
    """SAEs per hour three ways (repro.bench.saelens.sae_ways): gemma-3-tiny at the tiny
    profile's SAE, and SmolLM2-135M at the small profile's when it is fetched."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repro.bench.saelens import sae_ways
    from repro.study.spec import SaeSpec

    folder = TINY_DIR / "gemma-3-tiny"
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model = to_device(model, device).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = bp.random_ids(s.tiny_seqs, 128, model.config.vocab_size, tokenizer.bos_token_id, seed=2)
    out = {"gemma-3-tiny": sae_ways(model, tokenizer, ids, ids != tokenizer.bos_token_id,
                                    layer=3, spec=SaeSpec(width=512, k=16, lr=1e-3,
                                                          batch_tokens=1024),
                                    seq_batch=32, repeats=s.repeats)}
    if not bench_real.absent(("smollm2",), explicit=False):  # SmolLM2 is fetched
        out["smollm2-135m"] = bench_real.sae_ways(s.quick, s.repeats, device)
    for x in out.values():
        t = x["times"]
        x["ratio"] = bp.ratio_spread(t["sae_lens_runner"], t["one_at_a_time"])
        x["ratio_replay"] = bp.ratio_spread(t["sae_lens_runner"], t["one_at_a_time_replayed"])
        for name, n in x["saes"].items():  # per SAE: the runner's time over a 1/n share
            if name.startswith("together"):
                x[f"ratio_{name}"] = bp.ratio_spread(t["sae_lens_runner"],
                                                     [v / n for v in t[name]])
    return out


def _dtype(device: torch.device) -> torch.dtype:
    """The study's dtype on CUDA (bf16); float32 on the CPU, as the tiny profile."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ---- the command ------------------------------------------------------------------------------

SIZES = {
    "--repeats": whole(1, 1000, "timed rounds of each comparison", optional=True),
    "--match-size": whole(2, 2**16, "features per SAE to match: width x width cosines, as "
                          "sae.width", optional=True),
}
"""The sizes `repro bench` takes, each with its rule (unset: the bench's defaults)."""


def check_sizes(repeats: int | None, match_size: int | None) -> None:
    """--repeats and --match-size within their rules, before anything runs."""
    for (option, rule), value in zip(SIZES.items(), (repeats, match_size), strict=True):
        try:
            rule.check(option, value)
        except FieldError as exc:
            raise exc.at("repro bench", fix=f"give {option} in that range") from None


def run_bench(device: torch.device, out: Path, *, repeats: int | None = None,
              quick: bool = False, only: tuple[str, ...] = PARTS, explicit: bool = False,
              match_size: int | None = None, estimate_profile: str | None = None) -> dict:
    """Run the selected parts, write out/bench.json and out/bench.md, return the record."""
    from repro.stages.provenance import provenance

    s = Settings.make(device, quick, repeats, match_size)
    if estimate_profile and "paper" not in only:
        only = (*only, "paper")
    started = time.time()
    record: dict[str, Any] = {"settings": asdict(s), "parts": list(only),
                              "dtype": {"paper_archs": str(_dtype(device)),
                                        "tiny": "torch.float32"},
                              "provenance": provenance(device), "ratios": {}}
    steps: dict[str, Callable[[], Any]] = {
        "capture": lambda: capture_ratio(s, device),
        "paper": lambda: {k: paper_rates(s, device, k) for k in s.paper_models},
        "tiny": lambda: tiny_rates(s, device), "wanda": lambda: wanda_ratio(s, device),
        "match": lambda: match_ratio(s, device), "sae": lambda: sae_ratio(s, device),
        "smollm2": lambda: bench_real.smollm2(s.quick, s.repeats, device),
        "arithmetic": lambda: bench_arithmetic.arithmetic(s.quick, s.repeats)}
    skipped = bench_real.absent(only, explicit)
    record["skipped"] = skipped
    for part in PARTS:
        if part in only and part not in skipped:
            _log(f"{part} ...", started)
            t0 = time.time()
            record[part] = steps[part]()
            record[part + "_seconds"] = round(time.time() - t0, 2)
    _summarise(record)
    if estimate_profile:
        record["estimate"] = _estimate(record, estimate_profile)
    record["wall_seconds"] = round(time.time() - started, 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    from repro.bench.report import markdown

    (out / "bench.md").write_text(markdown(record))
    return record


def _summarise(record: dict[str, Any]) -> None:
    """The side-by-side ratios in one place, each with its spread and goal."""
    r = record["ratios"]
    if "capture" in record:
        c = record["capture"]
        r["capture"] = {**c["ratio_vs_lm"], "goal": GOALS["capture"],
                        "what": f"probe hook vs all-layers LM forward, {c['model']} "
                                f"{c['layers_built']} layers, probe {c['probe_layer']}",
                        "check": c["same_activations"]}
        r["capture_no_head"] = {**c["ratio_vs_stack"], "goal": None,
                                "what": "probe hook vs all-layers decoder stack (no LM head)",
                                "check": c["same_activations"]}
    for model, x in record.get("sae", {}).items():
        r[f"sae_training_{model}"] = {
            **x["ratio"], "goal": GOALS["sae_training"], "check": True,
            "what": f"saes.train_sae vs sae-lens LanguageModelSAETrainingRunner "
                    f"(HookedProxyLM), {model}"}
        r[f"sae_training_replayed_{model}"] = {
            **x["ratio_replay"], "goal": GOALS["sae_training"], "check": True,
            "what": f"a further seed replaying the recorded probe activations "
                    f"(sae_streams.ProbeCapture) vs the sae-lens runner, {model}"}
        together = max(n for n in x["saes"].values())
        r[f"sae_training_together{together}_{model}"] = {
            **x[f"ratio_together_{together}"], "goal": None, "check": True,
            "what": f"{together} SAEs in one pass (sae_batch.train_saes), time per SAE, vs "
                    f"the sae-lens runner, {model}"}
    for name, x in record.get("wanda", {}).items():
        r[f"wanda_{name}"] = {**x["ratio"], "goal": None, "check": x["masks_equal"],
                              "what": f"prune_wanda vs per-sequence reference, {name}"}
    if "smollm2" in record:
        r.update(bench_real.ratios(record["smollm2"], GOALS))
    if "match" in record:
        x = record["match"]
        r["matching"] = {**x["ratio"], "goal": None, "check": x["same_assignment"],
                         "what": f"block-wise cosine + Hungarian vs one-shot, "
                                 f"{x['n']} x {x['n']}"}


def _estimate(record: dict[str, Any], profile: str) -> dict[str, Any]:
    from repro.study.reader import load_study, profile_path

    study = load_study(profile_path(profile))
    paper = record["paper"]
    fallback = paper.get("gemma-3-1b") or next(iter(paper.values()))
    rates = {}
    for key in study.models:
        got = paper.get(key)
        rates[key] = be.Rates(**(got or fallback)["rates"])
    match = record.get("match")
    if match and match["n"] == study.sae.width:
        match_s = float(np.median(match["times"]["project"]))
        match_note = "measured"
    elif match:  # Hungarian grows at most as n^3: an upper bound
        match_s = float(np.median(match["times"]["project"])) * (study.sae.width / match["n"]) ** 3
        match_note = f"scaled as n^3 from {match['n']}"
    else:
        match_s = 92.0
        match_note = "repro/science/match.py docstring (measured on this project's CPU)"
    est = be.estimate(study, rates, match_s)
    est["footprint"] = be.footprint(study)
    est["match_seconds_per_pair"] = {"value": match_s, "source": match_note}
    est["models_measured"] = [k for k in study.models if k in paper]
    est["profile"] = profile
    return est
