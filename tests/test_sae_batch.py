"""Many SAEs in one pass (repro.science.sae_batch) against its slow twin, sae-lens's own
trainer one SAE at a time (saes.fit_sae): equal to round-off in float64, equal in
distribution in float32, a planted semantic change caught, and each SAE's bits independent
of the group it trains in."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_model, random_ids

from repro.science import match, numerics, sae_batch, sae_streams, saes, training_curves
from repro.study.spec import SaeSpec

CPU = torch.device("cpu")
SEEDS = (0, 1, 2)
# width 48, k 6 on 16 dimensions, 80 steps of 16 tokens: the dead-latent window is 10 steps
# (steps // 8), so latents go dead and the AuxK loss acts on them
SPEC = SaeSpec(width=48, k=6, lr=3e-3, batch_tokens=16)


def _acts(n: int = 1280, d: int = 16, seed: int = 0, ties: int = 64) -> torch.Tensor:
    """Sparse codes over a random dictionary, off the origin: residual-stream-like vectors.

    `ties` vectors after the first shuffle buffer (64 batches) equal that buffer's mean,
    where b_dec starts: on the first step every latent's pre-activation for them is exactly
    0, a TopK of ties that the ReLU silences (they shuffle into the first batches).
    """
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(4 * d, d, generator=g)
    codes = (torch.rand(n, 4 * d, generator=g) < 0.08).float() * torch.rand(n, 4 * d,
                                                                           generator=g)
    acts = (codes @ basis + 3.0 + 0.05 * torch.randn(n, d, generator=g)).float()
    first = sae_streams.BUFFER_BATCHES * SPEC.batch_tokens
    acts[first:first + ties] = acts[:first].mean(0)
    return acts


def _alone(acts, seeds=SEEDS, spec=SPEC, dtype="float64", curves=None):
    """The slow twin: sae-lens's SAETrainer, one SAE and one pass per seed."""
    curves = curves or [None] * len(seeds)
    return [saes.fit_sae(sae_streams.tensor_stream(acts, batch_tokens=spec.batch_tokens, seed=seed,
                                            epochs=spec.epochs),
                         spec=spec, seed=seed, device=CPU, layer=0,
                         metadata={"model_name": "twin"}, curve=curve, dtype=dtype)
            for seed, curve in zip(seeds, curves, strict=True)]


def _together(acts, seeds=SEEDS, spec=SPEC, dtype="float64", curves=None, order=None):
    """The fast path: all seeds in one pass; `order` gives the seed of each stream's shuffle
    (each SAE's own seed unless a test plants another)."""
    streams = [sae_streams.tensor_stream(acts, batch_tokens=spec.batch_tokens, seed=seed,
                                  epochs=spec.epochs) for seed in (order or seeds)]
    return sae_batch.fit_saes(streams, spec=spec, seeds=seeds, device=CPU, layer=0,
                              metadata=[{"model_name": "twin"}] * len(seeds), curves=curves,
                              dtype=dtype)


@pytest.fixture(autouse=True)
def one_thread():
    """Trainings of 16-dimensional SAEs, compared with each other in one process: one thread
    runs them 40x faster on the busy 2-core machine; the group-invariance test asks for the
    pinned threads back, since thread splits are what could make it fail."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sae_lens_float64():
    """The slow twin's float64 SAEs and curves, trained once for the tests that compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    curves = [training_curves.CurveRecorder() for _ in SEEDS]
    trained = _alone(_acts(), curves=curves)
    torch.set_num_threads(threads)
    return trained, curves


def _max_diff(a, b) -> float:
    return max(float((a.state_dict()[n] - b.state_dict()[n]).abs().max())
               for n in a.state_dict())


