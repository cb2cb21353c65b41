"""The gan-study CLI, driven through real subprocesses against real stores."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


import pytest

from gan.metrics import class_metrics
from tests.common import gan_study, journal_study, mlflow_runs, write_spec

# A cold evaluator cache is filled once, before any CLI subprocess's deadline starts.
pytestmark = [pytest.mark.usefixtures("evaluator"), pytest.mark.slow]  # slow: real studies through the CLI


def test_specs_lists_the_builtins(tmp_path):
    out = gan_study("specs", cwd=tmp_path)
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["full", "quick", "seeds"]


def test_help_on_every_command(tmp_path):
    for command in ("run", "worker", "specs", "status", "studies", "ui", "dashboard", "report", "sample"):
        out = gan_study(command, "--help", cwd=tmp_path)
        assert out.returncode == 0 and "usage: gan-study" in out.stdout
        assert "environment variables:" in out.stdout, command
    # --help and usage errors answer before torch (and Optuna, MLflow) load
    probe = "import sys\nfrom study.cli import main\nfor argv in (['run', '--help'], ['run']):\n    try:\n        main(argv)\n" \
            "    except SystemExit:\n        pass\nprint(sorted({'torch', 'optuna', 'mlflow'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip().splitlines()[-1] == "[]", loaded.stdout + loaded.stderr


def test_two_trial_study_then_one_more(tmp_path):
    spec = write_spec(tmp_path)
    first = gan_study("run", str(spec), "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "study tiny: 2 complete, 0 pruned, 0 failed" in first.stdout
    workdir = tmp_path / "gan-study-runs"
    study = journal_study(workdir, "tiny")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.value is not None and t.value > 0 for t in trials)
    assert all("class_counts" not in t.user_attrs["metrics"] for t in trials)  # in MLflow only, one metric per digit

    client, runs = mlflow_runs(workdir, "tiny")
    parents = [r for r in runs if r.data.tags.get("gan_study.role") == "invocation"]
    children = [r for r in runs if r.data.tags.get("gan_study.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["optuna.trial_state"] == "COMPLETE"
        assert run.data.params["batch_size"] == "64" and "lr_g" in run.data.params
        curve = client.get_metric_history(run.info.run_id, "g_loss")
        assert len(curve) == 60 and sorted(m.step for m in curve) == list(range(1, 61))
        assert [m.step for m in client.get_metric_history(run.info.run_id, "fd")] == [0, 30, 60]  # step 0: untrained
        for key in ("modes", "kl_uniform", "is", "precision", "recall", "d_acc_generated", "d_acc", "d_acc_real", "d_acc_fake", "images_per_sec"):
            assert key in run.data.metrics, key
        # the final scores are those of the final class histogram, of all 500 final samples
        counts = [int(run.data.metrics[f"class_count.{d}"]) for d in range(10)]
        assert sum(counts) == 500
        assert {k: run.data.metrics[k] for k in ("modes", "kl_uniform")} == pytest.approx(class_metrics(counts), rel=1e-9, abs=1e-12)
        artifacts = {a.path for folder in ("samples", "final", "checkpoint") for a in client.list_artifacts(run.info.run_id, folder)}
        assert artifacts >= {"samples/step_000030.png", "samples/final.png", "final/samples_20.png", "final/class_histogram.png",
                             "final/interpolation.png", "final/latent_arithmetic.png", "final/pictures.npz", "final/metrics.json",
                             "checkpoint/checkpoint.pt", "samples/step_000000.png", "samples/step_000015.png"}
    trial_runs = {t.user_attrs["mlflow_run_id"] for t in trials}
    assert trial_runs == {r.info.run_id for r in children}
    by_id = {r.info.run_id: r for r in children}
    for t in trials:  # the study records the scores its run logged
        assert t.user_attrs["metrics"]["modes"] == by_id[t.user_attrs["mlflow_run_id"]].data.metrics["modes"]

    again = gan_study("run", str(spec), "--trials", "3", "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [t.state.name for t in journal_study(workdir, "tiny").get_trials()] == ["COMPLETE"] * 3
    _, runs = mlflow_runs(workdir, "tiny")
    assert sum(r.data.tags.get("gan_study.role") == "trial" for r in runs) == 3

    status = gan_study("status", "tiny", "--json", cwd=tmp_path)
    rows = json.loads(status.stdout)["trials"]
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 and all(r["mlflow_status"] == "FINISHED" for r in rows)
    table = gan_study("status", "tiny", cwd=tmp_path)
    assert table.returncode == 0 and "study tiny: 3 trials" in table.stdout


def test_grid_runs_each_point_once_and_a_rerun_adds_nothing(tmp_path):
    spec = write_spec(tmp_path, name="grid", sampler="grid", trials=None, budget={"steps": 20}, evaluation={"every": 100, "samples": 500, "final_samples": 500},
                      space={"optimizer": ["adam", "rmsprop"], "real_label": [1.0, 0.9]})
    for _ in range(2):
        out = gan_study("run", str(spec), "--quiet", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    trials = journal_study(tmp_path / "gan-study-runs", "grid").get_trials()
    points = sorted((t.params["optimizer"], t.params["real_label"]) for t in trials)
    assert points == sorted([("adam", 1.0), ("adam", 0.9), ("rmsprop", 1.0), ("rmsprop", 0.9)])
    assert all(t.state.name == "COMPLETE" for t in trials)


def test_bad_spec_exits_2_names_the_key_and_writes_nothing(tmp_path):
    spec = write_spec(tmp_path, space={"lr_g": {"low": 1e-2, "high": 1e-3}})
    out = gan_study("run", str(spec), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "gan-study: error: space.lr_g: low must be <= high; got low=0.01, high=0.001"
    assert "Traceback" not in out.stderr and not (tmp_path / "gan-study-runs").exists()


def test_two_jobs_finish_four_trials(tmp_path):
    spec = write_spec(tmp_path, name="jobs", trials=4, budget={"steps": 40}, evaluation={"every": 20, "samples": 500, "final_samples": 500})
    out = gan_study("run", str(spec), "--jobs", "2", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "database is locked" not in out.stderr
    workdir = tmp_path / "gan-study-runs"
    trials = journal_study(workdir, "jobs").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    _, runs = mlflow_runs(workdir, "jobs")
    trial_runs = [r for r in runs if r.data.tags.get("gan_study.role") == "trial"]
    assert len(trial_runs) == 4 and {r.data.tags["optuna.trial_number"] for r in trial_runs} == {"0", "1", "2", "3"}
    assert 1 <= len({t.user_attrs["worker"]["pid"] for t in trials}) <= 2  # one may finish all on a busy machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_runs_on_localhost(tmp_path):
    spec = write_spec(tmp_path, name="ui", trials=1, budget={"steps": 10}, evaluation={"every": 100, "samples": 500, "final_samples": 500})
    assert gan_study("run", str(spec), "--quiet", cwd=tmp_path).returncode == 0
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "ui", "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui"
        deadline, body = time.monotonic() + 600, None  # generous: a busy machine, not a hang
        while time.monotonic() < deadline and body is None:
            try:
                body = json.load(urllib.request.urlopen(url, timeout=5))
            except OSError:
                time.sleep(1)
        assert body is not None, "the MLflow UI did not answer"
        experiment_id = body["experiment"]["experiment_id"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.load(urllib.request.urlopen(request, timeout=10))["runs"]
        assert len(runs) == 2  # the invocation and its trial
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    # The UI would open the experiment on its GenAI overview: the study's runs page is linked.
    assert f"ui: http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs" in proc.stdout.read()


def test_mlflow_tracking_uri_is_honoured(tmp_path, monkeypatch):
    """A team's MLFLOW_TRACKING_URI is used when neither --tracking-uri nor GAN_STUDY_TRACKING_URI is set."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("GAN_STUDY_TRACKING_URI", raising=False)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    spec = write_spec(tmp_path, name="env", trials=1, budget={"steps": 10}, evaluation={"every": 100, "samples": 500, "final_samples": 500})
    out = gan_study("run", str(spec), "--quiet", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": other})
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "gan-study-runs" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=other)
    runs = client.search_runs([client.get_experiment_by_name("env").experiment_id])
    assert sorted(r.data.tags["gan_study.role"] for r in runs) == ["invocation", "trial"]
