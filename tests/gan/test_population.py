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


def _assert_same_run(member: TrainResult, solo: TrainResult) -> None:
    """Same per-step records and weights, up to float rounding (bmm and mm round differently)."""
    for key in ("g_loss", "d_loss", "d_real_mean", "d_fake_mean"):
        assert member.history[key] == pytest.approx(solo.history[key], abs=1e-4), key
    # The accuracies count outputs on one side of a threshold: a rounding can move one image.
    for key in ("d_acc_real", "d_acc_fake"):
        assert member.history[key] == pytest.approx(solo.history[key], abs=2 / 64), key
    for p, q in zip(member.generator.parameters(), solo.generator.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-3, rtol=1e-3)
    for p, q in zip(member.discriminator.parameters(), solo.discriminator.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(member.generator(member.fixed_noise), solo.generator(solo.fixed_noise), atol=1e-3, rtol=0)


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
        _assert_same_run(member, train(cfg, data, records_every=7))


@pytest.mark.parametrize("loss", ["minimax", "lsgan", "hinge", "wgan-gp"])
def test_every_loss_gives_each_member_its_solo_run(data, loss):
    # hinge and wgan-gp have no targets to smooth; wgan-gp's members differ in gp_weight too
    configs = _members(loss=loss, smoothing=1.0 if loss in ("hinge", "wgan-gp") else 0.9)
    for cfg, member in zip(configs, train_population(configs, data), strict=True):
        _assert_same_run(member, train(cfg, data))


@pytest.mark.parametrize("placement", ["d", "g", "both"])
def test_spectral_norm_members_train_as_their_solo_runs(data, placement):
    # the power iteration's vectors step once per training forward, as the solo parametrization's
    configs = _members(spectral_norm=placement)
    members = train_population(configs, data)
    for cfg, member in zip(configs, members, strict=True):
        solo = train(cfg, data)
        _assert_same_run(member, solo)
        for net in ("generator", "discriminator"):
            for (name, b), (_, a) in zip(getattr(member, net).named_buffers(), getattr(solo, net).named_buffers(), strict=True):
                torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3, msg=name)  # unit vectors, as the weights


def test_g_batchnorm_members_train_as_their_solo_runs_with_their_own_statistics(data):
    configs = _members(g_batchnorm=True)
    for cfg, member in zip(configs, train_population(configs, data), strict=True):
        solo = train(cfg, data)
        _assert_same_run(member, solo)  # its generator in eval mode: the running statistics
        for (name, b), (_, a) in zip(member.generator.named_buffers(), solo.generator.named_buffers(), strict=True):
            torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3, msg=name)  # as the weights: float rounding


_SMALL_DCGAN = {"arch": "dcgan", "g_channels": 16, "d_channels": (8, 16), "batch_size": 32}


@pytest.mark.parametrize("knobs", [
    {},
    {"g_batchnorm": True, "g_ema": 0.9},
    {"spectral_norm": "both", "self_attention": "both"},
    {"g_stem": 14, "self_attention": "g", "loss": "wgan-gp"},
], ids=["plain", "batchnorm-ema", "sn-attention", "stem14-wgan-gp"])
def test_dcgan_members_train_as_their_solo_runs(data, knobs):
    # Convs as one grouped conv, batch norm over every member's channels, attention batched over
    # members; spectral norm's vectors and batch norm's statistics are the members' own.
    configs = _members(**_SMALL_DCGAN, **knobs, smoothing=1.0 if knobs.get("loss") == "wgan-gp" else 0.9)
    for cfg, member in zip(configs, train_population(configs, data), strict=True):
        solo = train(cfg, data)
        _assert_same_run(member, solo)
        for net in ("generator", "discriminator"):
            for (name, b), (_, a) in zip(getattr(member, net).named_buffers(), getattr(solo, net).named_buffers(), strict=True):
                torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3, msg=name)


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
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
        _assert_same_run(members[k], train(configs[k], data, records_every=5))


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
    solos = {k: train(configs[k], data) for k in (0, 2)}
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


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
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
        solo = train(configs[k], data)
        _assert_same_run(members[k], solo)
        for (name, b), (_, a) in zip(members[k].generator.named_buffers(), solo.generator.named_buffers(), strict=True):
            torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3, msg=name)


def test_members_that_differ_in_shape_or_use_unsupported_models_are_refused(data):
    base = TrainConfig(budget=5, batch_size=32, device="cpu")
    with pytest.raises(ConfigError, match="member 1 differs from member 0 in batch_size"):
        train_population([base, base.replace(batch_size=64)], data)
    with pytest.raises(ConfigError, match="compile=True.*one at a time with gan.train"):
        train_population([base.replace(compile=True)] * 2, data)
    with pytest.raises(ConfigError, match="at least one config"):
        train_population([], data)
