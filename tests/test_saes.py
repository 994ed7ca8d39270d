"""SAE training is seeded and one epoch, firing rates are right, pre-trained SAEs load offline."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import make_model, random_ids
from safetensors.torch import save_file

from repro.errors import ReproError
from repro.science import activations, pretrained_saes, sae_streams, saes
from repro.study.sources import PretrainedSae
from repro.study.spec import SaeSpec

SPECIAL = [0, 1, 2]
SPEC = SaeSpec(width=48, k=4, lr=1e-3, batch_tokens=32)


def random_sae(d_in: int, *, layer: int = 2, d_sae: int = 48, k: int = 4, seed: int = 0):
    """A sae-lens TopK SAE with random weights and biases, read at `layer`."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k,
                                metadata=SAEMetadata(hook_name=saes.hook_name(layer))))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.5)
        sae.b_dec.normal_(0, 0.1)
    return sae.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model("Gemma3ForCausalLM", dtype=torch.float32)


def _ids() -> torch.Tensor:
    ids = random_ids(24, 12)
    ids[3, 6] = 2  # an EOS inside a sequence: dropped like the BOS
    return ids


def _train(model: torch.nn.Module, seed: int, captured: sae_streams.ProbeCapture | None = None):
    ids = _ids()
    keep = ~torch.isin(ids, torch.tensor(SPECIAL))
    return saes.train_sae(model, ids, keep, layer=2, spec=SPEC, seed=seed, seq_batch=5,
                          metadata={"model_name": "random"}, captured=captured)


def test_seeds_sharing_one_capture_train_the_same_saes(model) -> None:
    """The second seed replays the first seed's probe activations instead of running the
    model, and ends with exactly the SAE it trains on its own."""
    captured = sae_streams.ProbeCapture()
    first, _ = _train(model, 7, captured)
    assert captured.complete and sum(len(b) for b in captured.batches) == 24 * 11 - 1
    calls = []
    handle = model.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        replayed, _ = _train(model, 8, captured)
    finally:
        handle.remove()
    assert calls == []  # the model never ran
    alone, _ = _train(model, 8)
    for name, p in alone.state_dict().items():
        assert torch.equal(p, replayed.state_dict()[name]), name
    assert not torch.equal(first.W_dec, replayed.W_dec)
    assert sae_streams.ProbeCapture.fits(1000, 64, torch.bfloat16)
    assert not sae_streams.ProbeCapture.fits(10**15, 4096, torch.float32)


def test_same_seed_gives_the_same_sae_and_another_seed_does_not(model) -> None:
    a, record = _train(model, 7)
    b, _ = _train(model, 7)
    c, _ = _train(model, 8)
    assert record["n_tokens"] == 24 * 11 - 1 and record["steps"] == 9
    for name, p in a.state_dict().items():
        assert torch.equal(p, b.state_dict()[name]), name
    assert not torch.equal(a.W_dec, c.W_dec)


def test_stream_yields_every_usable_token_once(model, monkeypatch) -> None:
    monkeypatch.setattr(sae_streams, "BUFFER_BATCHES", 2)
    ids = _ids()
    keep = ~torch.isin(ids, torch.tensor(SPECIAL))
    stream = sae_streams.ActivationStream(model, ids, keep, layer=1, batch_tokens=16, seq_batch=5,
                                   seed=0)
    got = torch.cat(list(stream))
    # captured in the stream's batches of 5 sequences: MKL's portable GEMM (repro.science.numerics)
    # rounds differently for another batch size, so a single batch is not bit-identical
    expected = torch.cat([activations.probe(model, ids[s:s + 5], 1)
                          for s in range(0, len(ids), 5)])[keep]
    assert got.shape == expected.shape
    assert not torch.equal(got, expected)  # shuffled
    order = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731
    torch.testing.assert_close(order(got), order(expected), rtol=0, atol=0)


