"""Bounds on the numbers of an input that size processes and memory (issue #27), and the exit
code of an invocation whose trials all failed. The CLI's refusals (exit 2, nothing written) are
in test_bad_input.py; the spec's sizes in test_spec.py."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import optuna
import pytest
import torch

from study.spec import limits
from study.storage.record import write as record_write
from study.spec.spec import load_spec, parse_spec
from tests.common import gan_study, journal_study, write_spec

GiB = limits.GiB
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "jobs, cores, memory, message",
    [
        (8, 2, 64 * GiB, None),
        (9, 2, 64 * GiB, "--jobs 9 asks for more worker processes than this machine can run: at most 8 (4 per core, 2 cores); "
                         "use --jobs 2 (one per core) or fewer"),
        (4, 1, 64 * GiB, None),
        (5, 1, 64 * GiB, "at most 4 (4 per core, 1 core); use --jobs 1 (one per core) or fewer"),
        (100_000, 4096, 1 << 50, "at most 16384 (4 per core, 4096 cores)"),
        (40, 64, 24 * GiB, "--jobs 40 needs about 40.0 GiB of memory for its worker processes (1.0 GiB each) and this machine has "
                           "24.0 GiB: use --jobs 24 or fewer"),
        (40, 64, None, None),  # memory unknown: the cores decide
        (1, 2, GiB // 2, None),  # one worker is the run itself: the training's own estimate decides
        (2, 2, GiB, "--jobs 2 needs about 2.0 GiB of memory for its worker processes (1.0 GiB each) and this machine has 1.0 GiB: "
                    "use --jobs 1 or fewer"),
        (0, 2, 64 * GiB, "--jobs must be >= 1, got --jobs 0"),
        (-3, 2, 64 * GiB, "--jobs must be >= 1, got --jobs -3"),
    ],
)
def test_jobs_are_bounded_by_the_cores_and_the_memory(jobs, cores, memory, message):
    problem = limits.jobs_problem(jobs, cores=cores, memory=memory)
    assert problem == message if message is None or message.startswith("--jobs") else message in problem


def test_workers_on_one_gpu_are_bounded():
    assert limits.gpu_jobs_problem(limits.JOBS_PER_GPU) is None
    assert limits.gpu_jobs_problem(9) == ("--jobs 9 puts 9 worker processes on one GPU, each with its own CUDA context: at most 8; "
                                          "use --jobs 4 or fewer (or --device cpu)")


def test_the_machine_has_cores_and_memory():
    assert limits.usable_cores() >= 1
    memory = limits.machine_memory()
    assert memory is None or memory > GiB


def test_activation_estimate_counts_the_networks_saved_activations():
    import gan

    mlp, mlp_weights = limits.activation_bytes(gan.TrainConfig())
    dcgan, _ = limits.activation_bytes(gan.TrainConfig(arch="dcgan"))
    attention, _ = limits.activation_bytes(gan.TrainConfig(arch="dcgan", self_attention="both"))
    # measured on the CPU (peak RSS over training at 4k-16k real images): 24.8 KiB an MLP image, 711 KiB a DCGAN one
    assert 20_000 < mlp < 30_000 and 500_000 < dcgan < 800_000 and attention > 2 * dcgan
    assert mlp_weights == 4 * sum(p.numel() for m in gan.build_models(gan.TrainConfig()) for p in m.parameters())
    state = torch.random.get_rng_state()
    limits.activation_bytes(gan.TrainConfig())
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is left alone


@pytest.mark.parametrize("name", ["quick", "seeds", "full"])
def test_the_builtin_specs_fit_a_16_gib_machine_with_two_jobs(monkeypatch, name):
    monkeypatch.setattr(limits, "machine_memory", lambda: 16 * GiB)
    assert limits.training_memory_problem(load_spec(name), 2, CPU) is None


def test_training_memory_counts_workers_runs_and_batch(monkeypatch):
    monkeypatch.setattr(limits, "machine_memory", lambda: 4 * GiB)
    raw = {"name": "m", "budget": {"steps": 10}, "trials": 8, "fixed": {"batch_size": 60_000},
           "space": {"lr_g": {"low": 1e-4, "high": 1e-3}}}
    # one MLP at a batch of 60,000: 1 GiB for the worker, 2.1 GiB of activations
    assert limits.training_memory_problem(parse_spec(raw), 1, CPU) is None
    two = limits.training_memory_problem(parse_spec(raw), 2, CPU)
    assert two.startswith("training batch_size=60000 of an MLP needs about 6.")
    assert "GiB per worker × 2 workers, 1 run at once) and this machine has 4.0 GiB: lower batch_size, population or --jobs" in two
    four = limits.training_memory_problem(parse_spec({**raw, "population": 4}), 1, CPU)
    assert "(4 runs at once)" in four
    # never more workers than the trials need: 8 trials, 4 to a worker, so --jobs 8 means 2 workers
    assert "× 2 workers, 4 runs at once" in limits.training_memory_problem(parse_spec({**raw, "population": 4}), 8, CPU)
    monkeypatch.setattr(limits, "machine_memory", lambda: None)
    assert limits.training_memory_problem(parse_spec(raw), 2, CPU) is None  # unknown memory: not refused


def test_a_search_combines_its_heaviest_network_with_its_largest_batch(monkeypatch):
    monkeypatch.setattr(limits, "machine_memory", lambda: 8 * GiB)
    raw = {"name": "m", "budget": {"steps": 10}, "space": {"arch": ["mlp", "dcgan"], "batch_size": [64, 16_384]}}
    message = limits.training_memory_problem(parse_spec(raw), 1, CPU)
    assert message.startswith("training batch_size=16384 (space.batch_size=16384) with a DCGAN (space.arch='dcgan') needs about")
    # a sweep's points are exact: the large batch trains an MLP only
    sweep = {"name": "m", "budget": {"steps": 10}, "sweep": {"factors": {"batch_size": [64, 16_384], "arch": ["dcgan"]}}}
    assert limits.training_memory_problem(parse_spec(sweep), 1, CPU) is None


def test_on_cuda_the_gpu_memory_and_the_workers_per_gpu_decide(monkeypatch):
    from study.trials.preflight import LimitError, check_limits

    gpu = SimpleNamespace(type="cuda", index=None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(total_memory=2 * GiB))
    monkeypatch.setattr(limits, "machine_memory", lambda: 1024 * GiB)  # the host has plenty; the GPU does not
    monkeypatch.setattr(limits, "usable_cores", lambda: 16)
    raw = {"name": "m", "budget": {"steps": 10}, "trials": 8, "fixed": {"batch_size": 60_000},
           "space": {"lr_g": {"low": 1e-4, "high": 1e-3}}}
    assert limits.training_memory_problem(parse_spec(raw), 1, gpu).endswith("and its GPU has 2.0 GiB: lower batch_size, population or --jobs")
    assert limits.training_memory_problem(parse_spec({**raw, "fixed": {"batch_size": 64}}), 1, gpu) is None
    with pytest.raises(LimitError, match=r"^--jobs 9 puts 9 worker processes on one GPU"):
        check_limits(parse_spec({**raw, "fixed": {"batch_size": 64}}), 9, gpu)


# -- workers never outnumber the trials left -------------------------------------------------------
def test_workers_never_outnumber_the_trials_left():
    from study.trials.runner import trials_left, workers_for

    spec = parse_spec({"name": "w", "budget": {"steps": 10}, "trials": 6, "space": {"lr_g": {"low": 1e-4, "high": 1e-3}}})
    study = optuna.create_study()
    opts = SimpleNamespace(jobs=100, target_trials=6)
    assert (trials_left(study, 6), workers_for(study, spec, opts)) == (6, 6)
    for state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING):
        trial = study.ask()
        if state != optuna.trial.TrialState.RUNNING:
            study.tell(trial, 1.0 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    assert (trials_left(study, 6), workers_for(study, spec, opts)) == (3, 3)
    assert workers_for(study, spec, SimpleNamespace(jobs=2, target_trials=6)) == 2
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)  # to be retried: its slot is free
    assert trials_left(study, 6) == 3
    study.enqueue_trial({"lr_g": 1e-4})  # queued trials still need a worker
    assert trials_left(study, 6) == 3
    assert workers_for(study, spec, SimpleNamespace(jobs=100, target_trials=3)) == 1  # none left: one reconciles and waits
    population = parse_spec({"name": "w", "budget": {"steps": 10}, "trials": 6, "population": 2,
                             "space": {"lr_g": {"low": 1e-4, "high": 1e-3}}})
    assert workers_for(optuna.create_study(), population, SimpleNamespace(jobs=100, target_trials=6)) == 3  # two trials a worker


def test_outcome_counts_the_trials_of_this_invocation():
    from study.trials.runner import outcome

    study = optuna.create_study()
    for invocation, state in (("old", "COMPLETE"), ("new", "FAIL"), ("new", "FAIL"), ("new", "PRUNED")):
        trial = study.ask()
        record_write(trial, invocation=invocation, reason=f"{state.lower()} here")
        if state == "PRUNED":
            record_write(trial, surplus=True)  # given up: not a trial this invocation ran
        study.tell(trial, 1.0 if state == "COMPLETE" else None, state=optuna.trial.TrialState[state])
    result = outcome(study, 0.0, "new")
    assert (result.complete, result.pruned, result.failed) == (1, 1, 2)
    assert (result.ran, result.ran_failed, result.last_failure) == (2, 2, "fail here")
    assert (outcome(study, 0.0, "old").ran, outcome(study, 0.0, "old").ran_failed) == (1, 0)


# -- an invocation whose trials all failed exits 1 ---------------------------------------------------
FAILING_TRAINER = """
import sys
import gan

