"""Running a study again: the same spec continues it, a changed one is refused (stores as they
were), and every invocation records the spec it ran."""

from __future__ import annotations

import hashlib
import subprocess

import yaml

import pytest

from study.storage.runs import REPO, git_commit
from tests.common import gan_study, journal_study, mlflow_runs, write_spec

# A cold evaluator cache is filled once, before any CLI subprocess's deadline starts.
pytestmark = [pytest.mark.usefixtures("evaluator"), pytest.mark.slow]  # slow: real studies through the CLI


def _digest(workdir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(workdir.iterdir()) if p.is_file()}


def test_a_changed_spec_is_refused_by_name_and_the_same_one_continues(tmp_path, evaluator):
    spec = write_spec(tmp_path, name="resumed", trials=1)
    workdir = tmp_path / "gan-study-runs"
    first = gan_study("run", str(spec), "--steps", "20", "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    study = journal_study(workdir, "resumed")
    assert study.metric_names == ["fd"]
    stored = study.user_attrs["spec"]
    assert stored["budget"] == {"steps": 20}  # the budget that actually ran, not the file's 60

    before = _digest(workdir)
    (tmp_path / "changed").mkdir()
    changed = write_spec(tmp_path / "changed", name="resumed", trials=1, space={"lr_g": {"low": 1.0e-4, "high": 2.0e-3, "log": True}})
    for args, field in ((["run", str(changed), "--steps", "20"], "space.lr_g.high"), (["run", str(spec), "--steps", "30"], "budget.steps")):
        refused = gan_study(*args, "--quiet", cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gan-study: error:") and field in lines[0] and "--study-name" in lines[0], lines
        assert _digest(workdir) == before

    (tmp_path / "described").mkdir()  # the description may change too: it trains nothing
    described = write_spec(tmp_path / "described", name="resumed", trials=1, description="the same study, described anew")
    more = gan_study("run", str(described), "--steps", "20", "--trials", "2", "--quiet", cwd=tmp_path)  # --trials may grow
    assert more.returncode == 0, more.stderr
    assert [t.state.name for t in journal_study(workdir, "resumed").trials] == ["COMPLETE", "COMPLETE"]

    client, runs = mlflow_runs(workdir, "resumed")
    invocations = [r for r in runs if r.data.tags.get("gan_study.role") == "invocation"]
    assert len(invocations) == 2 and len({r.data.params["spec_hash"] for r in invocations}) == 1
    local = client.download_artifacts(invocations[0].info.run_id, "spec.yaml", str(tmp_path))
    assert yaml.safe_load(open(local))["budget"] == {"steps": 20}
    trial = next(r for r in runs if r.data.tags.get("gan_study.role") == "trial")
    # scored by the evaluator every command uses by default, and its card says which
    assert trial.data.tags["gan_study.evaluator_hash"] == evaluator.weights_hash
    assert float(trial.data.params["evaluator_test_accuracy"]) == evaluator.test_accuracy
    # The commit the study ran from: HEAD then, so HEAD or its ancestor now (others may commit
    # meanwhile); outside a git checkout there is none, and no tag.
    commit = trial.data.tags.get("mlflow.source.git.commit")
    if git_commit() is None:
        assert commit is None
    else:
        assert commit is not None and len(commit) == 40, trial.data.tags
        is_ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=REPO, capture_output=True)
        assert is_ancestor.returncode == 0, (commit, is_ancestor.stderr)
