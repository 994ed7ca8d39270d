"""RQ3-RQ5 measurements against slow, obvious versions on tiny random models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_model, random_ids
from test_saes import random_sae

from repro.inputs.families import decoder_layers
from repro.science import activations, evaluate

SPECIAL = [0, 1, 2]
LAYER = 1


def _ids(n: int = 6, length: int = 12) -> torch.Tensor:
    ids = random_ids(n, length)
    ids[2, 5] = 2  # an EOS inside a sequence
    return ids


def _keep(ids: torch.Tensor) -> torch.Tensor:
    return ~torch.isin(ids, torch.tensor(SPECIAL))


@torch.no_grad()
def _mean_ce(model, ids, hook=None) -> float:
    """Next-token CE over predictions from non-special positions, the model run whole."""
    handle = decoder_layers(model)[LAYER].register_forward_hook(hook) if hook else None
    try:
        logits = model(input_ids=ids).logits[:, :-1].double()
    finally:
        if handle:
            handle.remove()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                           reduction="none").view(ids.shape[0], -1)
    return float(loss[_keep(ids)[:, :-1]].mean())


def test_ce_loss_score_equals_a_hand_computation(arch: str) -> None:
    model = make_model(arch, dtype=torch.float32)
    layer_types = [type(m) for m in decoder_layers(model)]
    sae, other = random_sae(32, layer=LAYER), random_sae(32, layer=LAYER, seed=1)
    ids = _ids()
    keep = _keep(ids)
    got = evaluate.ce_loss_scores(model, {"a": sae, "b": other}, ids,
                                  activations.probe(model, ids, LAYER), keep, layer=LAYER,
                                  batch_size=4)
    clean = _mean_ce(model, ids)
    zero = _mean_ce(model, ids, lambda _m, _i, out: torch.zeros_like(out))
    for name, s in (("a", sae), ("b", other)):
        spliced = _mean_ce(model, ids, lambda _m, _i, out, s=s: torch.where(keep[..., None],
                                                                               s(out), out))
        assert got[name]["ce_loss_without_sae"] == pytest.approx(clean, abs=1e-5)
        assert got[name]["ce_loss_with_ablation"] == pytest.approx(zero, abs=1e-5)
        assert got[name]["ce_loss_with_sae"] == pytest.approx(spliced, abs=1e-5)
        # a random model barely beats zero ablation, so the score magnifies float32 noise
        assert got[name]["ce_loss_score"] == pytest.approx((zero - spliced) / (zero - clean),
                                                           rel=1e-3)
    assert [type(m) for m in decoder_layers(model)] == layer_types  # the swapped-in stand-ins left


class _Logits(torch.nn.Module):
    """What sae-lens's HookedProxyLM calls: tokens in, logits out."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=tokens).logits


def test_ce_loss_score_equals_sae_lens_own_eval() -> None:
    """The reference: sae-lens's get_downstream_reconstruction_metrics on a HookedProxyLM."""
    from sae_lens.evals import get_downstream_reconstruction_metrics
    from sae_lens.load_model import HookedProxyLM
    from sae_lens.training.activation_scaler import ActivationScaler

    model = make_model("LlamaForCausalLM", dtype=torch.float32)
    sae, ids = random_sae(32, layer=LAYER), _ids()

    batches = iter(ids.split(3))

    class Store:  # the one ActivationsStore method the eval calls
        def get_batch_tokens(self, n: int) -> torch.Tensor:
            return next(batches)

    proxy = HookedProxyLM(_Logits(model), tokenizer=None, hook_names=[f"lm.model.layers.{LAYER}"])
    proxy.mod_dict[sae.cfg.metadata.hook_name] = proxy.mod_dict[f"lm.model.layers.{LAYER}"]
    want = get_downstream_reconstruction_metrics(
        sae, proxy, Store(), ActivationScaler(), compute_kl=False, compute_ce_loss=True,
        n_batches=2, eval_batch_size_prompts=3, ignore_tokens=SPECIAL)
    got = evaluate.ce_loss_scores(model, {"a": sae}, ids, activations.probe(model, ids, LAYER),
                                  _keep(ids), layer=LAYER, batch_size=4)["a"]
    for key in ("ce_loss_with_sae", "ce_loss_without_sae", "ce_loss_with_ablation"):
        assert got[key] == pytest.approx(want[key], abs=1e-5), key
    assert got["ce_loss_score"] == pytest.approx(want["ce_loss_score"], rel=1e-3)


