"""`repro bench`: its reference twins agree with the project's paths, its record has the
fields docs/performance.md quotes, the budget arithmetic scales as it should, and the paper's
declared architectures have the published parameter counts."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import make_model, random_ids

from repro.bench import estimate as be
from repro.bench import paths as bp
from repro.bench import prune_paths as pp
from repro.bench.paper_configs import PAPER_ARCHS, build_config, layer_params, param_count
from repro.inputs.footprint import KNOWN_MODELS
from repro.science import match, prune
from repro.study.reader import load_study, profile_path


@pytest.mark.parametrize("sparsity", [0.3, 0.5])
def test_reference_wanda_twin_gives_the_project_masks(arch: str, sparsity: float) -> None:
    model = make_model(arch, n_layers=3, hidden=32)
    calib = random_ids(6, 12)
    ours = prune.prune_wanda(copy.deepcopy(model), calib, sparsity, batch_size=4)
    reference = pp.reference_wanda(copy.deepcopy(model), calib, sparsity)
    assert ours.keys() == reference.keys()
    for name in ours:
        assert torch.equal(ours[name], reference[name]), name


def test_bench_wanda_reports_equal_masks_and_restores_weights() -> None:
    model = make_model("Gemma3ForCausalLM", n_layers=2, hidden=32)
    before = {n: p.clone() for n, p in model.named_parameters()}
    got = pp.wanda(model, random_ids(4, 12), 0.5, batch_size=2, repeats=1)
    assert got["masks_equal"] and got["mask_entries_differing"] == 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_bench_sparsegpt_costs_leave_the_weights_and_count_every_matrix() -> None:
    model = make_model("LlamaForCausalLM", n_layers=1, hidden=32, dtype=torch.float32)
    before = {n: p.clone() for n, p in model.named_parameters()}
    got = pp.sparsegpt_costs(model, 64)
    assert got["sparsegpt_s_per_layer"] > 0 and got["hessian_s_per_token"] > 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_one_shot_and_blockwise_matching_agree() -> None:
    a, b = bp.decoders(300, 32)
    blockwise = match.hungarian_match(a, b, block=64).index
    assert np.array_equal(blockwise, bp.one_shot_match(a, b))
    assert len(set(blockwise.tolist())) == 300


def test_quick_bench_writes_json_and_markdown(tmp_path) -> None:
    from repro.bench.run import run_bench

    record = run_bench(torch.device("cpu"), tmp_path, quick=True, repeats=1,
                       only=("tiny", "match"), match_size=256)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["settings"]["quick"] is True and saved["settings"]["match_size"] == 256
    assert {"code_version", "packages", "device"} <= saved["provenance"].keys()
    assert saved["dtype"]["tiny"] == "torch.float32"
    tiny = saved["tiny"]["gemma-3-tiny"]
    for key in ("capture_tokens_per_s", "ce_eval_tokens_per_s"):
        assert tiny[key]["median"] > 0, key
    assert tiny["sae_training_tokens_per_s"] > 0 and tiny["wanda_s_per_layer"] > 0
    ratio = saved["ratios"]["matching"]
    assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"] and ratio["check"] is True
    assert record["wall_seconds"] > 0
    text = (tmp_path / "bench.md").read_text()
    assert "256 x 256" in text and "gemma-3-tiny" in text


def test_estimate_scales_with_tokens_and_counts_the_study() -> None:
    study = load_study(profile_path("paper"))
    work = be.study_work(study)
    assert sum(w["runs"] for w in work.values()) == 22  # the paper's runs, evaluated
    assert sum(w["control_saes"] for w in work.values()) == 20
    assert {w["replicates"] for w in work.values()} == {3} and len(study.runs) == 3 * 42
    g = work["gemma-3-1b"]
    assert g["variants"] == 13 and g["wanda"] == 6 and g["magnitude"] == 6
    assert g["sparsegpt"] == 0
    assert g["match_pairs"] == 12 + 3 + 13  # conditions, RQ1 seed pairs, control SAEs
    rates = be.Rates(1e-3, 5e-3, 2.0, 3.0, 4e-3)
    base = be.stage_seconds(g, rates, 60.0)
    doubled = be.stage_seconds({**g, **{k: 2 * g[k] for k in (
        "sae_tokens", "eval_tokens", "causal_tokens", "ppl_tokens")}}, rates, 60.0)
    for stage in ("sae", "activations", "perplexity", "evaluate"):
        assert doubled[stage] == pytest.approx(2 * base[stage]), stage
    assert doubled["prune"] == base["prune"] and doubled["analyze"] == base["analyze"]
    # RQ5 on a quarter of the evaluation sequences: its causal passes cost a quarter
    assert g["causal_tokens"] == g["eval_tokens"]  # the paper ablates on all of them
    quarter = be.stage_seconds({**g, "causal_tokens": g["eval_tokens"] // 4}, rates, 60.0)
    no_rq5 = be.stage_seconds({**g, "dense_runs": 0}, rates, 60.0)
    assert quarter["evaluate"] - no_rq5["evaluate"] == pytest.approx(
        (base["evaluate"] - no_rq5["evaluate"]) / 4)
    # one replicate instead of three: the replicates' SAE steps, evaluation and matching go
    single = be.stage_seconds({**g, "replicates": 1}, rates, 60.0)
    assert base["analyze"] == pytest.approx(3 * single["analyze"])
    steps = g["sae_tokens"] * rates.sae_s_per_token * (g["runs"] + g["control_saes"])
    assert base["sae"] - single["sae"] == pytest.approx(2 * steps)
    # the SAEs of a variant train together: its model runs once, however many SAEs read it
    forward = g["variants"] * g["sae_tokens"] * (g["probe_layer"] + 1) * rates.layer_s_per_token
    assert single["sae"] == pytest.approx(forward + steps)
    assert base["prune"] == single["prune"] and base["perplexity"] == single["perplexity"]
    est = be.estimate(study, dict.fromkeys(study.models, rates), 60.0)
    assert est["total_s"] == pytest.approx(sum(est["stages"].values()))
    assert 0 < est["h100_class_total_s"] < est["total_s"]
    # the matchings run in parallel processes: on the GPU host, 7 at once (15 of its 16
    # cores at the paper profile's pinned 2 threads); on this machine as many as it holds
    pairs = sum(w["match_pairs"] for w in work.values())
    host = est["assumptions"]["match_workers_gpu_host"]
    assert study.numerics == "pinned" and host == 7
    assert est["h100_class_stages"]["analyze"] == pytest.approx(3 * pairs * 60.0 / host)
    assert est["stages"]["analyze"] == pytest.approx(
        3 * pairs * 60.0 / est["assumptions"]["match_workers"])


def test_estimate_prices_every_method_and_sparsegpt_by_its_own_work() -> None:
    """Every method of the registry has a cost; SparseGPT's grows with its solve and its
    Hessian's tokens, and paper-plus adds SparseGPT and 2:4 to the paper's prune stage (it
    prunes with every pruning method and quantizes with none)."""
    from repro.study.methods import METHODS, PRUNING_METHODS

    plus = load_study(profile_path("paper-plus"))
    work = be.study_work(plus)
    rates = be.Rates(1e-3, 5e-3, 2.0, 3.0, 4e-3, 7.0, 1e-4)
    pruning = {m for m in PRUNING_METHODS if METHODS[m].prunes}
    for key, w in work.items():
        assert {m for m in PRUNING_METHODS if w[m]} == pruning, key
        for m in PRUNING_METHODS:
            assert be.prune_seconds_per_layer(m, w, rates) > 0, m
    g = work["gemma-3-1b"]
    more = be.Rates(1e-3, 5e-3, 2.0, 3.0, 4e-3, 8.0, 2e-4)
    extra = be.stage_seconds(g, more, 60.0)["prune"] - be.stage_seconds(g, rates, 60.0)["prune"]
    assert extra == pytest.approx(g["sparsegpt"] * g["n_layers"] * (
        1.0 + 1e-4 * g["calibration_tokens"]))
    paper = be.estimate(load_study(profile_path("paper")), dict.fromkeys(plus.models, rates), 60)
    est = be.estimate(plus, dict.fromkeys(plus.models, rates), 60.0)
    assert est["h100_class_stages"]["prune"] > paper["h100_class_stages"]["prune"]
    gpu = be.gpu_rates("gemma-2-2b", 16384, 64)  # computed: the 9216-input down_proj dominates
    # an SAE step: the encoder's one dense product, the rest over the k active latents only
    wider = be.gpu_rates("gemma-2-2b", 2 * 16384, 64)
    assert wider.sae_s_per_token / gpu.sae_s_per_token == pytest.approx(
        (2 * 32768 + 8 * 64) / (2 * 16384 + 8 * 64))
    assert gpu.hessian_s_per_token > 0 and gpu.sparsegpt_s_per_layer > 9216**3 * 2 / 67e12


@pytest.mark.parametrize("key", list(PAPER_ARCHS))
def test_paper_configs_have_the_published_parameter_counts(key: str) -> None:
    arch = PAPER_ARCHS[key]
    n = param_count(key)
    assert n == pytest.approx(KNOWN_MODELS[arch.source].n_params, rel=0.02)
    vocab, d = arch.values["vocab_size"], arch.values["hidden_size"]
    norms = param_count(key) - vocab * d - arch.n_layers * layer_params(key)
    assert 0 < norms < 0.001 * n  # what is left besides embeddings and Linears: norms
    assert KNOWN_MODELS[arch.source].d_model == d


def test_reduced_config_keeps_the_layer_types() -> None:
    full, reduced = build_config("gemma-3-1b"), build_config("gemma-3-1b", n_layers=7)
    assert reduced.num_hidden_layers == 7
    assert reduced.layer_types == full.layer_types[:7]
    assert full.layer_types[5] == "full_attention" and full.layer_types[4] == "sliding_attention"
    with pytest.raises(ValueError):
        build_config("gemma-3-1b", n_layers=27)


def test_sae_ways_times_the_three_ways_side_by_side() -> None:
    """SAEs per hour of sae-lens's runner, one SAE at a time and S together, all measured
    in the same rounds on the same tokens; together_S counts S SAEs per run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repro.bench.run import TINY_DIR
    from repro.bench.saelens import sae_ways
    from repro.study.spec import SaeSpec

    folder = TINY_DIR / "gemma-3-tiny"
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = bp.random_ids(8, 64, model.config.vocab_size, tokenizer.bos_token_id)
    got = sae_ways(model, tokenizer, ids, ids != tokenizer.bos_token_id, layer=3,
                   spec=SaeSpec(width=64, k=4, lr=1e-3, batch_tokens=128), seq_batch=4,
                   repeats=1, groups=(1, 3))
    assert list(got["times"]) == ["sae_lens_runner", "one_at_a_time", "one_at_a_time_replayed",
                                  "together_1", "together_3"]
    assert got["saes"]["together_3"] == 3 and got["saes"]["one_at_a_time"] == 1
    for name, times in got["times"].items():
        assert len(times) == 1 and times[0] > 0
        assert got["saes_per_hour"][name]["median"] == pytest.approx(
            3600 * got["saes"][name] / times[0])
    assert got["tokens"] == 8 * 63 and got["steps"] == 4


