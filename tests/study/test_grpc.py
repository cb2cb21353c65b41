"""``--storage grpc://HOST:PORT``: a real gan-study study through Optuna's gRPC storage proxy.

The proxy (``optuna.storages.run_grpc_proxy_server``) runs as its own process in front of a
SQLite file on a free port of 127.0.0.1; two ``gan-study run`` workers train through it, and
what they wrote is read back from the database behind the proxy. Bad grpc URLs are in
tests/study/test_reliability.py's table of bad input.
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.storage_scale import start_proxy
from study.storage.proxy import proxy_address
from study.storage.record import Tag, TrialRecord, attrs
from study.trials.recovery import may_take_over
from study.storage.errors import StoreError
from study.storage.tracking import Stores, is_transient
from tests.common import gan_study, mlflow_runs, write_spec


@pytest.fixture
def proxy(tmp_path):
    """Optuna's gRPC proxy on ``sqlite:///<tmp>/optuna.db``: (grpc URL, the database's URL)."""
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc, url = start_proxy(db, tmp_path / "proxy.log")
    try:
        yield url, db
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow  # a proxy process and two training workers: 255 s under nice -n 19 beside other work
@pytest.mark.usefixtures("evaluator")
def test_a_study_runs_through_the_grpc_proxy(tmp_path, proxy):
    url, db = proxy
    spec = write_spec(tmp_path, trials=3)
    started = time.monotonic()
    run = gan_study("run", str(spec), "--storage", url, "--jobs", "2", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    trials = optuna.load_study(study_name="tiny", storage=db).get_trials()  # behind the proxy
    assert sorted(t.number for t in trials if t.state == TrialState.COMPLETE) == [0, 1, 2], [(t.number, t.state) for t in trials]
    workers = {TrialRecord.from_trial(t).worker["pid"] for t in trials}
    assert len(workers) == 2  # both worker processes claimed trials through the proxy
    _, runs = mlflow_runs(tmp_path / "gan-study-runs", "tiny")
    assert sorted(r.data.tags[Tag.TRIAL_NUMBER] for r in runs if r.data.tags.get(Tag.ROLE) == "trial") == ["0", "1", "2"]
    status = gan_study("status", "tiny", "--storage", url, cwd=tmp_path)
    assert status.returncode == 0 and "COMPLETE" in status.stdout, status.stderr
    print(f"3 trials, 2 workers through the proxy in {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize("url", ["grpc://host", "grpc://host:0", "grpc://host:99999", "grpc://ho st:1", "grpc://:13000", "grpc://h:1/db"])
def test_a_malformed_grpc_url_names_the_form(url):
    with pytest.raises(StoreError, match=r"write grpc://HOST:PORT"):
        proxy_address(url)


def test_a_grpc_address_is_parsed():
    assert proxy_address("grpc://10.0.0.5:13000") == ("10.0.0.5", 13000)
    assert proxy_address("grpc://[::1]:13000/") == ("::1", 13000)


def test_the_proxy_has_no_heartbeat_so_dead_workers_are_found_by_process_id(tmp_path):
    grpc, rdb = Stores.resolve(tmp_path, "grpc://127.0.0.1:1"), Stores.resolve(tmp_path, "postgresql://u@h/db")
    assert not grpc.heartbeats and rdb.heartbeats and not Stores.resolve(tmp_path).heartbeats
    elsewhere = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=attrs(worker={"host": "other-host", "pid": 1}))
    assert may_take_over(elsewhere, rdb) and not may_take_over(elsewhere, grpc)


def test_an_unavailable_proxy_is_transient_a_refused_call_is_not():
    import grpc

    class Rpc(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

    Rpc.__module__ = "grpc._channel"  # as grpc's own errors are
    assert is_transient(Rpc(grpc.StatusCode.UNAVAILABLE))
    assert not is_transient(Rpc(grpc.StatusCode.INVALID_ARGUMENT))