def test_epochs_replay_every_token_once_per_epoch_without_rerunning_the_model(
        model, monkeypatch) -> None:
    monkeypatch.setattr(sae_streams, "BUFFER_BATCHES", 2)
    ids = _ids()
    keep = ~torch.isin(ids, torch.tensor(SPECIAL))
    calls = []
    handle = model.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        got = torch.cat(list(sae_streams.ActivationStream(
            model, ids, keep, layer=1, batch_tokens=16, seq_batch=5, seed=0, epochs=3)))
    finally:
        handle.remove()
    assert len(calls) == 5  # one pass over the 24 sequences in batches of 5
    once = torch.cat(list(sae_streams.ActivationStream(model, ids, keep, layer=1, batch_tokens=16,
                                                       seq_batch=5, seed=0)))
    n = len(once)
    assert len(got) == 3 * n
    order = lambda t: t[torch.argsort(t[:, 0])]  # noqa: E731
    tripled = order(torch.cat([once] * 3))
    torch.testing.assert_close(order(got), tripled, rtol=0, atol=0)  # each token 3 times
    # reshuffled, not repeated: later passes differ in order from the first
    assert not torch.equal(got[n:2 * n], got[:n]) and not torch.equal(got[2 * n:], got[n:2 * n])


def test_several_epochs_take_as_many_more_steps(model) -> None:
    ids = _ids()
    keep = ~torch.isin(ids, torch.tensor(SPECIAL))
    spec = dataclasses.replace(SPEC, epochs=2)
    _, record = saes.train_sae(model, ids, keep, layer=2, spec=spec, seed=7, seq_batch=5,
                               metadata={"model_name": "random"})
    assert record["n_tokens"] == 24 * 11 - 1 and record["epochs"] == 2
    assert record["steps"] == 17  # ceil(2 * 263 / 32); one epoch takes 9


def test_training_never_touches_wandb(model, monkeypatch) -> None:
    import wandb

    def refuse(*_a, **_k):
        raise AssertionError("wandb was called")

    for name in ("init", "login", "log", "log_artifact"):
        monkeypatch.setattr(wandb, name, refuse)
    _train(model, 0)


def test_saved_sae_round_trips_with_its_hook(model, tmp_path) -> None:
    sae, _ = _train(model, 0)
    saes.save_sae(sae, tmp_path)
    loaded = saes.load_sae(tmp_path, "cpu")
    x = activations.probe(model, _ids()[:3], 2).reshape(-1, 32)
    torch.testing.assert_close(loaded.decode(loaded.encode(x)), sae.decode(sae.encode(x)),
                               rtol=1e-5, atol=1e-5)
    assert saes.hook_layer(loaded.cfg.metadata.hook_name) == 2


def test_firing_rates_match_a_slow_loop(model, tmp_path) -> None:
    ids = _ids()
    activations.write_chunks(model, ids, 2, tmp_path, batch_size=4, sequences_per_chunk=7,
                             dtype=torch.float32)
    sae = random_sae(32)
    got = saes.firing_rates(sae, tmp_path, SPECIAL)
    acts = activations.probe(model, ids, 2)
    counts, n = torch.zeros(48, dtype=torch.int64), 0
    for i in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if int(ids[i, t]) in SPECIAL:
                continue
            counts += (sae.encode(acts[i, t][None])[0] > 0).long()
            n += 1
    assert int(got["n_tokens"]) == n
    assert torch.equal(got["fire_count"], counts)
    torch.testing.assert_close(got["firing_rate"], counts.double() / n)
    assert 0 < int((counts > 0).sum()) < 48


def test_pretrained_from_a_local_folder_checks_the_layer(tmp_path) -> None:
    sae = random_sae(32, layer=2)
    sae.save_model(tmp_path)
    load = pretrained_saes.load_pretrained
    loaded = load(PretrainedSae(path=str(tmp_path)), "cpu", probe_layer=2)
    assert torch.equal(loaded.W_enc, sae.W_enc)
    with pytest.raises(ReproError, match="layer 2.*probe_layer is 3"):
        load(PretrainedSae(path=str(tmp_path)), "cpu", probe_layer=3)
    with pytest.raises(ReproError, match="cfg.json missing"):
        load(PretrainedSae(path=str(tmp_path / "none")), "cpu", probe_layer=2)


