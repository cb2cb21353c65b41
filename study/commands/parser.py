"""The ``gan-study`` argument parser: each command's options, help texts and the environment
variables it reads (listed at the end of its ``--help``)."""

from __future__ import annotations

import argparse
import os

__all__ = ["ENV_VARS", "MLFLOW_TRACKING_ENV", "STORAGE_ENV", "TRACKING_ENV", "build_parser"]

STORAGE_ENV = "GAN_STUDY_STORAGE"
TRACKING_ENV = "GAN_STUDY_TRACKING_URI"
MLFLOW_TRACKING_ENV = "MLFLOW_TRACKING_URI"
# What each command reads from the environment (shown at the end of its --help).
STORE_VARS = (
    (STORAGE_ENV, "Optuna storage URL (see --storage)"),
    (TRACKING_ENV, "MLflow tracking URI (see --tracking-uri)"),
    (MLFLOW_TRACKING_ENV, "MLflow's own tracking URI variable, used when the two above are not set"),
    ("GAN_STUDY_HEARTBEAT", "INTERVAL[,GRACE] seconds of the trial heartbeat on database storages (default 30,90)"),
)
DATA_VARS = (
    ("GAN_STUDY_DATA", "folder holding MNIST/raw/ (see --data-dir; default ./data)"),
    ("GAN_STUDY_CACHE", "folder of the cached MNIST evaluator (default ~/.cache/gan-study)"),
)
PROGRESS_VARS = (("GAN_STUDY_PROGRESS_SECONDS", "seconds between progress lines when stderr is not a terminal (default 30)"),)
HTTP_VARS = (
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "retries of one call to an MLflow server (default here 4)"),
    ("MLFLOW_HTTP_REQUEST_TIMEOUT", "seconds per call to an MLflow server (default here 60)"),
)
ENV_VARS = {
    "run": STORE_VARS + DATA_VARS + PROGRESS_VARS + HTTP_VARS,
    "worker": STORE_VARS + DATA_VARS + PROGRESS_VARS + HTTP_VARS,
    "specs": (),
    "status": STORE_VARS + HTTP_VARS,
    "studies": STORE_VARS,
    "ui": STORE_VARS,
    "dashboard": STORE_VARS,
    "report": STORE_VARS + DATA_VARS + HTTP_VARS,
    "sample": STORE_VARS + HTTP_VARS,
    "evaluator": DATA_VARS + PROGRESS_VARS,
}


def _env_epilog(command: str) -> str:
    rows = ENV_VARS[command]
    if not rows:
        return "environment variables: none are read"
    width = max(len(name) for name, _ in rows)
    return "environment variables:\n" + "\n".join(f"  {name:{width}}  {text}" for name, text in rows)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gan-study")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="gan-study-runs", help="folder of the embedded stores (default: ./gan-study-runs)")
    p.add_argument(
        "--storage",
        default=os.environ.get(STORAGE_ENV) or None,
        help=f"Optuna storage URL (default: ${STORAGE_ENV}, else <workdir>/optuna.journal), e.g. postgresql://user:pw@host/db, or grpc://HOST:PORT of an Optuna gRPC proxy; "
        "put a URL with a password in the variable to keep it off the command line",
    )
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get(TRACKING_ENV) or os.environ.get(MLFLOW_TRACKING_ENV) or None,
        help=f"MLflow tracking URI, e.g. http://host:5000; the first set of: this option, ${TRACKING_ENV}, "
        f"${MLFLOW_TRACKING_ENV}, else sqlite:///<workdir>/mlflow.db",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan-study", description="Optuna studies of GAN training on MNIST, tracked in MLflow.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=description or text, epilog=_env_epilog(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    for name, text in (
        ("run", "run a study (or continue it) until it has its trials"),
        ("worker", "join a study as one more worker (same options as run; for several machines)"),
    ):
        p = add(name, text)
        p.add_argument("spec", help="a built-in spec name (see 'gan-study specs') or a YAML file")
        p.add_argument("--trials", type=int, help="the study's total number of trials (default: the spec's)")
        _store_args(p)
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        p.add_argument("--jobs", type=int, default=1, help="trials run in parallel on this machine (processes)")
        p.add_argument("--study-name", help="Optuna study and MLflow experiment name (default: the spec's name); "
                       "1-100 letters, digits, '_', '.', '-', starting with a letter or digit")
        p.add_argument("--steps", type=int, help="train every trial this many steps instead of the spec's budget")
        p.add_argument("--factors", help="a sweep spec: train the baseline and only these factors (comma-separated), "
                       "e.g. the MLP factors of seeds on a CPU; the claims on the others are reported as not run")
        p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $GAN_STUDY_DATA or ./data)")
        p.add_argument("--quiet", action="store_true", help="print only warnings, errors and the final summary (no progress)")

    add("specs", "list the built-in specs")

    p = add("status", "the trials of a study")
    p.add_argument("study", help="study name")
    _store_args(p)
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help='print {"study", "directions", "metric_names", "trials": [...]} as JSON')
    shape.add_argument("--csv", action="store_true", help="print one CSV line per trial (values, params, metrics in columns)")

    p = add("studies", "the studies in a store: trials by state and the best value")
    _store_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of study objects")

    p = add("ui", "serve the MLflow UI on the workdir's store", "serve the MLflow UI (127.0.0.1 unless --host)")
    _store_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)

    p = add("dashboard", "serve optuna-dashboard on the studies' Optuna storage (the [dashboard] extra)",
            "serve optuna-dashboard on the studies' Optuna storage (127.0.0.1 unless --host); "
            "needs pip install 'gan-study[dashboard]'")
    p.add_argument("studies", nargs="+", metavar="STUDY", help="the studies to open (each must exist)")
    _store_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)

    p = add("report", "write a markdown and PDF report of a study, or compare several",
            "write report.md, report.pdf and figures/ of one study; with several, a comparison of their best trials")
    p.add_argument("study", nargs="+", help="study name; several: compare their best trials side by side")
    _store_args(p)
    p.add_argument("--format", default="md,pdf", help="comma-separated: md, pdf (default: md,pdf)")
    p.add_argument("--out", help="output folder (default: <workdir>/reports/<study>/); refused where it passes through a symlink inside the work folder")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (for the evaluator's floors)")
    p.add_argument("--verbose", action="store_true", help="print every figure written, not only the figures folder")

    p = add("evaluator", "show the evaluator that scores; --retrain trains its recipe here and compares",
            "print the pinned evaluator's card (weights hash, test accuracy, recipe); with --retrain, train the recipe "
            "on this machine (minutes, cached) and print how far its scores are from the pinned ones")
    p.add_argument("--retrain", action="store_true", help="train the recipe here and compare it with the pinned weights")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $GAN_STUDY_DATA or ./data)")

    p = add("sample", "draw samples from the best (or a chosen) trial's generator",
            "draw samples from the best trial's generator (or --trial N's): the registered model, else the trial's checkpoint")
    p.add_argument("study", help="study name")
    _store_args(p)
    p.add_argument("--trial", type=int, help="trial number (default: the best complete trial)")
    p.add_argument("-n", type=int, default=64, help="how many samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--out", help="grid.png (an image grid) or samples.pt (a tensor N x 1 x 28 x 28 in [-1, 1]); default: "
                   "<workdir>/samples/<study>/trial-<N>.png; refused where it passes through a symlink inside the work folder")
    return parser