def test_reconstruction_metrics_match_direct_formulas() -> None:
    sae = random_sae(16, d_sae=40)
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(50, 16, generator=g) + 1.0, torch.randn(30, 16, generator=g) + 1.0]
    got = evaluate.reconstruction_metrics(sae, iter(chunks))
    x = torch.cat(chunks).double()
    f = sae.encode(x.float())
    err = (x - sae.decode(f).double()).pow(2).sum(-1)
    total_var = (x - x.mean(0)).pow(2).sum(-1).mean()
    assert got["explained_variance"] == pytest.approx(1 - float(err.mean() / total_var), abs=1e-6)
    assert got["mse"] == pytest.approx(float(err.mean()), rel=1e-6)
    assert got["l0"] == pytest.approx(float((f > 0).sum(-1).double().mean()))
    assert got["dead_fraction"] == pytest.approx(float((f.amax(0) <= 0).double().mean()))
    assert got["n_tokens"] == 80


def test_fragility_pearson_matches_numpy_corrcoef() -> None:
    sae = random_sae(16, d_sae=40)
    with torch.no_grad():
        sae.b_enc[3] = -1e4  # never among the top k: never fires on either model
    g = torch.Generator().manual_seed(1)
    dense = [torch.randn(60, 16, generator=g), torch.randn(25, 16, generator=g)]
    pruned = [d + 0.7 * torch.randn(d.shape, generator=g) for d in dense]
    tokens = [torch.arange(60), torch.arange(25)]
    got = evaluate.fragility(sae, zip(dense, tokens, strict=True), zip(pruned, tokens, strict=True))
    fd = sae.encode(torch.cat(dense)).double().numpy()
    fp = sae.encode(torch.cat(pruned)).double().numpy()
    for i in range(40):
        r = got["pearson_r"][i].item()
        if fd[:, i].std() == 0 or fp[:, i].std() == 0:
            assert np.isnan(r), i
        else:
            assert r == pytest.approx(np.corrcoef(fd[:, i], fp[:, i])[0, 1], abs=1e-9), i
    assert np.isnan(got["pearson_r"][3].item()) and got["fires_dense"][3] == 0
    assert int(torch.isfinite(got["pearson_r"]).sum()) > 20
    assert torch.equal(got["fires_pruned"], torch.from_numpy((fp > 0).sum(0)))


def test_fragility_refuses_different_tokens() -> None:
    from repro.errors import ReproError

    sae = random_sae(16)
    acts = torch.randn(5, 16)
    with pytest.raises(ReproError, match="different tokens"):
        evaluate.fragility(sae, iter([(acts, torch.arange(5))]), iter([(acts, torch.ones(5))]))


def test_stratified_sample_is_seeded_and_covers_every_bin() -> None:
    rates = np.r_[np.zeros(10), np.geomspace(1e-4, 0.5, 90)]
    feats, strata = evaluate.stratified_sample(rates, per_bin=4, n_bins=5, seed=3)
    again, _ = evaluate.stratified_sample(rates, per_bin=4, n_bins=5, seed=3)
    other, _ = evaluate.stratified_sample(rates, per_bin=4, n_bins=5, seed=4)
    assert np.array_equal(feats, again) and not np.array_equal(feats, other)
    assert np.bincount(strata).tolist() == [4] * 5 and (rates[feats] > 0).all()
    for b in range(4):  # bins follow firing rate
        assert rates[feats[strata == b]].max() < rates[feats[strata == b + 1]].min()


