"""The ``gan-study`` command line: run studies, list specs and studies, show status, open the
MLflow UI or the Optuna dashboard, report, and draw samples from a trial's generator."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

EXIT_FAILED = 1  # a runtime failure: every trial this invocation ran failed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STARTED = time.monotonic()  # the command's wall time counts from here (the summary of run)


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
        help=f"Optuna storage URL (default: ${STORAGE_ENV}, else <workdir>/optuna.journal), e.g. postgresql://user:pw@host/db; "
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


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "worker"):  # before torch loads: `--jobs 100000` is refused in milliseconds
        from .limits import jobs_problem

        problem = jobs_problem(args.jobs)
        if problem:
            print(f"gan-study: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    # Only now: importing gan loads torch (seconds), which --help and usage errors never need.
    from gan.errors import GanStudyError

    # A scheduler's or `kill`'s SIGTERM stops a study as Ctrl-C does: the running trial is marked
    # failed in both stores now, instead of staying RUNNING until the next run reconciles it.
    signal.signal(signal.SIGTERM, _interrupt)
    # A file-size limit (ulimit -f) fails the write with EFBIG, which the trial records, instead
    # of killing the process unannounced (tests/study/test_faults.py).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    import logging

    # MLflow announces its schema migrations at INFO; the CLI prints only what the user asked for.
    # (MLflow sets its loggers' level from MLFLOW_LOGGING_LEVEL when it is imported.)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow prints "View run ... at: URL" to stdout whenever a run on a server ends; the CLI's
    # output is its own (and workers end many runs).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's HTTP client retries 7 times with doubling back-off (minutes); with retry() around
    # each call on top, a worker rides out a tracking-server restart of about a minute and gives
    # up on a dead server in a few minutes rather than an hour. (Spawned workers inherit these.)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # sample/registry downloads: no bars
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from .progress import configure

    configure(quiet=getattr(args, "quiet", False))  # steps and progress as lines on stderr (study.progress)
    try:
        return COMMANDS[args.command](args) or 0
    except GanStudyError as exc:
        from .tracking import mask_url

        print(f"gan-study: error: {mask_url(' '.join(str(exc).split()))}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print("gan-study: interrupted; the running trial is marked failed and will be retried on the next run", file=sys.stderr)
        return EXIT_INTERRUPTED


def _stores(args: argparse.Namespace):
    from .tracking import Stores

    return Stores.resolve(args.workdir, args.storage, args.tracking_uri)


def cmd_run(args: argparse.Namespace) -> int:
    from .names import check_name
    from .spec import load_spec

    if args.study_name is not None:  # before anything: the name becomes a path and a store key
        check_name(args.study_name, "--study-name")
    if args.data_dir:
        os.environ["GAN_STUDY_DATA"] = args.data_dir
    spec = load_spec(args.spec)
    if args.factors is not None:
        spec = spec.with_factors([f.strip() for f in args.factors.split(",") if f.strip()])
    if args.steps is not None:
        spec = spec.with_budget_steps(args.steps)
    if args.trials is not None:
        spec = spec.with_trials(args.trials)
    from .claims import claim_warnings

    for warning in claim_warnings(spec):  # before training: claims this schedule cannot judge
        print(f"gan-study: warning: {warning}", file=sys.stderr)
    import gan
    from gan.config import resolve_device

    from .preflight import IDX_FILES, check_cache, check_idx_files, check_limits
    from .progress import step
    from .summary import summary_lines

    device = resolve_device(args.device)  # --device cuda without CUDA: fail now
    stores = _stores(args)
    stores.check()  # unreachable servers, an unusable work folder: fail before anything is written
    # The refusals come before any progress line (bad input stays one line of error).
    check_limits(spec, args.jobs, device)
    check_cache()
    check_idx_files(args.data_dir)
    raw = gan.resolve_data_dir(args.data_dir) / "MNIST" / "raw"
    whole = all((raw / name).is_file() for name in IDX_FILES)  # else a download: torchvision prints its own lines
    with step(f"checking the MNIST files in {raw}") if whole else contextlib.nullcontext():
        for train in (True, False):  # a missing or corrupt dataset fails before any store is touched
            gan.load_mnist(args.data_dir, train=train, subset=1)
    from .runner import RunOptions, run_study

    opts = RunOptions(
        stores=stores,
        study_name=args.study_name or spec.name,
        device=args.device,
        jobs=args.jobs,
        quiet=args.quiet,
        data_dir=args.data_dir,
        target_trials=spec.trials,
    )
    result = run_study(spec, opts)
    for line in summary_lines(result, spec, opts.stores, time.monotonic() - STARTED, args.data_dir):
        print(line, flush=True)
    if result.ran and result.ran_failed == result.ran:  # nothing this invocation ran came to a result
        from .tracking import mask_url

        why = mask_url(" ".join((result.last_failure or "no reason recorded").split()))
        print(f"gan-study: error: all {result.ran} trial(s) this run started failed (last: {why}); "
              f"fix the cause and run the same command again to retry them", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_specs(args: argparse.Namespace) -> int:
    from .spec import builtin_specs, load_spec

    for name, path in builtin_specs().items():
        spec = load_spec(path)
        budget = f"{spec.budget:g} {spec.budget_unit}"
        kind = f"sweep of {len(spec.sweep)} points" if spec.sweep else f"{spec.sampler}, {spec.trials} trials"
        print(f"{name:8s} {kind}, {budget}, repeats {spec.repeats}: {' '.join(spec.description.split())}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .names import check_name

    check_name(args.study)  # before the imports (torch, MLflow: seconds)
    from .status import open_existing_study, status_table, trial_rows

    stores = _stores(args)
    study = open_existing_study(stores, args.study)
    rows = trial_rows(study, stores)
    if args.json or args.csv:
        from .studies import status_csv, status_document

        print(json.dumps(status_document(study, rows), indent=2, default=str) if args.json else status_csv(study, rows), end="\n" if args.json else "")
        return 0
    print(f"study {args.study}: {len(rows)} trials")
    print(status_table(rows))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    stores = _stores(args)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", stores.tracking_uri, "--host", args.host, "--port", str(args.port)]
    if stores.artifact_root:
        command += ["--default-artifact-root", stores.artifact_root]
    from .tracking import mask_url

    print(f"MLflow UI on http://{args.host}:{args.port} (store {mask_url(stores.tracking_uri)}); Ctrl-C stops it")
    # MLflow 3.17's UI opens an experiment on its GenAI overview even when the experiment is
    # tagged for model training (seen in benchmarks/ui_screenshot.py): link the runs page itself.
    db = stores.tracking_uri.removeprefix("sqlite:///")
    if not stores.tracking_uri.startswith("sqlite:///") or Path(db).exists():
        with contextlib.suppress(Exception):  # links are a convenience; the UI starts regardless
            for e in stores.mlflow().search_experiments():
                if e.name != "Default":
                    print(f"  {e.name}: http://{args.host}:{args.port}/#/experiments/{e.experiment_id}/runs")
    print("Optuna dashboard for the same studies: gan-study dashboard STUDY (pip install 'gan-study[dashboard]')", flush=True)
    try:
        # No GenAI job-runner processes (huey consumers, a /dev/shm folder) for a UI on a study.
        return subprocess.call(command, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ})
    except KeyboardInterrupt:
        return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from .studies import dumps, studies_rows, studies_table

    rows = studies_rows(_stores(args))
    print(dumps(rows) if args.json else studies_table(rows))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import serve_dashboard
    from .names import check_name

    for name in args.studies:
        check_name(name)
    try:
        serve_dashboard(_stores(args), args.studies, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .sample import sample_command

    print(sample_command(_stores(args), args.study, trial=args.trial, n=args.n, seed=args.seed, out=args.out))
    return 0


def cmd_evaluator(args: argparse.Namespace) -> int:
    from .evaluator_card import evaluator_command

    print(evaluator_command(args.data_dir, args.retrain))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from gan.errors import GanStudyError

    from .names import check_name, inside, refuse_links

    for name in args.study:
        check_name(name)
    if len(set(args.study)) != len(args.study):
        raise GanStudyError(f"report names a study twice ({' '.join(args.study)}): name each study once")
    if args.data_dir:
        os.environ["GAN_STUDY_DATA"] = args.data_dir
    stores = _stores(args)
    # --out is the user's choice, but no link planted in the work folder may redirect the report.
    default = args.study[0] if len(args.study) == 1 else "compare-" + "-".join(args.study)[:150]
    out = Path(args.out) if args.out else stores.workdir / "reports" / default
    refuse_links(stores.workdir, out, "the report folder")
    if not args.out:
        inside(stores.workdir / "reports", out, "the report folder")
    from .status import open_existing_study

    studies = [open_existing_study(stores, name) for name in args.study]
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if len(studies) > 1:
        from reports.compare import write_comparison

        written = write_comparison(studies, stores, out, formats=formats)
    else:
        from reports import write_report

        written = write_report(studies[0], stores, out, formats=formats)
    figures = [p for p in written if p.suffix == ".png"]
    for path in written if args.verbose else [p for p in written if p.suffix != ".png"]:
        print(path)
    if figures and not args.verbose:  # the folder, not one line per figure
        print(figures[0].parent)
    return 0


COMMANDS = {
    "run": cmd_run,
    "worker": cmd_run,
    "specs": cmd_specs,
    "status": cmd_status,
    "studies": cmd_studies,
    "ui": cmd_ui,
    "dashboard": cmd_dashboard,
    "report": cmd_report,
    "sample": cmd_sample,
    "evaluator": cmd_evaluator,
}

if __name__ == "__main__":
    sys.exit(main())
