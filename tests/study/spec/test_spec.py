import gan
import pytest
import yaml

from study.spec.spec import SpecError, builtin_specs, load_spec, parse_spec

BASE = {"name": "t", "budget": {"steps": 10}, "space": {"lr_g": {"low": 1e-4, "high": 1e-3, "log": True}}}


def test_builtin_specs_are_valid():
    assert set(builtin_specs()) >= {"quick", "seeds", "full"}
    quick = load_spec("quick")
    assert {p.name for p in quick.space} == {"lr_g", "lr_d", "d_dropout"}
    assert quick.pruner == "median" and quick.sampler == "tpe" and quick.population == 2
    # its trials can always share a population: the space varies member fields only
    assert {p.name for p in quick.space} <= set(gan.MEMBER_FIELDS)
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


def test_a_factor_with_its_own_budget_runs_every_value_at_that_budget():
    spec = load_spec("seeds")
    sizes = {p.value: spec.config_for(p.overrides, seed=0) for p in spec.sweep if p.factor == "batch_size"}
    assert set(sizes) == {"128", "256", "512"}  # 256 is the baseline's size, yet runs here at 10 epochs
    assert {(c.budget, c.budget_unit) for c in sizes.values()} == {(10, "epochs")}
    assert (spec.budget, spec.budget_unit) == (12, "epochs")
    lr = next(p for p in spec.sweep if p.factor == "lr")
    assert spec.config_for(lr.overrides, seed=0).budget == 12
    # --steps trains every trial that many steps; a factor's own budget in epochs becomes the
    # epochs those steps make at the baseline's batch (256: 234 a pass), so batch sizes keep
    # equal epochs (report 000 fixed epochs, not iterations).
    short = spec.with_budget_steps(468)
    configs = {(p.factor, p.value): short.config_for(p.overrides, seed=0) for p in short.sweep}
    assert (configs[("lr", "2e-05")].budget, configs[("lr", "2e-05")].budget_unit) == (468, "steps")
    sizes = {v: c for (f, v), c in configs.items() if f == "batch_size"}
    assert {(c.budget, c.budget_unit) for c in sizes.values()} == {(2.0, "epochs")}
    assert {v: c.total_steps(60_000) for v, c in sizes.items()} == {"128": 936, "256": 468, "512": 234}
    assert short.source["sweep"]["factors"]["batch_size"] == {"values": [128, 256, 512], "budget": {"epochs": 2.0}}
    # ...and the factor keeps a baseline of its own, also in the spec stored with the study.
    assert {p.factor for p in parse_spec(short.source).sweep if p.own_baseline} >= {"batch_size"}


@pytest.mark.parametrize(
    "factor, message",
    [
        ({"values": [128], "budget": {"minutes": 3}}, r"sweep.factors.batch_size.budget must be \{steps: N\} or \{epochs: N\}"),
        ({"values": [128], "budget": {"steps": 0}}, r"sweep.factors.batch_size.budget.steps must be a whole number > 0"),
        ({"values": [128], "repeats": 2}, r"sweep.factors.batch_size must be a list of values or \{values: .*got keys \['repeats', 'values'\]"),
        ({"budget": {"epochs": 1}}, r"sweep.factors.batch_size must be a list of values or \{values"),
    ],
)
def test_a_bad_factor_budget_names_the_factor(factor, message):
    raw = {"name": "t", "sampler": "grid", "sweep": {"factors": {"batch_size": factor}}}
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)


def test_a_factor_with_a_baseline_of_its_own_is_compared_within_itself():
    spec = load_spec("seeds")
    own = {p.factor for p in spec.sweep if p.own_baseline}
    # A budget of its own (batch_size), or a setting all values share (arch: dcgan, the
    # classic-dcgan preset); steps_ratio's 5:1 and 5:5 share d_steps=5 but its 1:1 is the
    # baseline, so it is compared with the baseline.
    assert own == {"batch_size", "self_attention", "classic_dcgan"}
    claim = {"id": "x", "source": "s", "claim": "c", "factor": "self_attention", "compare": ["on", "baseline"],
             "quantity": "fd", "relation": "<"}
    with pytest.raises(SpecError, match=r"claims\[0\] \(x\): self_attention.*'baseline'"):
        parse_spec({**spec.source, "claims": [claim]})


