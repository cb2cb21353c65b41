import itertools

import pytest
import torch

from gan import ConfigError, TrainConfig, load_mnist, train
from gan.config import ARCHS, LOSSES, OPTIMIZERS, PLACEMENTS
from gan.models import build_models

COMBOS = list(itertools.product(ARCHS, PLACEMENTS, PLACEMENTS, LOSSES, OPTIMIZERS))


@pytest.fixture(scope="module")
def small_data(data_dir):
    return load_mnist(data_dir, subset=256)


def test_shapes_of_default_models():
    for arch in ARCHS:
        G, D = build_models(TrainConfig(arch=arch))
        images = G(torch.randn(5, 100))
        assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
        assert D(images).shape == (5,)


def test_every_combination_builds_and_trains_or_fails_with_the_message(small_data):
    valid = 0
    for arch, sn, sa, loss, opt in COMBOS:
        knobs = dict(arch=arch, spectral_norm=sn, self_attention=sa, loss=loss, optimizer=opt)
        if arch == "mlp" and sa != "none":
            with pytest.raises(ConfigError, match="needs conv feature maps"):
                TrainConfig(**knobs)
            continue
        cfg = TrainConfig(**knobs, batch_size=8, budget=2, g_channels=16, d_channels=(8, 16), device="cpu")
        result = train(cfg, small_data, records_every=1)
        losses = result.history["g_loss"] + result.history["d_loss"]
        assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses))), knobs
        valid += 1
    assert valid == 4 * 5 * 3 + 4 * 4 * 5 * 3  # mlp without attention + every dcgan


def test_spectral_norm_and_attention_are_where_asked():
    G, D = build_models(TrainConfig(arch="dcgan", spectral_norm="d", self_attention="g"))
    names_g = [type(m).__name__ for m in G.modules()]
    assert "SelfAttention" in names_g and "SelfAttention" not in [type(m).__name__ for m in D.modules()]
    assert any("parametrizations" in n for n, _ in D.named_parameters())
    assert not any("parametrizations" in n for n, _ in G.named_parameters())


def test_dropout_zeroes_p_of_the_units_keeps_the_mean_and_is_off_in_eval():
    from gan.models import Dropout

    drop = Dropout(0.4)
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    kept = y.detach()
    assert abs(float((kept == 0).float().mean()) - 0.4) < 0.01
    assert abs(float(kept.mean()) - 1.0) < 0.02 and torch.allclose(kept.unique(), torch.tensor([0.0, 1 / 0.6]))
    y.sum().backward()
    assert torch.equal(x.grad, kept)  # gradient flows through the kept units, scaled alike
    drop.eval()
    assert drop(x) is x