@pytest.fixture
def coverage(monkeypatch) -> dict[str, int]:
    """Counts, over a training, the TopK slots silenced by the ReLU, the AuxK terms, and those
    with more than d / 2 dead latents (where the AuxK picks the top d / 2 per token)."""
    seen = {"relu_zero_slots": 0, "aux_terms": 0, "aux_top_half": 0}
    step, aux = sae_batch.StackedTopK.step, sae_batch._add_aux_gradients

    def counted_step(self, batch):
        out = step(self, batch)
        seen["relu_zero_slots"] += int((out.acts == 0).sum())
        return out

    def counted_aux(t, acc, s, hidden, pre, dead, *args):
        seen["aux_terms"] += 1
        seen["aux_top_half"] += int(dead.sum()) > t.d // 2
        return aux(t, acc, s, hidden, pre, dead, *args)

    monkeypatch.setattr(sae_batch.StackedTopK, "step", counted_step)
    monkeypatch.setattr(sae_batch, "_add_aux_gradients", counted_aux)
    return seen


def test_float64_together_equals_each_alone_to_round_off(coverage, sae_lens_float64) -> None:
    """80 steps, three seeds: every parameter, the record and the curve as sae-lens's trainer
    gives them one SAE at a time, to 1e-10 (measured: 9e-16)."""
    alone, curves_alone = sae_lens_float64
    curves_together = [training_curves.CurveRecorder() for _ in SEEDS]
    together = _together(_acts(), curves=curves_together)
    assert min(coverage.values()) > 0, coverage
    for (a, rec_a), (b, rec_b) in zip(alone, together, strict=True):
        assert _max_diff(a, b) < 1e-10
        assert a.cfg.metadata.l0 == pytest.approx(b.cfg.metadata.l0, abs=1e-12)
        assert b.cfg.normalize_activations == "none"  # the scaling factor was folded in
        drop = ("train_seconds",)
        assert {k: v for k, v in rec_a.items() if k not in drop} == \
            {k: v for k, v in rec_b.items() if k not in drop}
    assert [r["dead_at_end"] for _, r in alone] != [0, 0, 0]
    for ca, cb in zip(curves_alone, curves_together, strict=True):
        assert len(ca.points) == len(cb.points) == 80
        for pa, pb in zip(ca.points, cb.points, strict=True):
            assert (pa["step"], pa["tokens"], pa["l0"], pa["dead_fraction"]) == \
                (pb["step"], pb["tokens"], pb["l0"], pb["dead_fraction"])
            assert pa["explained_variance"] == pytest.approx(pb["explained_variance"],
                                                             abs=1e-6)


def _global_clip(grads, max_norm: float = 1.0) -> None:
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                  for g in grads.values()]))
    for g in grads.values():
        g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))


