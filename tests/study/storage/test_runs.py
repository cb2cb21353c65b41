"""MLflow bookkeeping of study/storage/runs.py against a real SQLite tracking store."""

from __future__ import annotations

import yaml
from mlflow.tracking import MlflowClient

from study.storage.record import Tag
from study.storage.runs import MAX_EXPERIMENT_TAG, describe_experiment
from study.spec.samplers import effective_spec
from study.spec.spec import load_spec, parse_spec


def test_a_spec_longer_than_an_experiment_tag_is_cut_in_the_note_and_whole_in_the_spec_artifact(tmp_path):
    # The seeds spec with its claims twice: about 36,000 characters, where MLflow allows 20,000
    # (the seeds spec alone is close to that bound, on either side of it as it changes).
    raw = effective_spec(load_spec("seeds"))
    raw["claims"] = raw["claims"] + [{**c, "id": f"{c['id']}-again"} for c in raw["claims"]]
    spec = parse_spec(raw)
    text = yaml.safe_dump(effective_spec(spec), sort_keys=False)
    assert len(text) > MAX_EXPERIMENT_TAG
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("seeds", artifact_location=(tmp_path / "a").as_uri())
    describe_experiment(client, experiment, spec.description, text)
    note = client.get_experiment(experiment).tags[Tag.NOTE]
    assert len(note) <= MAX_EXPERIMENT_TAG and note.startswith(spec.description.strip())
    shown = note.split("```yaml\n", 1)[1]
    assert text.startswith(shown.split("# ... the rest: artifact spec.yaml", 1)[0]) and "artifact spec.yaml" in shown


def test_a_short_spec_is_shown_whole(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("q", artifact_location=(tmp_path / "a").as_uri())
    text = yaml.safe_dump(effective_spec(load_spec("quick")), sort_keys=False)
    describe_experiment(client, experiment, "", text)
    assert client.get_experiment(experiment).tags[Tag.NOTE] == f"Spec:\n\n```yaml\n{text}```\n"