@pytest.fixture(scope="module")
def causal_setup():
    model = make_model("Gemma2ForCausalLM", dtype=torch.float32)
    ids = _ids(n=7)
    acts = activations.probe(model, ids, LAYER)
    sae = random_sae(32, layer=LAYER, d_sae=40)
    with torch.no_grad():
        sae.b_enc[5] = -1e4  # never fires
    return model, ids, acts, sae


def test_causal_importance_equals_ablation_by_hand(causal_setup) -> None:
    model, ids, acts, sae = causal_setup
    keep = _keep(ids)
    rates = (sae.encode(acts[keep]) > 0).double().mean(0).numpy()
    feats = np.array([int(np.argmax(rates)), int(np.argmin(np.where(rates > 0, rates, 9))), 5])
    got = evaluate.causal_importance(model, sae, ids, acts, keep, layer=LAYER, features=feats,
                                     batch_size=3)
    clean = _mean_ce(model, ids)
    assert got["clean_ce"] == pytest.approx(clean, abs=1e-5)
    direction = evaluate.decoder_directions(sae)
    for j, i in enumerate(feats[:2]):
        def ablate(_m, _i, out, i=i):
            f = sae.encode(out)[..., i] * keep
            return out - f[..., None] * direction[i]

        expected = _mean_ce(model, ids, ablate) - clean
        assert expected != 0
        assert got["delta_ce"][j] == pytest.approx(expected, abs=2e-5)
        for half in (0, 1):  # the even and the odd sequences, each ablated on its own
            sub, sub_keep = ids[half::2], keep[half::2]

            def ablate_sub(_m, _i, out, i=i, k=sub_keep):
                return out - (sae.encode(out)[..., i] * k)[..., None] * direction[i]

            alone = _mean_ce(model, sub, ablate_sub) - _mean_ce(model, sub)
            assert got["delta_ce_halves"][j, half] == pytest.approx(alone, abs=2e-5)


def test_ablating_a_feature_that_never_fires_changes_nothing(causal_setup) -> None:
    model, ids, acts, sae = causal_setup
    keep = _keep(ids)
    got = evaluate.causal_importance(model, sae, ids, acts, keep, layer=LAYER,
                                     features=np.array([5]), batch_size=3)
    assert got["delta_ce"][0] == 0.0
    # the same path run on every group, with a zero term subtracted, reproduces the loss exactly
    with evaluate._injected(model, LAYER) as inject:
        for start in range(0, len(ids), 3):
            g = slice(start, start + 3)
            h = acts[g]
            zero = h.float() - 0.0 * evaluate.decoder_directions(sae)[5]
            assert (evaluate._loss_sum(model, inject, ids[g], zero.to(h.dtype), keep[g])
                    == evaluate._loss_sum(model, inject, ids[g], h, keep[g]))


