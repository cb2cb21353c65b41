from typing import NamedTuple

import pytest
import torch

from gan import ConfigError, DivergenceError, TrainConfig, TrainResult, build_models, load_mnist, train, train_population
from gan._batched import Net
from gan.population import _layers


@pytest.fixture(scope="module")
def data(data_dir):
    return load_mnist(data_dir, subset=5000)


def _members(smoothing: float = 0.9, **shared):
    """Three members that differ in every MEMBER_FIELDS field."""
    base = TrainConfig(**{"budget": 20, "batch_size": 64, "device": "cpu", **shared})
    return [
        base.replace(seed=1),
        base.replace(seed=2, lr_g=1e-3, lr_d=5e-4, beta1=0.9, beta2=0.99, d_dropout=0.0, real_label=smoothing),
        base.replace(seed=3, d_dropout=0.5, momentum=0.5, gp_weight=5.0),
    ]


# How far a member may end from its solo run. Batched and single matmuls round apart by an ulp
# or so, at every step. A solo run whose initial weights are nudged by one ulp (1e-7, relative)
# shows how far such a difference carries to the end on this run (far, where the run is
# sensitive): its spread. Rounding enters at each of the T steps, none carried further than the
# first step's, so a member may be T spreads away. A rounding can also flip an activation (a
# ReLU's side, a threshold) for one image, which changes that step's update for the weights it
# touches: by less than one whole step of the run, so one step's change is allowed on top. And
# a few ulps of the largest value, where neither moves.
_NUDGE = 1e-7
_ULPS = 4 * torch.finfo(torch.float32).eps
# One parameter has no gradient to follow: softmax over the keys ignores the key projection's
# bias (q . b adds the same to every key's score), so its gradient is 0 up to rounding, which
# Adam scales to steps of lr |g| / eps whatever its size. Two runs' roundings are unrelated, so
# such a bias may drift apart by both runs' moves: T steps each, about the size of the last one.
# (A nudge shows nothing here: on ATen's scalar kernels it left this bias's residue unchanged.)
_NO_GRADIENT = ("key.bias",)
_RECORDS = ("g_loss", "d_loss", "d_real_mean", "d_fake_mean")


class _Solo(NamedTuple):
    run: TrainResult
    nudged: TrainResult  # the same run, its initial weights nudged by _NUDGE (random signs)
    before_last: dict[str, torch.Tensor]  # the run's _state one step before its end


