import pytest
import torch

from gan import CheckpointError, TrainConfig, build_models, load_checkpoint, load_mnist, save_checkpoint, train
from gan.sampling import generate, interpolate, interpolation_rows, latent_arithmetic


@pytest.fixture(scope="module")
def trained(data_dir):
    cfg = TrainConfig(arch="dcgan", spectral_norm="both", self_attention="d", g_batchnorm=True, budget=3, batch_size=16,
                      g_channels=16, d_channels=(8, 16), device="cpu")
    return train(cfg, load_mnist(data_dir, subset=256))


def test_round_trip_gives_identical_samples(trained, tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", trained.config, trained.generator, trained.discriminator, step=3)
    loaded = load_checkpoint(path)
    assert loaded.config == trained.config and loaded.meta["step"] == 3
    assert loaded.meta["environment"]["torch"] == torch.__version__
    assert torch.equal(generate(loaded.generator, 50, seed=7), generate(trained.generator, 50, seed=7))


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_checkpoints_from_when_batch_normed_layers_had_biases_load_as_the_same_generator(arch, tmp_path):
    cfg = TrainConfig(arch=arch, g_batchnorm=True, g_hidden=(32, 64), g_channels=8, device="cpu")
    old, D = build_models(cfg)
    for layer in old.modules():  # the layers batch norm follows, with the biases they used to have
        if isinstance(layer, (torch.nn.Linear, torch.nn.ConvTranspose2d)) and layer.bias is None:
            layer.bias = torch.nn.Parameter(torch.randn(layer.weight.shape[0 if isinstance(layer, torch.nn.Linear) else 1]))
    with torch.no_grad():
        for _ in range(3):  # the running statistics take the biases in
            old(torch.randn(64, cfg.latent_dim))
    old.eval()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "old.pt", cfg, old, D))
    torch.testing.assert_close(generate(loaded.generator, 64, seed=3), generate(old, 64, seed=3), atol=1e-5, rtol=0)


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)


def test_interpolation_and_arithmetic(trained):
    z0, z1 = torch.zeros(100), torch.ones(100)
    line = interpolate(z0, z1, 10)
    assert line.shape == (10, 100) and torch.equal(line[0], z0) and torch.equal(line[-1], z1)
    assert torch.allclose(line[5], torch.full((100,), 5 / 9))
    rows = interpolation_rows(trained.generator, rows=3, steps=10)
    assert rows.shape == (30, 1, 28, 28)
    parts = latent_arithmetic(trained.generator, torch.randn(100), torch.randn(100))
    assert set(parts) == {"x1", "x2", "x1-x2", "x1+x2"} and parts["x1"].shape == (1, 28, 28)