def test_per_firing_importance_is_the_effect_where_a_feature_acts() -> None:
    """Two planted features with the same effect on every token where they fire, one firing
    ten times as often: equal importance per firing token, ten times the total importance.

    The probe is the last layer, so each position's prediction reads only its own residual;
    the two markers e_a and e_b enter the final norm and the LM head identically (equal norm
    weights, equal head columns), and every target is the same token.
    """
    model = make_model("LlamaForCausalLM", n_layers=3, dtype=torch.float32)
    layer, a, b, c = 2, 3, 7, 4.0
    with torch.no_grad():
        model.model.norm.weight[b] = model.model.norm.weight[a]
        model.lm_head.weight[:, b] = model.lm_head.weight[:, a]
    ids = torch.full((4, 12), 5)
    ids[:, 0] = 1  # BOS, skipped
    h0 = torch.randn(32, generator=torch.Generator().manual_seed(0))
    h0[[a, b]] = 0.0
    acts = h0.repeat(4, 12, 1)
    rare, frequent = [(0, 3), (2, 8)], [(s, t) for s in range(4) for t in (2, 4, 6, 9, 10)]
    for s, t in rare:
        acts[s, t, a] = c
    for s, t in frequent:
        acts[s, t, b] = c
    sae = random_sae(32, layer=layer, d_sae=8, k=2)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[a, 0] = sae.W_enc[b, 1] = 1.0
        sae.b_enc.fill_(-1e4)
        sae.b_enc[:2] = -0.5 * c
        sae.b_dec.zero_()
        sae.W_dec.zero_()
        sae.W_dec[0, a] = sae.W_dec[1, b] = 2.0  # f = c / 2 removes the marker whole
    got = evaluate.causal_importance(model, sae, ids, acts, _keep(ids), layer=layer,
                                     features=np.array([0, 1]), batch_size=2)
    assert list(got["n_firing"]) == [len(rare), len(frequent)] == [2, 20]
    assert got["delta_ce"][0] != 0
    assert got["delta_ce_per_firing"][1] == pytest.approx(got["delta_ce_per_firing"][0], rel=1e-6)
    assert got["delta_ce"][1] == pytest.approx(10 * got["delta_ce"][0], rel=1e-6)


def test_bf16_ranks_agree_with_float32_when_the_ablation_runs_in_float32() -> None:
    """RQ5 on the tiny gemma-3 model and its shipped SAE, on held-out tiny text: the ranks of
    the CE rise with float32 weights against those with bf16 weights, once with the ablated
    residual cast back to bf16 (the old path) and once with the layers above the probe in
    float32 (what repro.stages.run_stages runs for a bf16 study). Measured: see the printed line."""
    import copy
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    import repro.tiny
    from repro.inputs.tiny_corpus import CorpusParams, documents
    from repro.science import saes, stats
    from repro.tiny.build import SEQ_LEN
    from repro.tiny.train import pack_sequences

    assets = Path(repro.tiny.__file__).resolve().parent.parent / "assets" / "tiny"
    tok = AutoTokenizer.from_pretrained(assets / "tokenizer")
    params = CorpusParams.from_dict(json.loads((assets / "corpus.json").read_text()))
    texts = documents(params, "valid", 40)
    ids = pack_sequences(tok(texts, add_special_tokens=False)["input_ids"], SEQ_LEN,
                         tok.bos_token_id, tok.eos_token_id)[:4]
    model = AutoModelForCausalLM.from_pretrained(assets / "models" / "gemma-3-tiny").eval()
    sae = saes.load_sae(assets / "saes" / "gemma-3-tiny", "cpu")
    keep = ~torch.isin(ids, torch.tensor([tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]))
    acts = activations.probe(model, ids, 3)
    rates = (sae.encode(acts[keep]) > 0).double().mean(0).numpy()
    feats = np.flatnonzero(rates > 0)[:30]
    kw = dict(layer=3, features=feats, batch_size=4)
    reference = evaluate.causal_importance(model, sae, ids, acts, keep, **kw)["delta_ce"]
    low = copy.deepcopy(model).to(torch.bfloat16)
    acts16 = activations.probe(low, ids, 3)
    in_bf16 = evaluate.causal_importance(low, sae, ids, acts16, keep, **kw)["delta_ce"]
    in_fp32 = evaluate.causal_importance(copy.deepcopy(low).float(), sae, ids, acts16, keep,
                                         **kw)["delta_ce"]
    rho_bf16, rho_fp32 = stats.spearman(reference, in_bf16), stats.spearman(reference, in_fp32)
    print(f"tiny gemma-3, {len(feats)} features: importance ranks vs float32 weights, "
          f"Spearman {rho_bf16:.3f} with the ablation in bf16, {rho_fp32:.3f} in float32")
    assert rho_fp32 > rho_bf16 and rho_fp32 > 0.95