@pytest.mark.parametrize("name", ["blocks.3.hook_mlp_out", "blocks.x.hook_resid_post", None])
def test_non_residual_hooks_are_refused(name) -> None:
    with pytest.raises(ReproError, match="residual-stream hook"):
        saes.hook_layer(name)


def _fake_gemma_scope_2_cache(root, *, d_in: int, d_sae: int) -> dict[str, torch.Tensor]:
    """A Hugging Face cache holding one Gemma Scope 2 SAE in the repo's own file layout."""
    folder = "resid_post/layer_13_width_16k_l0_medium"
    repo = root / "models--google--gemma-scope-2-1b-pt"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit / folder
    snap.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    params = {"w_enc": torch.randn(d_in, d_sae, generator=g),
              "w_dec": torch.randn(d_sae, d_in, generator=g),
              "b_enc": torch.randn(d_sae, generator=g), "b_dec": torch.randn(d_in, generator=g),
              "threshold": torch.rand(d_sae, generator=g)}
    save_file(params, str(snap / "params.safetensors"))
    (snap / "config.json").write_text(json.dumps({
        "architecture": "jump_relu", "model_name": "gemma-v3-1b-pt",
        "hf_hook_point_in": "model.layers.13.output"}))
    return params


def test_gemma_scope_2_loads_from_the_offline_cache(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants as hub
    import requests

    params = _fake_gemma_scope_2_cache(tmp_path, d_in=16, d_sae=24)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))

    def no_network(*_a, **_k):
        raise AssertionError("network access while offline")

    monkeypatch.setattr(requests, "get", no_network)
    spec = PretrainedSae(release="gemma-scope-2-1b-pt-res", sae_id="layer_13_width_16k_l0_medium")
    sae = pretrained_saes.load_pretrained(spec, "cpu", probe_layer=13)
    assert sae.cfg.metadata.hook_name == "blocks.13.hook_resid_post"
    assert torch.equal(sae.W_enc, params["w_enc"])
    assert torch.equal(sae.threshold, params["threshold"])
    with pytest.raises(ReproError, match="probe_layer is 12"):
        pretrained_saes.load_pretrained(spec, "cpu", probe_layer=12)
    missing = PretrainedSae(release="gemma-scope-2-1b-pt-res", sae_id="layer_13_width_16k_l0_small")
    with pytest.raises(ReproError, match="repro fetch"):
        pretrained_saes.load_pretrained(missing, "cpu", probe_layer=13)


def test_published_stats_come_from_the_installed_sae_lens_registry(tmp_path) -> None:
    """The sanity gates' reference values: sae-lens's own registry, read as it ships."""
    from repro.science.pretrained_saes import published_stats
    from repro.study.sources import PretrainedSae

    scope2 = published_stats(PretrainedSae(release="gemma-scope-2-1b-pt-res",
                                           sae_id="layer_13_width_16k_l0_medium"))
    scope = published_stats(PretrainedSae(release="gemma-scope-2b-pt-res-canonical",
                                          sae_id="layer_12/width_16k/canonical"))
    assert (scope2["l0"], scope2["explained_variance"]) == (60, None)
    assert (scope["l0"], scope["explained_variance"]) == (82.0, None)  # from average_l0_82
    recorded = published_stats(PretrainedSae(release="gpt2-small-hook-z-kk",
                                             sae_id="blocks.0.hook_z"))
    assert (recorded["l0"], recorded["explained_variance"]) == (3.0, 0.13)
    assert published_stats(PretrainedSae(release="no-such-release", sae_id="x"))["l0"] is None
    (tmp_path / "training.json").write_text('{"train_l0": 23.5}')
    assert published_stats(PretrainedSae(path=str(tmp_path)))["l0"] == 23.5
