"""Issue #16: conditional spaces, enqueue, studies/status views, the model registry and
``sample``, ``report A B``, the MLflow UI tags and the Optuna dashboard -- through the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import torch

from study.storage.compat import fixed_params
from study.storage.record import StudyAttrs, Tag
from study.spec.spec import SpecError, load_spec, parse_spec
from tests.common import TINY, gan_study, journal_study, mlflow_runs, write_spec

pytestmark = pytest.mark.slow  # real studies end to end

EVAL = {"every": 100, "samples": 500, "final_samples": 500}
LOSS_SPACE = {
    "loss": ["ns", "hinge"],
    "real_label": {"choices": [1.0, 0.9], "when": {"loss": "ns"}},  # label smoothing needs a target loss
    "lr_g": {"low": 1.0e-4, "high": 1.0e-3, "log": True},
}


def _spec(**changes):
    return parse_spec({**TINY, "sampler": {"name": "random", "seed": 0}, "space": LOSS_SPACE, **changes})


# -- spec checks (no training) -------------------------------------------------------------------
def test_conditional_space_parses_and_full_uses_conditions():
    spec = _spec()
    assert dict(spec.space[1].when) == {"loss": ("ns",)}
    full = load_spec("full")
    assert {p.name for p in full.space if p.when} >= {"self_attention", "real_label"}
    assert full.enqueue and full.enqueue[0]["arch"] == "mlp" and "self_attention" not in full.enqueue[0]


@pytest.mark.parametrize(
    "space, message",
    [
        ({"real_label": {"choices": [1.0, 0.9], "when": {"arch": "dcgan"}}},
         "space.real_label.when: 'arch' is not a choice parameter listed above it"),
        ({"loss": ["ns", "hinge"], "real_label": {"choices": [1.0, 0.9], "when": {"loss": "wgan"}}},
         "space.real_label.when.loss: 'wgan' is not one of loss's choices ['ns', 'hinge']"),
        ({"lr_g": {"low": 1e-4, "high": 1e-3}, "real_label": {"choices": [1.0], "when": {"lr_g": 1e-4}}},
         "space.real_label.when: 'lr_g' is a range"),
        ({"loss": ["hinge", "wgan-gp"], "real_label": {"choices": [1.0, 0.9], "when": {"loss": "hinge"}}},
         "space.real_label: value 0.9 is invalid in every combination"),
    ],
)
def test_bad_conditions_are_one_line_errors(space, message):
    with pytest.raises(SpecError) as info:
        _spec(space=space)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_grid_refuses_conditions():
    with pytest.raises(SpecError, match="sampler=grid runs every combination, so space.real_label cannot have a when"):
        _spec(sampler="grid", space={"loss": ["ns", "hinge"], "real_label": {"choices": [1.0, 0.9], "when": {"loss": "ns"}}})


@pytest.mark.parametrize(
    "enqueue, message",
    [
        ([{"optimizer": "adam"}], "enqueue[0]: 'optimizer' is not a space parameter; parameters: loss, real_label, lr_g"),
        ([{"loss": "wgan"}], "enqueue[0].loss: 'wgan' is not one of its choices ['ns', 'hinge']"),
        ([{"loss": "hinge", "real_label": 0.9}], "enqueue[0].real_label: this parameter is drawn only when loss in ['ns']"),
        ([{"lr_g": 0.5}], "enqueue[0].lr_g: 0.5 is not a number in its range [0.0001, 0.001]"),
        ([{"loss": "ns"}, {"loss": "ns"}], "enqueue[1] repeats enqueue[0]"),
        ([{"loss": "ns"}] * 3, "enqueue lists 3 configurations but the study has 2 trials"),
        ({"loss": "ns"}, "enqueue must be a non-empty list of mappings"),
    ],
)
def test_bad_enqueue_is_a_one_line_error(enqueue, message):
    with pytest.raises(SpecError) as info:
        _spec(enqueue=enqueue)
    assert message in str(info.value)


def test_enqueue_once_across_calls(tmp_path):
    from study.spec.enqueue import enqueue_once
    from study.storage.tracking import Stores

    stores = Stores.resolve(tmp_path)
    spec = _spec(enqueue=[{"loss": "hinge", "lr_g": 2e-4}, {"loss": "ns", "real_label": 0.9}])
    study = optuna.create_study(study_name="q", storage=stores.optuna_storage())
    assert enqueue_once(study, spec, stores) == 2
    assert enqueue_once(study, spec, stores) == 0  # a resume, another worker: nothing more
    waiting = [t for t in study.get_trials() if t.state.name == "WAITING"]
    assert [fixed_params(t) for t in waiting] == [{"loss": "hinge", "lr_g": 2e-4}, {"loss": "ns", "real_label": 0.9}]
    assert study.user_attrs[StudyAttrs.ENQUEUED] == 2


def test_bad_spec_through_the_cli_writes_nothing(tmp_path):
    spec = write_spec(tmp_path, name="badq", space=LOSS_SPACE, enqueue=[{"loss": "hinge", "real_label": 1.0}])
    out = gan_study("run", str(spec), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("gan-study: error: enqueue[0].real_label: this parameter is drawn only when")
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "gan-study-runs").exists()


# -- end to end ---------------------------------------------------------------------------------
def test_conditional_enqueued_study_end_to_end(tmp_path):
    spec = write_spec(tmp_path, name="eco", trials=3, evaluation=EVAL, space=LOSS_SPACE, sampler={"name": "random", "seed": 1},
                      enqueue=[{"loss": "hinge", "lr_g": 2.0e-4}])
    out = gan_study("run", str(spec), "--steps", "20", "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "study eco: 3 complete, 0 pruned, 0 failed" in out.stdout
    assert "enqueued the spec's 1 configuration(s)" in out.stdout and "registered as model 'eco' version 1" in out.stdout
    workdir = tmp_path / "gan-study-runs"
    trials = journal_study(workdir, "eco").get_trials()
    assert trials[0].params == {"loss": "hinge", "lr_g": 2.0e-4}  # the enqueued configuration ran first
    for t in trials:  # drawn only where it applies, never recorded otherwise
        assert ("real_label" in t.params) == (t.params["loss"] == "ns")

    client, runs = mlflow_runs(workdir, "eco")
    experiment = client.get_experiment_by_name("eco")
    assert experiment.tags[Tag.EXPERIMENT_KIND] == "custom_model_development"
    assert "enqueue" in experiment.tags[Tag.SPEC] and "```yaml" in experiment.tags[Tag.NOTE]
    names = sorted(r.info.run_name for r in runs if r.data.tags.get(Tag.ROLE) == "trial")
    assert names[0] == "trial-0 loss=hinge lr_g=2e-4"

    best = min((t for t in trials), key=lambda t: t.value)
    versions = client.search_model_versions("name='eco'")
    assert len(versions) == 1 and versions[0].tags[Tag.BEST_TRIAL] == str(best.number)
    assert versions[0].run_id == best.user_attrs["mlflow_run_id"] and "Config" in versions[0].description

    # a resume neither enqueues again nor registers the same best again
    again = gan_study("run", str(spec), "--steps", "20", "--trials", "4", "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    trials = journal_study(workdir, "eco").get_trials()
    assert len(trials) == 4 and sum(t.params == {"loss": "hinge", "lr_g": 2.0e-4} for t in trials) == 1
    assert "enqueued the spec" not in again.stdout
    best = min(trials, key=lambda t: t.value)  # a new best (trial 3) gets a new version; the same best none
    versions = sorted(client.search_model_versions("name='eco'"), key=lambda v: int(v.version))
    assert [v.tags[Tag.BEST_TRIAL] for v in versions][-1] == str(best.number) and len(versions) == (2 if best.number == 3 else 1)

    doc = json.loads(gan_study("status", "eco", "--json", cwd=tmp_path).stdout)
    assert doc["study"] == "eco" and doc["directions"] == ["minimize"] and doc["metric_names"] == ["fd"]
    assert [r["number"] for r in doc["trials"]] == [0, 1, 2, 3]
    table = list(csv.DictReader(io.StringIO(gan_study("status", "eco", "--csv", cwd=tmp_path).stdout)))
    assert [r["state"] for r in table] == ["COMPLETE"] * 4 and table[0]["param_loss"] == "hinge" and float(table[0]["value_fd"]) > 0

    listed = gan_study("studies", cwd=tmp_path)
    assert listed.returncode == 0
    line = next(line for line in listed.stdout.splitlines() if line.startswith("eco "))
    assert line.split()[1:4] == ["fd", "(min)", "4"]
    [row] = json.loads(gan_study("studies", "--json", cwd=tmp_path).stdout)
    assert row["states"]["COMPLETE"] == 4 and row["best"]["number"] == best.number

    # sample: the best trial's registered model, a chosen trial's checkpoint, a tensor file
    drawn = gan_study("sample", "eco", cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    grid = workdir / "samples" / "eco" / f"trial-{best.number}.png"
    assert grid.stat().st_size > 0 and f"registered model models:/eco/{versions[-1].version}" in drawn.stdout
    other = next(t.number for t in trials if t.number != best.number)
    drawn = gan_study("sample", "eco", "--trial", str(other), "-n", "16", "--out", str(tmp_path / "s.pt"), cwd=tmp_path)
    assert drawn.returncode == 0, drawn.stderr
    assert "checkpoint of run" in drawn.stdout and torch.load(tmp_path / "s.pt").shape == (16, 1, 28, 28)
    (workdir / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    refused = gan_study("sample", "eco", "--out", str(workdir / "link" / "x.png"), cwd=tmp_path)
    assert refused.returncode == 2 and "passes through the symlink" in refused.stderr
    assert not (tmp_path / "elsewhere").exists()
    missing = gan_study("sample", "eco", "--trial", "9", cwd=tmp_path)
    assert missing.returncode == 2 and "has no trial 9" in missing.stderr

    # report A B: best trials side by side, with the floor row
    second = write_spec(tmp_path, name="eco2", trials=1, evaluation=EVAL)
    assert gan_study("run", str(second), "--steps", "20", "--quiet", cwd=tmp_path).returncode == 0
    report = gan_study("report", "eco", "eco2", "--format", "md", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    text = (workdir / "reports" / "compare-eco-eco2" / "compare.md").read_text()
    assert "| eco |" in text and "| eco2 |" in text and "*floor*" in text


# -- the Optuna dashboard -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _journal_study(tmp_path: Path, name: str) -> None:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    (tmp_path / "gan-study-runs").mkdir(exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "gan-study-runs" / "optuna.journal")))
    study = optuna.create_study(study_name=name, storage=storage)
    study.enqueue_trial({"x": 1.0})


def test_dashboard_serves_the_study_over_its_rest_api(tmp_path):
    pytest.importorskip("optuna_dashboard")
    _journal_study(tmp_path, "dash")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "dashboard", "dash", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    body = json.load(response) if response.status == 200 else None
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        assert body is not None, "the dashboard did not answer"
        assert [s["study_name"] for s in body["study_summaries"]] == ["dash"]
        # SIGTERM while a request is in flight (a POST whose body has not all arrived) still stops
        # it: wsgiref swallowed the KeyboardInterrupt raised inside a request and served on.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"POST /api/studies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100\r\n\r\n{")
            time.sleep(2)
            os.killpg(proc.pid, 15)
            time.sleep(1)
        assert proc.wait(timeout=60) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
    assert f"Optuna dashboard on http://127.0.0.1:{port}" in proc.stdout.read()


def test_dashboard_without_the_extra_or_the_study_is_one_line(tmp_path):
    _journal_study(tmp_path, "dash")
    shadow = tmp_path / "shadow" / "optuna_dashboard"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'optuna_dashboard'\")\n")
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", ""), str(Path(__file__).parents[2])])
    out = gan_study("dashboard", "dash", cwd=tmp_path, env={"PYTHONPATH": path})
    assert out.returncode == 2
    assert out.stderr.strip().endswith("pip install 'gan-study[dashboard]' (or: pip install 'optuna-dashboard>=0.21')")
    assert len(out.stderr.strip().splitlines()) == 1
    out = gan_study("dashboard", "nope", cwd=tmp_path)
    assert out.returncode == 2 and "no study 'nope'" in out.stderr and "studies: dash" in out.stderr
