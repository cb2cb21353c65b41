import pytest

from gan import ConfigError, TrainConfig


def test_defaults_are_the_classic_mlp_gan():
    cfg = TrainConfig()
    assert (cfg.arch, cfg.latent_dim, cfg.g_hidden, cfg.d_hidden) == ("mlp", 100, (256, 512), (256, 100))
    assert (cfg.optimizer, cfg.lr_g, cfg.lr_d, cfg.beta1, cfg.beta2) == ("adam", 2e-4, 2e-4, 0.5, 0.999)
    assert cfg.d_dropout == 0.3 and TrainConfig(arch="dcgan").d_dropout == 0.4


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr_g": -1}, "lr_g must be > 0, got lr_g=-1"),
        ({"lr_d": 0}, "lr_d must be > 0, got lr_d=0"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"arch": "resnet"}, "arch must be one of mlp, dcgan; got arch='resnet'"),
        ({"loss": "bce"}, "loss must be one of"),
        ({"optimizer": "adamw"}, "optimizer must be one of adam, rmsprop, sgd"),
        ({"spectral_norm": "x"}, "spectral_norm must be one of none, d, g, both"),
        ({"self_attention": "both"}, "needs conv feature maps: use arch='dcgan'"),
        ({"d_dropout": 1.0}, "d_dropout must be in [0.0, 1.0)"),
        ({"precision": "fp16"}, "precision must be one of fp32, bf16; got precision=.fp16."),
        ({"real_label": 0.9, "loss": "hinge"}, "real_label=0.9 (label smoothing) applies to losses"),
        ({"budget": 1.5}, "budget in steps must be a whole number"),
        ({"g_hidden": []}, "g_hidden must be a non-empty list of positive ints"),
        ({"d_channels": [64]}, "d_channels must have 2 entries"),
        ({"compile": True, "loss": "wgan-gp"}, "compile=True does not support wgan-gp"),
        ({"preset": "dcgan"}, "preset must be one of default, classic-mlp, classic-dcgan; got preset='dcgan'"),
        ({"g_slope": -0.1}, "g_slope must be in [0.0, 1.0], got g_slope=-0.1"),
        ({"d_slope": 2}, "d_slope must be in [0.0, 1.0], got d_slope=2"),
        ({"g_output": "relu"}, "g_output must be one of tanh, sigmoid; got g_output='relu'"),
        ({"g_output": "sigmoid"}, "g_output='sigmoid' makes [0, 1] images but data_scaling='signed'"),
        ({"data_scaling": "minmax"}, "data_scaling must be one of signed, unit, standardized; got data_scaling='minmax'"),
        ({"noise": "gaussian"}, "noise must be one of normal, uniform; got noise='gaussian'"),
        ({"g_stem": 28}, "g_stem must be one of 7, 14; got g_stem=28"),
        ({"g_output_leaky": "yes"}, "g_output_leaky must be true or false, got g_output_leaky='yes'"),
        ({"d_output_leaky": 1}, "d_output_leaky must be true or false, got d_output_leaky=1"),
        ({"d_dropout_layers": [0, 2]}, "d_dropout_layers must list distinct D layers among 1..3 (3 is the output layer) or be null; got d_dropout_layers=[0, 2]"),
        ({"d_dropout_layers": [2, 2]}, "got d_dropout_layers=[2, 2]"),
        ({"arch": "dcgan", "d_dropout_layers": [4]}, "among 1..3 (3 is the output layer)"),
        ({"batch_counts": "fake"}, "batch_counts must be one of real, total; got batch_counts='fake'"),
        ({"batch_counts": "total", "batch_size": 255}, "batch_size must be even, got batch_size=255"),
    ],
)
def test_invalid_values_name_the_field_and_value(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainConfig(**changes)


def test_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(arch="dcgan", g_hidden=(32,), spectral_norm="d", budget=2, budget_unit="epochs")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown training config key\(s\) \['lr'\]"):
        TrainConfig.from_dict({"lr": 1e-3})


def test_an_epoch_is_one_loader_pass_of_iterations_whatever_the_step_ratio():
    assert TrainConfig(budget=2, budget_unit="epochs", batch_size=100).total_steps(60000) == 1200
    # The reports' loops run k D and m G updates per loader batch: 5:1 and 5:5 get 1:1's iterations.
    assert TrainConfig(budget=1, budget_unit="epochs", batch_size=100, d_steps=5).total_steps(60000) == 600
    assert TrainConfig(budget=0.5, budget_unit="epochs", batch_size=256, d_steps=5, g_steps=5).total_steps(60000) == 117
    assert TrainConfig(budget=300).total_steps(60000) == 300
