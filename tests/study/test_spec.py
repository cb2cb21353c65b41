import pytest
import yaml

from study.spec import SpecError, builtin_specs, load_spec, parse_spec

BASE = {"name": "t", "budget": {"steps": 10}, "space": {"lr_g": {"low": 1e-4, "high": 1e-3, "log": True}}}


def test_builtin_specs_are_valid():
    assert set(builtin_specs()) >= {"quick", "seeds", "full"}
    quick = load_spec("quick")
    assert {p.name for p in quick.space} >= {"lr_g", "lr_d", "optimizer", "batch_size", "d_dropout", "real_label"}
    assert quick.pruner == "median" and quick.sampler == "tpe"
    seeds = load_spec("seeds")
    assert seeds.is_grid and seeds.repeats >= 2 and seeds.trials == len(seeds.sweep) == seeds.grid_size()
    factors = {p.factor for p in seeds.sweep}
    assert factors >= {"lr", "optimizer", "batch_size", "spectral_norm", "steps_ratio", "d_dropout", "self_attention", "real_label", "label_flip"}
    full = load_spec("full")
    assert {p.name for p in full.space} >= {"arch", "loss", "spectral_norm", "self_attention", "latent_dim", "betas"}


def test_sweep_points_vary_one_factor_from_the_baseline():
    spec = load_spec("seeds")
    labels = [p.label for p in spec.sweep]
    assert labels[0] == "baseline" and len(labels) == len(set(labels))
    assert "optimizer=adam" not in labels  # the baseline value runs once, as the baseline
    assert spec.baseline_values["optimizer"] == "adam"
    point = next(p for p in spec.sweep if p.label == "steps_ratio=5:1")
    cfg = spec.config_for(point.overrides, seed=0)
    assert (cfg.d_steps, cfg.g_steps, cfg.optimizer, cfg.batch_size) == (5, 1, "adam", 256)


def test_scientific_notation_reads_as_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nfixed: {lr_g: 2e-4}\nspace: {lr_d: {low: 1e-5, high: 1e-3, log: true}}\n")
    spec = load_spec(path)
    assert spec.fixed["lr_g"] == 2e-4 and spec.space[0].low == 1e-5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 3}, r"unknown key\(s\) \['epochs'\]"),
        ({"name": "a b"}, "name must be a word"),
        ({"trials": "ten"}, "trials must be an int >= 1, got trials='ten'"),
        ({"sampler": "bayes"}, "sampler must be one of tpe, random, grid, nsga2, cmaes; got sampler='bayes'"),
        ({"pruner": "asha"}, "pruner must be one of none, median, hyperband"),
        ({"objective": "accuracy"}, "objective metric must be one of"),
        ({"budget": {"minutes": 3}}, r"budget must be \{steps: N\} or \{epochs: N\}"),
        ({"space": {"optimizer": []}}, "space.optimizer: choices must be a non-empty list"),
        ({"space": {"lr_g": {"low": 1e-2, "high": 1e-3}}}, "space.lr_g: low must be <= high"),
        ({"space": {"lr_g": {"low": 0.0, "high": 1e-3, "log": True}}}, "a log range needs low > 0"),
        ({"space": {"optimizer": ["adam", "lbfgs"]}}, "space.optimizer: value 'lbfgs' is invalid in every combination"),
        ({"space": {"lr": [1e-3]}}, "space.lr is not a training config field"),
        ({"fixed": {"seed": 3}}, "fixed.seed is set by the study"),
        ({"fixed": {"loss": "bce"}}, "fixed: loss must be one of"),
        ({"space": {"self_attention": ["none", "both"]}}, "value 'both' is invalid in every combination: .*needs conv feature maps"),
        ({"sampler": "grid"}, "sampler=grid needs choices, but space.lr_g is a range"),
        ({"objective": ["fd", "train_seconds"], "pruner": "median"}, "cannot act on a multi-objective study"),
        ({"objective": "train_seconds", "pruner": "median"}, "is not measured during training"),
        ({"sweep": {"factors": {"optimizer": ["adam"]}}}, "use either space .* or sweep"),
        ({"sampler": {"name": "random", "startup_trials": 4}}, "sampler.startup_trials applies to tpe and cmaes, not sampler='random'"),
        ({"pruner": {"name": "hyperband", "startup_trials": 4}}, "pruner.startup_trials applies to median, not pruner='hyperband'"),
        ({"pruner": {"name": "median", "startup_trials": -1}}, "pruner.startup_trials must be an int >= 0"),
    ],
)
def test_invalid_specs_name_the_key_and_value(change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, **change})


def test_grid_with_an_invalid_point_is_rejected():
    raw = {"name": "g", "sampler": "grid", "space": {"arch": ["mlp", "dcgan"], "self_attention": ["none", "g"]}}
    with pytest.raises(SpecError, match=r"grid point \(arch=mlp, self_attention=g\) is invalid"):
        parse_spec(raw)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nspace:\n  lr_g: [1, 2\n  lr_d: 3\n")
    with pytest.raises(SpecError, match=r"YAML syntax error at line \d+"):
        load_spec(path)


def test_grid_size_and_trials_override():
    spec = parse_spec({"name": "g", "sampler": "grid", "space": {"optimizer": ["adam", "sgd"], "batch_size": [32, 64, 128]}})
    assert spec.trials == spec.grid_size() == 6
    with pytest.raises(SpecError, match="exceeds the grid of 6 points"):
        spec.with_trials(7)
    assert yaml.safe_dump(spec.source)


def test_startup_trials_reach_the_sampler_and_the_pruner():
    from study.samplers import make_pruner, make_sampler

    spec = parse_spec({**BASE, "sampler": {"name": "tpe", "startup_trials": 4}, "pruner": {"name": "median", "startup_trials": 2}})
    assert make_sampler(spec, offset=0)._n_startup_trials == 4
    assert make_pruner(spec)._n_startup_trials == 2
    default = parse_spec(BASE)
    assert (default.sampler_startup_trials, default.pruner_startup_trials) == (10, 3)  # Optuna's TPE default; ours for the pruner
