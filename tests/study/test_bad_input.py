"""Bad names and bad input through the real CLI: exit 2, one line on stderr, nothing written.

Issues #18 (a study name wrote outside the work folder) and #12 (bad input crashed or was
accepted). Each case runs ``python -m study.cli`` as a subprocess against real stores and
compares every file under the test's folder (bytes and mtimes) before and after.
"""

from __future__ import annotations

import hashlib
import os
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.common import gan_study, write_spec

# A cold evaluator cache is filled once, before any CLI subprocess's deadline starts.
pytestmark = pytest.mark.usefixtures("evaluator")

BAD_NAMES = {
    "parent escape": "../../esc",
    "dot-dot": "..",
    "dot-dot inside": "a..b",
    "slash": "a/b",
    "backslash": "a\\b",
    "empty": "",
    "too long": "x" * 101,
    "tab": "a\tb",
    "newline": "a\nb",
    "escape char": "a\x1b[2Jb",
    "leading dot": ".hidden",
}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: a folder, a link, or a file's size, mtime and hash."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            st = path.stat()
            out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``<site>/a/b/c/wd``: embedded stores holding a study 'tiny' (no training needed), and a spec."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    site = tmp_path_factory.mktemp("site")
    cwd = site / "a" / "b" / "c"
    workdir = cwd / "wd"
    workdir.mkdir(parents=True)
    optuna.create_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(str(workdir / "optuna.journal"))))
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    client.create_experiment("tiny", artifact_location=(workdir / "mlartifacts" / "tiny").as_uri())
    write_spec(cwd, budget={"steps": 20})
    return site