def _state(G: torch.nn.Module, D: torch.nn.Module, noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tensor a run ends with: weights, buffers (statistics, vectors) and G's fixed-noise images."""
    state = {f"{net}.{name}": t.detach().clone() for net, m in (("G", G), ("D", D))
             for name, t in (*m.named_parameters(), *m.named_buffers())}
    with torch.no_grad():
        state["images"] = G(noise)
    return state


def _solo(cfg: TrainConfig, data, **kwargs) -> _Solo:
    """cfg's solo run, with what float rounding can make of it (see above)."""
    total, before_last = cfg.total_steps(len(data)), {}

    def keep(point):
        if point.step == total - 1:
            before_last.update(_state(point.generator, point.discriminator, point.fixed_noise))

    run = train(cfg, data, on_eval=keep, eval_at=(total - 1,), **kwargs)
    signs = torch.Generator().manual_seed(0)

    def nudge(point):  # at step 0, before any update
        for w in (*point.generator.parameters(), *point.discriminator.parameters()):
            w.mul_(1 + _NUDGE * (2 * torch.randint(0, 2, w.shape, generator=signs) - 1))

    return _Solo(run, train(cfg, data, on_eval=nudge, eval_at=(0,), **kwargs), before_last)


def _assert_same_run(member: TrainResult, solo: _Solo) -> None:
    """Same per-step records, weights, buffers and images as the solo run, up to float rounding."""
    got, want, nudged = (_state(r.generator, r.discriminator, r.fixed_noise) for r in (member, solo.run, solo.nudged))
    assert got.keys() == want.keys()
    steps = {key: (want[key] - solo.before_last[key]).abs().max() for key in want if want[key].is_floating_point()}
    for key in _RECORDS:
        got[key], want[key], nudged[key] = (torch.tensor(r.history[key]) for r in (member, solo.run, solo.nudged))
        steps[key] = want[key].diff().abs().max()  # the most it moved in one step
    for key, value in want.items():
        if not value.is_floating_point():  # counts of batches seen
            assert torch.equal(got[key], value), key
            continue
        spread = (nudged[key] - value).abs().max()
        tol = solo.run.steps * spread + steps[key] + _ULPS * value.abs().max()
        if key.endswith(_NO_GRADIENT):
            tol = tol + 2 * solo.run.steps * steps[key]
        diff = (got[key] - value).abs()
        assert (diff <= tol).all(), f"{key}: {diff.max():.3g} apart, allowed {tol:.3g} ({solo.run.steps} x spread {spread:.3g}, step {steps[key]:.3g})"
    # The accuracies count outputs on one side of a threshold: a rounding can move one image.
    for key in ("d_acc_real", "d_acc_fake"):
        assert member.history[key] == pytest.approx(solo.run.history[key], abs=2 / 64), key


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_each_member_trains_as_its_solo_run(data, optimizer):
    configs = _members(optimizer=optimizer)
    # The learning rates of _members are Adam-sized. RMSprop's first steps are 10x Adam's (no
    # bias correction: lr / sqrt(1 - alpha)), and at those sizes member 1's run is chaotic: a
    # solo run whose D starts 1e-7 (relative) apart ends 2e-2 apart in d_loss at step 18, so
    # bmm's rounding on one CPU (Intel, AVX-512) did the same. At a tenth it stays at 1e-7.
    scale = {"adam": 1.0, "rmsprop": 0.1, "sgd": 50.0}[optimizer]
    configs = [c.replace(lr_g=c.lr_g * scale, lr_d=c.lr_d * scale) for c in configs]
    members = train_population(configs, data, records_every=7)
    for cfg, member in zip(configs, members, strict=True):
        assert isinstance(member, TrainResult) and member.config == cfg and member.steps == 20
        _assert_same_run(member, _solo(cfg, data, records_every=7))


@pytest.mark.parametrize("loss", ["minimax", "lsgan", "hinge", pytest.param("wgan-gp", marks=pytest.mark.slow)])
def test_every_loss_gives_each_member_its_solo_run(data, loss):
    # hinge and wgan-gp have no targets to smooth; wgan-gp's members differ in gp_weight too
    configs = _members(loss=loss, smoothing=1.0 if loss in ("hinge", "wgan-gp") else 0.9)
    for cfg, member in zip(configs, train_population(configs, data), strict=True):
        _assert_same_run(member, _solo(cfg, data))


@pytest.mark.parametrize("placement", [pytest.param("d", marks=pytest.mark.slow), "g", pytest.param("both", marks=pytest.mark.slow)])
def test_spectral_norm_members_train_as_their_solo_runs(data, placement):
    # the power iteration's vectors step once per training forward, as the solo parametrization's
    configs = _members(spectral_norm=placement)
    members = train_population(configs, data)
    for cfg, member in zip(configs, members, strict=True):
        _assert_same_run(member, _solo(cfg, data))  # the vectors too (buffers)


def test_g_batchnorm_members_train_as_their_solo_runs_with_their_own_statistics(data):
    configs = _members(g_batchnorm=True)
    for cfg, member in zip(configs, train_population(configs, data), strict=True):
        _assert_same_run(member, _solo(cfg, data))  # the statistics too, and images of G in eval mode: through them


_SMALL_DCGAN = {"arch": "dcgan", "g_channels": 16, "d_channels": (8, 16), "batch_size": 32}


@pytest.mark.parametrize("knobs", [
    {},
    {"g_batchnorm": True, "g_ema": 0.9},
    {"spectral_norm": "both", "self_attention": "both"},
    {"g_stem": 14, "self_attention": "g", "loss": "wgan-gp", "batch_size": 16},  # attention on 14x14 under a double backward
], ids=["plain", "batchnorm-ema", "sn-attention", "stem14-wgan-gp"])
@pytest.mark.slow  # DCGAN populations against their solo runs
def test_dcgan_members_train_as_their_solo_runs(data, knobs):
    # Convs as one grouped conv, batch norm over every member's channels, attention batched over
    # members; spectral norm's vectors and batch norm's statistics are the members' own.
    # 10 steps: every layer kind is in every step, and each step costs a DCGAN 3 runs (member, solo, nudged)
    configs = _members(**{**_SMALL_DCGAN, **knobs}, budget=10, smoothing=1.0 if knobs.get("loss") == "wgan-gp" else 0.9)
    for cfg, member in zip(configs, train_population(configs, data), strict=True):
        _assert_same_run(member, _solo(cfg, data))


@pytest.mark.parametrize("arch", ["mlp", pytest.param("dcgan", marks=pytest.mark.slow)])
def test_bf16_members_follow_their_solo_runs(data, arch):
    # Under bf16 autocast batch norm keeps float32 statistics, as BatchNorm does; batched and
    # single bf16 matmuls round apart by ~1e-3 in the losses after 10 steps (measured 1.7e-3).
    dcgan = {**_SMALL_DCGAN, "spectral_norm": "both", "self_attention": "both"} if arch == "dcgan" else {}
    configs = _members(**{"precision": "bf16", "g_batchnorm": True, "budget": 10, **dcgan})
    for cfg, member in zip(configs, train_population(configs, data), strict=True):
        solo = train(cfg, data)
        for key in ("g_loss", "d_loss"):
            assert member.history[key] == pytest.approx(solo.history[key], abs=2e-2), key


def test_batched_layers_keep_float32_state_under_bf16_autocast():
    # batch norm's running statistics and spectral norm's vectors, as the solo modules keep theirs
    cfg = TrainConfig(**_SMALL_DCGAN, g_batchnorm=True, spectral_norm="both", self_attention="g")
    generators = [build_models(cfg)[0] for _ in range(2)]
    net = Net([_layers(G) for G in generators], [torch.Generator() for _ in generators]).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(torch.randn(2, 4, cfg.latent_dim)).dtype == torch.bfloat16
    state = {name: b.dtype for name, b in net.named_buffers() if b.is_floating_point()}
    assert {"0.u", "1.running_mean", "5.v", "6.running_var", "8.convs.0.u"} <= state.keys()  # each kind of layer
    assert set(state.values()) == {torch.float32}, state


def test_a_diverged_member_is_frozen_and_reported_while_the_others_go_on(data):
    configs = _members(optimizer="sgd", loss="lsgan", budget=30)
    configs[1] = configs[1].replace(lr_d=1e30, lr_g=1e30)
    members = train_population(configs, data, records_every=5)
    assert isinstance(members[1], DivergenceError) and 1 <= members[1].step <= 30
    for k in (0, 2):
        _assert_same_run(members[k], _solo(configs[k], data, records_every=5))


def test_callbacks_name_the_member_and_see_its_own_models(data):
    configs = _members()
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    records: dict[int, list[int]] = {0: [], 1: [], 2: []}
    first_images = {}

    def on_eval(k, point):
        seen[k].append(point.step)
        assert point.config == configs[k]
        if point.step == 0:
            first_images[k] = point.generator(point.fixed_noise)

    train_population(configs, data, on_records=lambda k, r: records[k].extend(r.steps), records_every=6,
                     on_eval=on_eval, eval_every=10)
    for k, cfg in enumerate(configs):
        assert seen[k] == [0, 10] and records[k] == list(range(1, 21))
        solo_start = []
        train(cfg, data, on_eval=lambda p: solo_start.append(p.generator(p.fixed_noise)), eval_at=[5])
        torch.testing.assert_close(first_images[k], solo_start[0])


class Stop(Exception):
    pass


def test_a_callback_stops_its_member_only_and_training_ends_when_none_is_left(data):
    configs = _members(budget=30)
    evals: dict[int, list[int]] = {0: [], 1: [], 2: []}

    def on_eval(k, point):
        evals[k].append(point.step)
        if k == 1 and point.step == 10:
            raise Stop(f"member {k} stopped")

    members = train_population(configs, data, on_eval=on_eval, eval_every=10, stop_on=(Stop,))
    assert isinstance(members[1], Stop) and evals[1] == [0, 10] and evals[0] == evals[2] == [0, 10, 20]
    solos = {k: _solo(configs[k], data) for k in (0, 2)}
    for k in (0, 2):
        _assert_same_run(members[k], solos[k])

    def stop_first_at_start(k, point):  # before any batch: the others train from the start without it
        if k == 0:
            raise Stop("at step 0")

    members = train_population(configs, data, on_eval=stop_first_at_start, eval_at=[15], stop_on=(Stop,))
    assert isinstance(members[0], Stop)
    _assert_same_run(members[2], solos[2])

    def stop_all(k, records):
        raise Stop(f"{records.steps[-1]}")

    endless = [c.replace(budget=10**7) for c in configs]  # hours of steps, unless training ends with its members
    members = train_population(endless, data, on_records=stop_all, records_every=5, stop_on=(Stop,))
    assert [str(m) for m in members] == ["5", "5", "5"]
    with pytest.raises(Stop):  # not in stop_on: the whole population ends, as train does
        train_population(configs, data, on_records=stop_all, records_every=5)


@pytest.mark.parametrize("arch", ["mlp", pytest.param("dcgan", marks=pytest.mark.slow)])
def test_g_ema_members_average_as_their_solo_runs_also_after_one_stops(data, arch):
    # The averages are batched as G is (batch-norm statistics and spectral-norm vectors are G's
    # own); a member that leaves takes its average along, and the others are batched anew.
    dcgan = {**_SMALL_DCGAN, "self_attention": "both", "budget": 20} if arch == "dcgan" else {}
    configs = _members(**{"g_ema": 0.9, "spectral_norm": "g", "g_batchnorm": True, "budget": 30, **dcgan})

    def on_eval(k, point):
        if k == 1 and point.step == 10:
            raise Stop("member 1 stopped")

    members = train_population(configs, data, on_eval=on_eval, eval_every=10, stop_on=(Stop,))
    assert isinstance(members[1], Stop)
    for k in (0, 2):
        _assert_same_run(members[k], _solo(configs[k], data))


def test_members_that_differ_in_shape_or_use_unsupported_models_are_refused(data):
    base = TrainConfig(budget=5, batch_size=32, device="cpu")
    with pytest.raises(ConfigError, match="member 1 differs from member 0 in batch_size"):
        train_population([base, base.replace(batch_size=64)], data)
    with pytest.raises(ConfigError, match="compile=True.*one at a time with gan.train"):
        train_population([base.replace(compile=True)] * 2, data)
    with pytest.raises(ConfigError, match="at least one config"):
        train_population([], data)