def test_only_some_factors_run_and_the_claims_on_the_others_are_kept():
    spec = load_spec("seeds")
    cpu = spec.with_factors(["lr", "batch_size"])
    assert {p.factor for p in cpu.sweep} == {"baseline", "lr", "batch_size"}
    assert cpu.trials == len(cpu.sweep) == cpu.grid_size()
    assert cpu.claims == spec.claims  # judged as not run in the report, never dropped
    assert cpu.source["only_factors"] == ["lr", "batch_size"]
    # Factors compared within themselves do not train the common baseline they never use.
    dcgan = spec.with_factors(["self_attention", "classic_dcgan"])
    assert {p.factor for p in dcgan.sweep} == {"self_attention", "classic_dcgan"}
    assert dcgan.trials == 6
    with pytest.raises(SpecError, match=r"only_factors: 'lrr' is not a factor of the sweep; factors: lr, optimizer"):
        spec.with_factors(["lrr"])
    with pytest.raises(SpecError, match="this spec has no sweep"):
        load_spec("quick").with_factors(["lr"])


def test_scientific_notation_reads_as_numbers(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nfixed: {lr_g: 2e-4}\nspace: {lr_d: {low: 1e-5, high: 1e-3, log: true}}\n")
    spec = load_spec(path)
    assert spec.fixed["lr_g"] == 2e-4 and spec.space[0].low == 1e-5


def test_population_decides_the_runs_and_search_trials_at_once():
    auto = parse_spec(BASE)
    assert (auto.population, auto.runs_at_once, auto.trials_at_once) == (None, 8, 1)
    assert parse_spec({**BASE, "population": "auto"}).population is None
    four = parse_spec({**BASE, "population": 4, "repeats": 2})
    assert (four.runs_at_once, four.trials_at_once) == (4, 2)
    assert parse_spec({**BASE, "population": 3, "repeats": 5}).trials_at_once == 1
    grid = parse_spec({**BASE, "population": 4, "sampler": "grid", "space": {"optimizer": ["adam", "sgd"]}})
    assert grid.trials_at_once == 4  # a grid's (or sweep's) next points
    assert parse_spec({**BASE, "sampler": "grid", "space": {"optimizer": ["adam", "sgd"]}}).trials_at_once == 1  # auto


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 3}, r"unknown key\(s\) \['epochs'\]"),
        ({"name": "a b"}, r"name 'a b' is not allowed \(it has a character outside the allowed set\)"),
        ({"name": "../../esc"}, r"name '../../esc' is not allowed \(it contains a path separator\)"),
        ({"name": ""}, r"name '' is not allowed \(it is empty\)"),
        ({"space": {"d_dropout": {"low": 0.1, "high": 1.5}}}, r"space.d_dropout: high=1.5 is invalid: d_dropout must be in \[0.0, 1.0\)"),
        ({"space": {"real_label": {"low": 0.4, "high": 1.0}}}, r"space.real_label: low=0.4 is invalid: real_label must be in \[0.5, 1.0\]"),
        ({"space": {"batch_size": {"low": 32, "high": 64.5}}}, r"space.batch_size.high=64.5: batch_size is an int field"),
        ({"space": {"arch": {"low": 0, "high": 1}}}, "space.arch: arch is not a numeric field, so it takes no range"),
        ({"space": {"lr_g": {"low": 1e-4, "high": float("inf")}}}, "space.lr_g.high must be a finite number"),
        ({"space": {"beta1": [0.5, 1.0]}}, r"space.beta1: value 1.0 is invalid in every combination: beta1 must be in \[0.0, 1.0\)"),
        ({"trials": "ten"}, "trials must be an int >= 1, got trials='ten'"),
        ({"population": 0}, "population must be auto or an int >= 1, got population=0"),
        ({"population": "all"}, "population must be auto or an int >= 1, got population='all'"),
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
    from study.spec.samplers import make_pruner, make_sampler

    spec = parse_spec({**BASE, "sampler": {"name": "tpe", "startup_trials": 4}, "pruner": {"name": "median", "startup_trials": 2}})
    assert make_sampler(spec, offset=0)._n_startup_trials == 4
    assert make_pruner(spec)._n_startup_trials == 2
    default = parse_spec(BASE)
    assert (default.sampler_startup_trials, default.pruner_startup_trials) == (10, 3)  # Optuna's TPE default; ours for the pruner


def test_range_type_comes_from_the_config_field():
    spec = parse_spec({**BASE, "space": {"lr_g": {"low": 1, "high": 2}, "batch_size": {"low": 32, "high": 256, "log": True}}})
    lr, batch = spec.space
    assert (lr.integer, type(lr.low), type(lr.high)) == (False, float, float)
    assert (batch.integer, batch.low, batch.high) == (True, 32, 256)