def refused(site: Path, *args: str, env: dict[str, str] | None = None, cold: bool = False) -> str:
    """Run the CLI in ``<site>/a/b/c``; assert exit 2, one line of stderr and an unchanged site."""
    cwd = site / "a" / "b" / "c"
    before = snapshot(site)
    out = gan_study(*args, cwd=cwd, env=env, timeout=300, cold=cold)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stderr.startswith("gan-study: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert snapshot(site) == before, "the command wrote or changed files"
    return out.stderr.strip()


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
@pytest.mark.parametrize("command", ["run", "status", "report"])
def test_a_bad_study_name_is_refused_before_any_store_is_touched(site, command, name):
    if command in ("run", "worker"):
        args = [command, "tiny.yaml", "--study-name", name, "--steps", "20", "--quiet"]
    else:
        args = [command, name]
    message = refused(site, *args, "--workdir", "wd")
    assert "is not allowed" in message and "letters, digits" in message


def test_worker_checks_the_name_too(site):
    assert "is not allowed" in refused(site, "worker", "tiny.yaml", "--study-name", "../x", "--workdir", "wd")


def test_a_bad_name_creates_no_work_folder(site):
    refused(site, "run", "tiny.yaml", "--study-name", "../../esc", "--workdir", "fresh/e2", "--steps", "20")
    assert not (site / "a" / "b" / "c" / "fresh").exists()


def test_an_absolute_name_is_refused(site):
    message = refused(site, "report", str(site / "abs"), "--workdir", "wd")
    assert "(it is an absolute path)" in message


def test_a_spec_name_follows_the_same_rule(site):
    spec = site / "a" / "b" / "c" / "bad-name.yaml"
    spec.write_text("name: ../esc\nbudget: {steps: 10}\n")
    try:
        assert "name '../esc' is not allowed" in refused(site, "run", str(spec), "--workdir", "wd")
    finally:
        spec.unlink()


@pytest.mark.parametrize(
    "content, message",
    [
        (bytes(range(256))[::-1] + b"\xff" * 44, r"bad.yaml is not UTF-8 text \(byte 0xff at offset 0\): a spec is a YAML file saved as UTF-8"),
        (b"name: bad\nspace: {d_dropout: {low: 0.1, high: 1.5}}\n", r"space.d_dropout: high=1.5 is invalid: d_dropout must be in \[0.0, 1.0\)"),
        (b"name: bad\nspace: {batch_size: {low: 32, high: 64.5}}\n", r"space.batch_size.high=64.5: batch_size is an int field"),
        (b"name: bad\nspace: {real_label: {low: 0.3, high: 1.0}}\n", r"space.real_label: low=0.3 is invalid"),
        (b"name: bad\nspace: {momentum: [0.0, 1.0]}\n", r"space.momentum: value 1.0 is invalid in every combination"),
        (b"name: bad\nspace: {arch: {low: 0, high: 1}}\n", r"space.arch: arch is not a numeric field"),
    ],
    ids=["not-utf8", "range-high", "float-bound-int-field", "range-low", "choice", "range-on-text-field"],
)
def test_bad_spec_input_is_one_line_and_exit_2(site, content, message):
    import re

    spec = site / "a" / "b" / "c" / "bad.yaml"
    spec.write_bytes(content)
    try:
        assert re.search(message, refused(site, "run", "bad.yaml", "--workdir", "wd", "--steps", "10"))
    finally:
        spec.unlink()


def test_factors_of_a_spec_without_that_factor_are_refused(site):
    message = refused(site, "run", "seeds", "--workdir", "wd", "--factors", "lr,learning_rate")
    assert message == ("gan-study: error: only_factors: 'learning_rate' is not a factor of the sweep; factors: lr, optimizer, "
                       "batch_size, spectral_norm, steps_ratio, d_dropout, self_attention, real_label, label_flip, "
                       "classic_dcgan")


def test_report_refuses_a_symlink_planted_in_the_work_folder(site):
    elsewhere = site / "elsewhere"
    elsewhere.mkdir()
    link = site / "a" / "b" / "c" / "wd" / "reports"
    link.symlink_to(elsewhere, target_is_directory=True)
    try:
        message = refused(site, "report", "tiny", "--workdir", "wd")
        assert "passes through the symlink" in message and "remove the link" in message
        message = refused(site, "report", "tiny", "--workdir", "wd", "--out", "wd/reports/tiny")  # --out as well
        assert "passes through the symlink" in message
    finally:
        link.unlink()
        elsewhere.rmdir()
    assert not any(elsewhere.parent.glob("elsewhere*"))


def test_version_comes_from_the_package_metadata(tmp_path):
    out = gan_study("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"gan-study {version('gan-study')}"


@pytest.mark.parametrize(
    "command, variables",
    [
        ("run", ["GAN_STUDY_STORAGE", "GAN_STUDY_TRACKING_URI", "MLFLOW_TRACKING_URI", "GAN_STUDY_DATA", "GAN_STUDY_CACHE", "GAN_STUDY_HEARTBEAT"]),
        ("worker", ["GAN_STUDY_STORAGE", "GAN_STUDY_TRACKING_URI", "MLFLOW_TRACKING_URI", "GAN_STUDY_DATA", "GAN_STUDY_CACHE", "GAN_STUDY_HEARTBEAT"]),
        ("status", ["GAN_STUDY_STORAGE", "GAN_STUDY_TRACKING_URI", "MLFLOW_TRACKING_URI", "GAN_STUDY_HEARTBEAT"]),
        ("ui", ["GAN_STUDY_STORAGE", "GAN_STUDY_TRACKING_URI", "MLFLOW_TRACKING_URI"]),
        ("report", ["GAN_STUDY_STORAGE", "GAN_STUDY_TRACKING_URI", "MLFLOW_TRACKING_URI", "GAN_STUDY_DATA", "GAN_STUDY_CACHE"]),
        ("specs", []),
    ],
)
def test_every_command_help_names_its_environment_variables(tmp_path, command, variables):
    out = gan_study(command, "--help", cwd=tmp_path)
    assert out.returncode == 0 and "environment variables:" in out.stdout
    for variable in variables:
        assert variable in out.stdout, variable
    if command != "specs":
        assert "$GAN_STUDY_TRACKING_URI, $MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db" in " ".join(out.stdout.split())


# -- no unbounded work from an input (issue #27): refused before anything starts -------------------
def test_jobs_beyond_the_machine_are_refused_before_torch_loads(site):
    """Refused before torch, Optuna and MLflow load: in milliseconds, not the seconds their
    imports take (a wall-clock bound would test the machine's load, not the code)."""
    import subprocess
    import sys

    from study.spec.limits import JOBS_PER_CORE, usable_cores

    message = refused(site, "run", "quick", "--jobs", "100000", "--workdir", "wd", cold=True)  # as a user starts it
    most = JOBS_PER_CORE * usable_cores()
    assert message == (f"gan-study: error: --jobs 100000 asks for more worker processes than this machine can run: at most {most} "
                       f"({JOBS_PER_CORE} per core, {usable_cores()} core{'s' if usable_cores() > 1 else ''}); "
                       f"use --jobs {usable_cores()} (one per core) or fewer")
    assert "--jobs 100000" in refused(site, "worker", "tiny.yaml", "--jobs", "100000", "--workdir", "wd")
    assert "--jobs must be >= 1, got --jobs 0" in refused(site, "run", "tiny.yaml", "--jobs", "0", "--workdir", "wd")
    probe = ("import sys\nfrom study.cli import main\nassert main(['run', 'quick', '--jobs', '100000']) == 2\n"
             "print(sorted({'torch', 'optuna', 'mlflow'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=site, capture_output=True, text=True, timeout=120)
    assert loaded.stdout.strip().splitlines()[-1] == "[]", loaded.stdout + loaded.stderr


def test_a_batch_larger_than_mnist_is_refused_in_the_preflight(site):
    spec = site / "a" / "b" / "c" / "huge-batch.yaml"
    spec.write_text("name: huge\ntrials: 2\nbudget: {steps: 20}\nfixed: {batch_size: 1000000000}\n"
                    "space: {lr_g: {low: 1.0e-4, high: 1.0e-3}}\n")
    try:
        message = refused(site, "run", str(spec), "--workdir", "wd")
    finally:
        spec.unlink()
    assert message == ("gan-study: error: fixed: batch_size=1000000000 takes 1000000000 real images per discriminator update, "
                       "more than MNIST's 60000 training images: use batch_size <= 60000")


def test_training_that_cannot_fit_in_memory_is_refused_before_anything_starts(site):
    # 64 DCGANs with self-attention at a batch of 60,000: terabytes, on any machine
    spec = site / "a" / "b" / "c" / "huge-memory.yaml"
    spec.write_text("name: huge\ntrials: 64\npopulation: 64\nbudget: {steps: 20}\n"
                    "fixed: {arch: dcgan, self_attention: both, batch_size: 60000}\n"
                    "space: {lr_g: {low: 1.0e-4, high: 1.0e-3}}\n")
    try:
        message = refused(site, "run", str(spec), "--workdir", "wd")
    finally:
        spec.unlink()
    assert message.startswith("gan-study: error: training batch_size=60000 of a DCGAN needs about ")
    assert "(64 runs at once) and this machine has" in message and message.endswith(": lower batch_size, population or --jobs")


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "tiny.yaml", "--trials", "100000"], "--trials 100000 is more trials than a study holds: use --trials <= 10000"),
        (["sample", "tiny", "-n", "100000"], "-n must be between 1 and 60000, got -n 100000"),
    ],
    ids=["trials", "sample-n"],
)
def test_counts_on_the_command_line_are_bounded(site, args, message):
    assert refused(site, *args, "--workdir", "wd") == f"gan-study: error: {message}"