def test_arithmetic_reads_the_cpu_flags_and_runs_each_setting_unpinned(monkeypatch,
                                                                       tmp_path) -> None:
    """The bfloat16 features come from the flags line (whole words only), and each setting's
    subprocess starts without this process's pins, so `native` is really native."""
    import subprocess

    from repro.bench import arithmetic
    from repro.science.numerics import MODE_VARIABLE, PINNED_ENV

    info = "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16x avx512_bf16\n"
    got = arithmetic.cpu_features(info)
    assert got["cpu"] == "AMD EPYC" and got["avx512_bf16"] and got["avx2"]
    assert not got["amx_bf16"] and not got["amx_tile"]
    assert not arithmetic.cpu_features("flags : avx512_bf16x")["avx512_bf16"]
    seen = {}

    def fake_run(cmd, env, check):
        seen[cmd[3]] = env
        (tmp_path / "out.json").write_text("{}")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # what pin_cpu leaves in the environment
    for name in arithmetic.SETTINGS:
        arithmetic._run(name, tmp_path / "data", tmp_path / "out.json", 1)
    assert {name: env[MODE_VARIABLE] for name, env in seen.items()} == {
        "pinned_fp32": "pinned", "native_fp32": "native", "native_bf16": "native"}
    assert not any(key in env for env in seen.values() for key in PINNED_ENV)