def test_every_choice_is_checked_in_a_space_too_large_to_combine():
    space = {f: [v, w] for f, v, w in (("optimizer", "adam", "sgd"), ("loss", "ns", "hinge"), ("arch", "mlp", "dcgan"))}
    space.update({"latent_dim": list(range(1, 40)), "batch_size": list(range(1, 40)), "g_channels": list(range(1, 40))})
    space["momentum"] = [0.0, 0.5, 1.5]
    with pytest.raises(SpecError, match=r"space.momentum: value 1.5 is invalid in every combination: momentum must be in"):
        parse_spec({**BASE, "space": space})


def test_a_spec_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe" + bytes(range(256)) + b"\x80" * 42)
    with pytest.raises(SpecError, match=rf"{path} is not UTF-8 text \(byte 0xff at offset 0\)"):
        load_spec(path)


# -- sizes that would exhaust memory or fail every trial (study.spec.limits, issue #27) -----------------
@pytest.mark.parametrize(
    "change, message",
    [
        ({"fixed": {"batch_size": 1_000_000_000}}, r"^fixed: batch_size=1000000000 takes 1000000000 real images per discriminator "
                                                   r"update, more than MNIST's 60000 training images: use batch_size <= 60000$"),
        ({"fixed": {"batch_size": 120_002, "batch_counts": "total"}}, r"takes 60001 real images .* use batch_size <= 120000$"),
        ({"space": {"batch_size": {"low": 64, "high": 100_000}}}, r"^space.batch_size.high=100000: batch_size=100000 takes"),
        ({"space": {"batch_size": [64, 70_000]}}, r"^space.batch_size=70000: batch_size=70000 takes"),
        ({"sweep": {"factors": {"batch_size": [64, 65_536]}}}, r"^sweep point batch_size=65536: batch_size=65536 takes"),
        ({"evaluation": {"samples": 3}}, r"^evaluation.samples=3: scoring needs more than 3 samples .*; use 4 <= samples <= 60000$"),
        ({"evaluation": {"final_samples": 10**9}}, r"^evaluation.final_samples=1000000000: more than MNIST's 60000 training images"),
        ({"trials": 10**6}, r"^trials=1000000 is more trials than a study holds: use trials <= 10000$"),
        ({"repeats": 1000}, r"^repeats=1000 is more than a trial trains: use repeats <= 100$"),
        ({"population": 1000}, r"^population=1000 is more runs than train as one model: use population <= 64 \(or auto\)$"),
        ({"budget": {"steps": 10**12}}, r"^evaluation.every=500 evaluates each run 1999999999 times in its 1000000000000 steps: "
                                        r"at most 1000; use evaluation.every >= 999001000 or a smaller budget$"),
        ({"budget": {"epochs": 10**4}}, r"^evaluation.every=500 evaluates each run 11999 times in its 6000000 steps"),
        ({"space": {"latent_dim": list(range(1, 22))}}, r"^space.latent_dim has 21 values and the report draws a panel for each: use at most 20"),
        ({"sweep": {"factors": {f"f{i}": [{"d_steps": i + 2}] for i in range(51)}}}, r"^the sweep has 51 factors"),
    ],
    ids=["batch", "batch-total", "batch-range", "batch-choice", "batch-sweep", "samples-low", "final-samples", "trials", "repeats",
         "population", "evaluations", "evaluations-epochs", "choices", "factors"],
)
def test_sizes_beyond_the_limits_are_refused_when_the_spec_is_read(change, message):
    raw = {**BASE, **change}
    if "sweep" in change:
        raw.pop("space")
    with pytest.raises(SpecError, match=message):
        parse_spec(raw)


def test_sizes_at_the_limits_are_accepted():
    from study.spec import limits

    spec = parse_spec({**BASE, "fixed": {"batch_size": limits.TRAIN_IMAGES}, "trials": limits.MAX_TRIALS, "repeats": limits.MAX_REPEATS,
                       "population": limits.MAX_POPULATION, "evaluation": {"every": 1, "samples": 4, "final_samples": limits.MAX_SAMPLES},
                       "budget": {"steps": limits.MAX_EVALUATIONS + 1}})
    assert (spec.trials, spec.repeats, spec.population, spec.eval_samples, spec.final_samples) == (10_000, 100, 64, 4, 60_000)
    assert spec.with_trials(limits.MAX_TRIALS).trials == limits.MAX_TRIALS
    with pytest.raises(SpecError, match=r"^--trials 10001 is more trials than a study holds: use --trials <= 10000$"):
        spec.with_trials(limits.MAX_TRIALS + 1)
    with pytest.raises(SpecError, match=r"evaluates each run 1001 times"):
        spec.with_budget_steps(limits.MAX_EVALUATIONS + 2)
