"""The trial record and the metric registry: one home each, read by every layer."""

from __future__ import annotations

import os

import optuna
import pytest

from gan import metrics as gm
from study.storage import record
from study.storage.record import TrialRecord


def test_the_record_round_trips_through_optuna_and_refuses_unknown_fields():
    study = optuna.create_study()
    trial = study.ask()
    record.write(trial, reason="pruned at step 30", retry_of=4, metrics={"fd": 3.5}, repeat_run_ids=["a", "b"])
    with pytest.raises(TypeError, match="resaon"):
        record.write(trial, resaon="a typo is an error, not a silent empty column")
    study.tell(trial, 1.0)
    rec = TrialRecord.from_trial(study.trials[0])
    assert (rec.reason, rec.retry_of, rec.metrics, rec.surplus) == ("pruned at step 30", 4, {"fd": 3.5}, False)
    assert rec.curve_runs == [("a", 0), ("b", 1)]
    assert TrialRecord.from_trial(study.ask()) == TrialRecord()  # a trial made by hand: every default


def test_the_registry_knows_every_direction_and_refuses_bad_entries():
    for m in gm.METRICS.values():
        assert m.direction in ("minimize", "maximize", None) and m.label
    assert gm.label("train_seconds") == "training time (s)" and gm.label("no-such-metric") == "no-such-metric"
    with pytest.raises(ValueError, match="direction"):
        gm.register(gm.MetricInfo("x", "x", "lower"))
    with pytest.raises(ValueError, match="needs a compute"):
        gm.register(gm.MetricInfo("x", "x", None, kind="curve"))
    with pytest.raises(ValueError, match="panel"):
        gm.register(gm.MetricInfo("x", "x", None, kind="curve", compute=lambda s: s.g_loss, panel="nowhere"))


def test_a_curve_is_one_register_call(monkeypatch, data_dir):
    """Adding a curve takes one edit in one place: the training records, their history and
    callbacks, a claim's quantity and the reports' fetched curves all follow the registry."""
    import gan
    from reports.data import claim_keys
    from study.spec.quantities import parse_quantity

    monkeypatch.setattr(gm, "METRICS", dict(gm.METRICS))  # the registration ends with this test
    gm.register(gm.MetricInfo("d_gap", "mean D output, real minus generated", None, kind="curve", shown=False,
                              compute=lambda s: (s.real_out - s.fake_out).mean(-1)))

    blocks = []
    cfg = gan.TrainConfig(budget=4, batch_size=16, device="cpu", loss="hinge")
    result = gan.train(cfg, gan.load_mnist(data_dir, subset=1000), on_records=blocks.append, records_every=2)
    gap = [a - b for a, b in zip(result.history["d_real_mean"], result.history["d_fake_mean"])]
    assert result.history["d_gap"] == pytest.approx(gap, abs=1e-5) and len(gap) == 4  # hinge: D's means are raw
    assert [v for b in blocks for v in b.values["d_gap"]] == result.history["d_gap"]
    assert parse_quantity("d_gap.end_mean", "claim").name == "d_gap"
    assert "d_gap" in claim_keys()


@pytest.fixture
def feature_norm():
    """A metric added the way a user would: one register() call."""
    info = gm.register(gm.MetricInfo("feature_norm", "mean evaluator-feature norm", "minimize",
                                     compute=lambda s: s.features.norm(dim=1).mean().item()))
    yield info
    del gm.METRICS[info.name]


def test_adding_a_metric_is_one_edit(feature_norm, tmp_path):

    from reports.analysis import leaderboard
    from reports.data import load
    from study.trials.runner import RunOptions, run_study
    from study.spec.spec import parse_spec
    from study.storage.tracking import Stores
    from tests.common import TINY

    raw = {**TINY, "name": "norm", "trials": 1, "budget": {"steps": 20}, "objective": "feature_norm", "pruner": "median"}
    spec = parse_spec(raw)  # the spec accepts it as an objective a pruner can act on, with its direction
    assert [(o.metric, o.direction) for o in spec.objectives] == [("feature_norm", "minimize")]
    stores = Stores.resolve(tmp_path / "runs")
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    outcome = run_study(spec, RunOptions(stores=stores, study_name="norm", device="cpu", quiet=True, target_trials=1))
    # Registering the best generator uses MLflow's fluent API, which exports MLFLOW_TRACKING_URI:
    # left set, every later CLI run of this process's children would track into this study's store.
    assert {k: os.environ.get(k) for k in before} == before
    assert outcome.complete == 1 and outcome.best["value"] == outcome.best["metrics"]["feature_norm"] > 0
    study = optuna.load_study(study_name="norm", storage=stores.optuna_storage())
    data = load(study, stores, tmp_path)
    columns, rows, _, _ = leaderboard(data)
    assert "feature_norm" in columns
    assert rows[-1][columns.index("feature_norm")] not in ("", "—")
