import itertools

import pytest
import torch

from gan import ConfigError, TrainConfig, load_mnist, train
from gan.config import ARCHS, LOSSES, OPTIMIZERS, PLACEMENTS
from gan.models import build_models

# Every structure with every loss (spectral norm and attention change the loss's backward, and
# wgan-gp's gradient penalty differentiates through them). The optimizer only steps the
# parameters a structure has, so the optimizers take turns: each one meets every structure kind.
COMBOS = [(*structure, optimizer) for structure, optimizer in
          zip(itertools.product(ARCHS, PLACEMENTS, PLACEMENTS, LOSSES), itertools.cycle(OPTIMIZERS))]


@pytest.fixture(scope="module")
def small_data(data_dir):
    return load_mnist(data_dir, subset=256)


def test_shapes_of_default_models():
    for arch in ARCHS:
        G, D = build_models(TrainConfig(arch=arch))
        images = G(torch.randn(5, 100))
        assert images.shape == (5, 1, 28, 28) and images.abs().max() <= 1
        assert D(images).shape == (5,)


@pytest.mark.slow  # trains every combination
def test_every_structure_and_loss_builds_and_trains_or_fails_with_the_message(small_data):
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
    assert valid == 4 * 5 + 4 * 4 * 5  # mlp without attention + every dcgan
    assert {(arch, opt) for arch, _, sa, _, opt in COMBOS if arch == "mlp" and sa == "none"} == {("mlp", o) for o in OPTIMIZERS}
    assert {(sn, opt) for arch, sn, _, _, opt in COMBOS if arch == "dcgan"} == set(itertools.product(PLACEMENTS, OPTIMIZERS))


def test_spectral_norm_and_attention_are_where_asked():
    G, D = build_models(TrainConfig(arch="dcgan", spectral_norm="d", self_attention="g"))
    names_g = [type(m).__name__ for m in G.modules()]
    assert "SelfAttention" in names_g and "SelfAttention" not in [type(m).__name__ for m in D.modules()]
    assert any("parametrizations" in n for n, _ in D.named_parameters())
    assert not any("parametrizations" in n for n, _ in G.named_parameters())


@pytest.mark.parametrize("p", [0.3, 0.4, 0.5])
def test_dropout_zeroes_p_of_the_units_keeps_the_mean_and_is_off_in_eval(p):
    from gan.models import Dropout

    drop = Dropout(p)
    x = torch.ones(400_000, requires_grad=True)
    y = drop(x)
    kept = y.detach()
    # The keep probability is rounded to a multiple of 1/65536 and the scale is its inverse.
    keep = round((1 - p) * 65536) / 65536
    assert abs(keep - (1 - p)) < 8e-6
    assert abs(float((kept == 0).float().mean()) - p) < 0.005
    assert abs(float(kept.mean()) - 1.0) < 0.01
    assert torch.equal(kept.unique(), torch.tensor([0.0, 1 / keep]))
    y.sum().backward()
    assert torch.equal(x.grad, kept)  # gradient flows through the kept units, scaled alike
    drop.eval()
    assert drop(x) is x


def test_dropout_masks_follow_the_seed_and_fit_any_shape():
    from gan.models import Dropout

    drop = Dropout(0.5)
    x = torch.ones(3, 5, 7)  # 105 units: not a multiple of the four drawn per 64 random bits
    torch.manual_seed(7)
    first, second = drop(x), drop(x)
    torch.manual_seed(7)
    assert first.shape == x.shape and torch.equal(drop(x), first)
    assert not torch.equal(first, second)
    # Neighbouring units come from different 16-bit slices of a draw: no lane is biased.
    masks = torch.stack([drop(torch.ones(4000)) == 0 for _ in range(50)]).float()
    lane_rates = masks.view(50, 1000, 4).mean(dim=(0, 1))
    assert torch.all((lane_rates - 0.5).abs() < 0.02), lane_rates