@pytest.mark.parametrize("plant", ["aux_loss_off", "shared_data_order", "clip_across_saes"])
def test_a_planted_semantic_change_breaks_the_equality(plant, monkeypatch,
                                                       sae_lens_float64) -> None:
    """Negative control of the float64 test: each change below keeps the trainer running and
    its SAEs plausible, and moves them far beyond round-off from sae-lens's.
    - aux_loss_off: dead latents get no AuxK gradient (the loss sae-lens adds for them);
    - shared_data_order: every SAE reads the first seed's shuffle, not its own;
    - clip_across_saes: one gradient norm over all SAEs instead of one per SAE, i.e. the
      SAEs are no longer independent trainings."""
    acts = _acts()
    order = None
    if plant == "aux_loss_off":
        init = sae_batch.StackedTopK.__init__

        def without_aux(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.aux_coefficient = 0.0

        monkeypatch.setattr(sae_batch.StackedTopK, "__init__", without_aux)
    elif plant == "shared_data_order":
        order = [SEEDS[0]] * len(SEEDS)
    else:
        monkeypatch.setattr(sae_batch, "_clip_per_sae", _global_clip)
    together = _together(acts, order=order)
    alone = sae_lens_float64[0]
    worst = max(_max_diff(a, b) for (a, _), (b, _) in zip(alone, together, strict=True))
    assert worst > 1e-4, f"{plant}: {worst}"


def test_float32_first_steps_agree_to_round_off_and_full_trainings_in_distribution() -> None:
    """One step agrees to float32 round-off (measured: 2e-7, an ulp of b_dec). Adam divides
    each gradient entry by its own running size, so an entry whose gradient is round-off
    noise about zero can move by up to the learning rate: after a few steps single entries
    may differ by more (seen: 6e-5 with lr 3e-3 on other data), nearly all by round-off.
    Over a whole training a TopK choice may flip on such a difference and the SAEs part
    ways; they must still agree as two runs of one training: the same explained variance
    on held-out vectors, decoder rows matched at high cosine (measured here after 200
    steps: parameters within 3e-7, EV equal to 7 digits, matched cosine 1.0)."""
    acts, held_out = _acts(n=7200, seed=1).split([3200, 4000])
    for steps in (1, 4):
        spec = dataclasses.replace(SPEC, batch_tokens=-(-3200 // steps))
        for (a, _), (b, _) in zip(_alone(acts, spec=spec, dtype="float32"),
                                  _together(acts, spec=spec, dtype="float32"), strict=True):
            diff = torch.cat([(a.state_dict()[n] - b.state_dict()[n]).abs().flatten()
                              for n in a.state_dict()])
            if steps == 1:
                assert float(diff.max()) < 1e-6  # an ulp of b_dec (about 4) is 4.8e-7
            assert float((diff < 1e-6).float().mean()) > 0.995
    for (a, _), (b, _) in zip(_alone(acts, seeds=SEEDS[:2], dtype="float32"),
                              _together(acts, seeds=SEEDS[:2], dtype="float32"), strict=True):
        ev = [_explained_variance(sae, held_out) for sae in (a, b)]
        assert ev[0] > 0.5 and abs(ev[0] - ev[1]) < 0.01
        assert match.hungarian_match(a.W_dec.detach(), b.W_dec.detach()).mean_cosine > 0.95


@torch.no_grad()
def _explained_variance(sae, x: torch.Tensor) -> float:
    x_hat = sae.decode(sae.encode(x))
    return float(1 - (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_an_sae_has_the_same_bits_in_any_group() -> None:
    """What resuming relies on: a group that lost some SAEs to a kill retrains only those,
    alone or with others, and gets the bits the whole group would have given them. At the
    pinned two threads and sizes where ATen splits work between them (256 x 256 blocks),
    dead latents included (the window is 1 step)."""
    torch.set_num_threads(numerics.PINNED_THREADS)
    acts = _acts(n=1536, d=32, ties=0)
    spec = SaeSpec(width=256, k=8, lr=3e-3, batch_tokens=256)
    four = dict(zip((0, 1, 2, 3), _together(acts, seeds=(0, 1, 2, 3), spec=spec,
                                            dtype="float32"), strict=True))
    assert sum(r["dead_at_end"] for _, r in four.values()) > 0
    for group in ((2,), (3, 0)):
        for seed, (sae, record) in zip(group, _together(acts, seeds=group, spec=spec,
                                                        dtype="float32"), strict=True):
            for name, p in four[seed][0].state_dict().items():
                assert torch.equal(p, sae.state_dict()[name]), (seed, group, name)
            assert record["train_l0"] == four[seed][1]["train_l0"]
    assert not torch.equal(four[0][0].W_dec, four[1][0].W_dec)


def test_one_model_pass_trains_every_seed_as_train_sae_does(tmp_path) -> None:
    """train_saes runs the model once for all seeds, epochs included, and each SAE is the one
    train_sae (sae-lens, its own pass) gives, to float32 round-off; saved, sae-lens loads it."""
    model = make_model("Gemma3ForCausalLM", dtype=torch.float32)
    ids = random_ids(24, 12)
    keep = ids > 2
    spec = dataclasses.replace(SPEC, batch_tokens=16, epochs=2)
    calls = []
    handle = model.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        together = sae_batch.train_saes(model, ids, keep, layer=2, spec=spec, seeds=(5, 6),
                                        seq_batch=5, metadata=[{"model_name": "m"}] * 2)
    finally:
        handle.remove()
    assert len(calls) == 5  # 24 sequences in batches of 5, once
    for seed, (sae, record) in zip((5, 6), together, strict=True):
        alone, alone_record = saes.train_sae(model, ids, keep, layer=2, spec=spec, seed=seed,
                                             seq_batch=5, metadata={"model_name": "m"})
        assert _max_diff(alone, sae) < 1e-4
        assert record["steps"] == alone_record["steps"] == 33  # ceil(2 * 263 / 16)
        assert set(record) == set(alone_record)
    saes.save_sae(together[0][0], tmp_path)
    loaded = saes.load_sae(tmp_path, "cpu")
    x = _acts(n=50, d=32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(loaded.encode(x)),
                                   together[0][0].decode(together[0][0].encode(x)),
                                   rtol=1e-5, atol=1e-5)


def test_a_decaying_learning_rate_is_sae_lens_s_own_schedule() -> None:
    """`sae.lr_decay`: the learning rate is constant, then falls linearly to 0 over the last
    share of the steps, in the batched trainer exactly as in sae-lens's trainer (float64
    SAEs equal to 1e-10); and the decay changes the SAE (a check that could fail)."""
    spec = dataclasses.replace(SPEC, lr_decay=0.5)
    acts = _acts()
    cfg = saes.trainer_config(spec, len(acts), CPU)
    steps = saes.training_steps(spec, len(acts))
    assert (cfg.lr_decay_steps, cfg.lr_end) == (steps // 2, 0.0)
    stack = sae_batch.StackedTopK([saes.new_sae(acts[:64], spec=spec, seed=0, device=CPU,
                                                layer=0, metadata={})[0]], cfg, [1.0])
    rates = []
    for _ in range(steps):
        rates.append(stack.optimizer.param_groups[0]["lr"])
        stack.optimizer.step()
        stack.scheduler.step()
    start = steps - steps // 2
    assert rates[:start] == [spec.lr] * start
    tail = rates[start:]
    assert all(a > b for a, b in zip(tail, tail[1:], strict=False)) and tail[-1] < spec.lr / 10
    alone = _alone(acts, seeds=(0, 1), spec=spec)
    together = _together(acts, seeds=(0, 1), spec=spec)
    for (a, _), (b, _) in zip(alone, together, strict=True):
        assert _max_diff(a, b) < 1e-10
    constant = _together(acts, seeds=(0, 1))
    assert _max_diff(together[0][0], constant[0][0]) > 1e-3


def test_autocast_rounds_the_encoder_product_and_keeps_the_sae() -> None:
    """`sae.autocast`: the encoder's product in bfloat16 moves the trained weights (the flag
    reaches the step; bfloat16 keeps 8 bits, so they differ by far more than float32
    round-off) and leaves the SAE's quality: held-out explained variance within 0.01 of the
    float32 training's, decoders matched at a mean cosine above 0.9."""
    acts, held_out = _acts(n=7200, seed=1).split([3200, 4000])
    spec = dataclasses.replace(SPEC, autocast=True)
    assert saes.trainer_config(spec, len(acts), CPU).autocast is True
    (exact, _), = _together(acts, seeds=(0,), dtype="float32")
    (rounded, _), = _together(acts, seeds=(0,), spec=spec, dtype="float32")
    assert _max_diff(exact, rounded) > 1e-4
    ev = [_explained_variance(sae, held_out) for sae in (exact, rounded)]
    assert ev[0] > 0.5 and abs(ev[0] - ev[1]) < 0.01
    assert match.hungarian_match(exact.W_dec.detach(), rounded.W_dec.detach()).mean_cosine > 0.9