def boom(*args, **kwargs):
    raise RuntimeError("the trainer broke")

gan.train = gan.train_population = boom
from study.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # a cold CLI process and two studies
@pytest.mark.usefixtures("evaluator")
def test_an_invocation_whose_trials_all_failed_exits_1(tmp_path):
    import subprocess

    spec = write_spec(tmp_path, name="broken", trials=2, budget={"steps": 10})
    out = subprocess.run([sys.executable, "-c", FAILING_TRAINER, "run", str(spec), "--quiet"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "study broken: 0 complete, 0 pruned, 4 failed" in out.stdout  # each trial, then its retry
    last = out.stderr.strip().splitlines()[-1]
    assert last == ("gan-study: error: all 4 trial(s) this run started failed (last: RuntimeError: the trainer broke); "
                    "fix the cause and run the same command again to retry them"), out.stderr
    assert [t.state.name for t in journal_study(tmp_path / "gan-study-runs", "broken").get_trials()] == ["FAIL"] * 4
    # one more trial of the same study with a working trainer: its earlier failures do not fail this run
    again = gan_study("run", str(spec), "--quiet", "--trials", "3", cwd=tmp_path)
    assert again.returncode == 0 and "study broken: 1 complete, 0 pruned, 4 failed" in again.stdout, again.stderr
