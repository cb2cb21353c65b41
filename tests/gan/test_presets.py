import typing

import pytest
import torch
from torch import nn

from gan import TrainConfig, load_mnist, train
from gan.config import Preset
from gan.data import MNIST_MEAN, MNIST_STD, scale, to_signed
from gan.models import Dropout, build_models
from gan.presets import PRESETS
from gan.sampling import generate


@pytest.fixture(scope="module")
def small_data(data_dir):
    return load_mnist(data_dir, subset=256)


def _layers(module: nn.Module) -> list[tuple]:
    """Each leaf layer as (type, its shape or rate): what a report's model listing states."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            out.append((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]))
        elif isinstance(m, nn.LeakyReLU):
            out.append(("LeakyReLU", m.negative_slope))
        elif isinstance(m, Dropout):
            out.append(("Dropout", m.p))
        elif isinstance(m, (nn.Tanh, nn.Sigmoid, nn.Flatten)):
            out.append((type(m).__name__,))
    return out


def test_the_preset_names_are_the_literal_of_the_field():
    assert typing.get_args(Preset) == tuple(PRESETS)


def test_default_models_are_todays_models_bit_for_bit():
    """Today's default networks, written out layer by layer as the code before the presets
    built them: same seed, same weights, same outputs."""
    z = torch.randn(6, 100, generator=torch.Generator().manual_seed(1))
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1

    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(100, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
                      nn.Linear(512, 784), nn.Tanh())
    d = nn.Sequential(nn.Linear(784, 256), nn.LeakyReLU(0.2), Dropout(0.3), nn.Linear(256, 100), nn.LeakyReLU(0.2),
                      Dropout(0.3), nn.Linear(100, 1)).eval()
    torch.manual_seed(0)
    G, D = build_models(TrainConfig())
    assert [p.numel() for p in G.parameters()] == [p.numel() for p in g.parameters()]
    assert sum(p.numel() for p in G.parameters()) == (100 * 256 + 256) + (256 * 512 + 512) + (512 * 784 + 784)
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), g.state_dict().values(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(D.state_dict().values(), d.state_dict().values(), strict=True))
    assert torch.equal(G(z), g(z).view(-1, 1, 28, 28)) and torch.equal(G.raw(z), G(z))
    assert torch.equal(D.eval()(x), d(x.flatten(1)).squeeze(1))

    torch.manual_seed(0)
    project = nn.Linear(100, 128 * 7 * 7)
    g = nn.Sequential(nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.LeakyReLU(0.2), nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh())
    d = nn.Sequential(nn.Conv2d(1, 64, 3, 2, 1), nn.LeakyReLU(0.2), Dropout(0.4), nn.Conv2d(64, 128, 3, 2, 1),
                      nn.LeakyReLU(0.2), Dropout(0.4), nn.Flatten(), nn.Linear(128 * 7 * 7, 1)).eval()
    torch.manual_seed(0)
    G, D = build_models(TrainConfig(arch="dcgan"))
    ref_g = [*project.parameters(), *g.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(G.parameters(), ref_g, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(D.parameters(), d.parameters(), strict=True))
    expected = g(nn.functional.leaky_relu(project(z), 0.2).view(-1, 128, 7, 7))
    assert torch.equal(G(z), expected) and torch.equal(D.eval()(x), d(x).squeeze(1))


def test_the_default_preset_is_every_field_at_its_default():
    explicit = TrainConfig(preset="default", g_slope=0.2, d_slope=0.2, g_output="tanh", g_output_leaky=False,
                           data_scaling="signed", noise="normal", g_stem=7, d_dropout_layers=None,
                           d_output_leaky=False, batch_counts="real")
    assert TrainConfig() == explicit and TrainConfig().real_batch == 100


def test_fields_given_win_over_the_preset_even_at_their_default():
    cfg = TrainConfig(preset="classic-mlp", beta1=0.5, d_dropout_layers=[1, 2])
    assert (cfg.beta1, cfg.d_dropout_layers, cfg.g_slope, cfg.noise) == (0.5, (1, 2), 0.3, "uniform")
    assert TrainConfig.from_dict({"preset": "classic-mlp", "beta1": 0.5, "d_dropout_layers": [1, 2]}) == cfg
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg and cfg.replace(seed=3).beta1 == 0.5
    assert TrainConfig(preset="classic-dcgan", d_dropout=None).d_dropout == 0.4  # None: the arch default


@pytest.mark.parametrize("preset", list(PRESETS))
def test_each_preset_trains_on_real_mnist_and_hands_out_images_in_minus_one_one(preset, small_data):
    cfg = TrainConfig(preset=preset, budget=3, device="cpu")
    assert all(getattr(cfg, k) == v for k, v in PRESETS[preset].items())
    evals = []
    # The real batch size stays the preset's; a 256-image subset holds the DCGAN's 128 real images.
    result = train(cfg, small_data, records_every=1, on_eval=lambda p: evals.append(p.generator(p.fixed_noise)), eval_every=2)
    losses = torch.tensor(result.history["g_loss"] + result.history["d_loss"])
    assert len(losses) == 6 and torch.isfinite(losses).all()
    for images in [*evals, generate(result.generator, 16)]:
        assert images.shape[1:] == (1, 28, 28) and images.min() >= -1 and images.max() <= 1


def test_classic_mlp_has_report_004s_layers():
    G, D = build_models(TrainConfig(preset="classic-mlp"))
    assert _layers(G) == [("Linear", 100, 256), ("LeakyReLU", 0.3), ("Linear", 256, 512), ("LeakyReLU", 0.3),
                          ("Linear", 512, 784), ("LeakyReLU", 0.3), ("Tanh",)]
    # No dropout after the first layer; LeakyReLU and dropout on the output unit, before the sigmoid.
    assert _layers(D) == [("Linear", 784, 256), ("LeakyReLU", 0.2), ("Linear", 256, 100), ("LeakyReLU", 0.2),
                          ("Dropout", 0.2), ("Linear", 100, 1), ("LeakyReLU", 0.2), ("Dropout", 0.2)]


def test_classic_dcgan_has_report_002s_layers():
    G, D = build_models(TrainConfig(preset="classic-dcgan"))
    maps = []
    G.net.register_forward_pre_hook(lambda _, args: maps.append(args[0].shape))
    G.net[0].register_forward_hook(lambda *args: maps.append(args[2].shape))
    images = G.raw(torch.randn(3, 100))
    assert maps == [(3, 128, 14, 14), (3, 64, 28, 28)]  # dense stem, then one stride-2 transposed conv
    assert _layers(G) == [("Linear", 100, 128 * 14 * 14), ("ConvTranspose2d", 128, 64, 4, 2), ("LeakyReLU", 0.2),
                          ("Conv2d", 64, 1, 7, 1), ("Sigmoid",)]
    assert images.shape == (3, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert _layers(D) == [("Conv2d", 1, 64, 3, 2), ("LeakyReLU", 0.2), ("Dropout", 0.4), ("Conv2d", 64, 128, 3, 2),
                          ("LeakyReLU", 0.2), ("Dropout", 0.4), ("Flatten",), ("Linear", 128 * 7 * 7, 1)]
    cfg = TrainConfig(preset="classic-dcgan")
    assert (cfg.real_batch, cfg.lr_g, cfg.lr_d, cfg.beta1) == (128, 2e-4, 2e-4, 0.5)


@pytest.mark.parametrize("scaling, low, high", [("signed", -1.0, 1.0), ("unit", 0.0, 1.0),
                                                ("standardized", -MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD)])
def test_real_images_reach_d_in_the_models_range_and_map_back_to_the_metrics_one(scaling, low, high, small_data):
    u8 = small_data.images
    assert torch.allclose(to_signed(scale(u8, scaling), scaling), small_data.batch(torch.arange(len(u8))), atol=1e-5)
    seen = []

    def watch(point):  # record the first half of every batch D is shown: the real images in a D update
        point.discriminator.register_forward_pre_hook(lambda _, args: seen.append(args[0][: len(args[0]) // 2].clone()))

    cfg = TrainConfig(data_scaling=scaling, g_output="sigmoid" if scaling == "unit" else "tanh", batch_size=16,
                      batch_counts="total", budget=2, device="cpu")
    train(cfg, small_data, on_eval=watch, eval_at=(0,))  # called once, on the untrained models
    first = torch.randperm(len(small_data), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.real_batch]
    assert len(seen) == 2 * 2 and seen[0].shape == (8, 1, 28, 28)  # per step: D's update, then G's
    assert torch.equal(seen[0], scale(small_data.images[first], scaling))
    assert seen[0].min() == pytest.approx(low, abs=1e-5) and seen[0].max() == pytest.approx(high, abs=1e-5)


def test_generated_images_map_back_with_the_data_transform():
    z = torch.rand(4, 100)
    G, _ = build_models(TrainConfig(preset="classic-dcgan"))
    assert torch.allclose(G(z), G.raw(z) * 2 - 1)
    G, _ = build_models(TrainConfig(preset="classic-mlp"))
    pixels = G.raw(z) * MNIST_STD + MNIST_MEAN  # the report's Normalize, undone
    assert torch.allclose(G(z), (pixels * 2 - 1).clamp(-1, 1), atol=1e-6)


def test_uniform_noise_feeds_training_and_sampling_alike(small_data):
    result = train(TrainConfig(noise="uniform", budget=1, batch_size=16, device="cpu"), small_data)
    assert torch.equal(result.fixed_noise, torch.rand(64, 100, generator=torch.Generator().manual_seed(0)))
    z = torch.rand(5, 100, generator=torch.Generator().manual_seed(4))
    assert torch.equal(generate(result.generator, 5, seed=4), result.generator(z))


def test_batch_counts_total_splits_the_batch_and_an_epoch_passes_the_real_images_once():
    cfg = TrainConfig(batch_size=256, batch_counts="total", budget=1, budget_unit="epochs")
    assert cfg.real_batch == 128 and cfg.total_steps(60000) == 60000 // 128


def test_a_zero_slope_is_a_relu_and_trains(small_data):
    result = train(TrainConfig(arch="dcgan", g_slope=0.0, d_slope=0.0, g_channels=8, d_channels=(4, 8), budget=2,
                               batch_size=8, device="cpu"), small_data)
    assert torch.isfinite(torch.tensor(result.history["g_loss"] + result.history["d_loss"])).all()
    assert all(m.negative_slope == 0 for m in result.generator.modules() if isinstance(m, nn.LeakyReLU))


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_a_generator_pickled_before_the_new_knobs_still_samples(arch, tmp_path):
    import pickle

    G, _ = build_models(TrainConfig(arch=arch))
    expected = generate(G, 8)
    # An older pickle (the MLflow registry's models) has none of the attributes added with the presets.
    for name in ("noise", "data_scaling", "stem", "slope"):
        G.__dict__.pop(name, None)
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps(G))
    assert torch.equal(generate(pickle.loads(path.read_bytes()), 8), expected)
