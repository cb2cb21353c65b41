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
from typing import NoReturn

from .commands.parser import build_parser

EXIT_FAILED = 1  # a runtime failure: every trial this invocation ran failed
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STARTED = time.monotonic()  # the command's wall time counts from here (the summary of run)


def run() -> NoReturn:
    """The ``gan-study`` console script (and ``python -m study.cli``): :func:`main`, then
    :func:`study.storage.compat.exit_now`."""
    from .storage.compat import exit_now

    try:
        code = main()
    except SystemExit as stop:  # argparse's --help, --version and usage errors
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
        code = 1 if stop.code is not None and not isinstance(stop.code, int) else stop.code or 0
    exit_now(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "worker"):  # before torch loads: `--jobs 100000` is refused in milliseconds
        from .spec.limits import jobs_problem

        problem = jobs_problem(args.jobs)
        if problem:
            print(f"gan-study: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    # Only now: importing gan loads torch (seconds), which --help and usage errors never need.
    from gan.errors import GanStudyError

    from .trials.interrupt import install

    # A scheduler's or `kill`'s SIGTERM stops a study as Ctrl-C does: the running trial is marked
    # failed in both stores now, instead of staying RUNNING until the next run reconciles it.
    # Neither cuts a store write in half (study.trials.interrupt).
    install(signal.SIGINT, signal.SIGTERM)
    # A file-size limit (ulimit -f) fails the write with EFBIG, which the trial records, instead
    # of killing the process unannounced (tests/study/storage/test_faults.py).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # `kill -USR1 PID` prints every thread's stack to stderr: where a run that seems stuck is.
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)
    from .storage.tracking import mlflow_settings

    mlflow_settings()
    from .trials.progress import configure

    configure(quiet=getattr(args, "quiet", False))  # steps and progress as lines on stderr (study.trials.progress)
    try:
        return COMMANDS[args.command](args) or 0
    except GanStudyError as exc:
        from .storage.errors import mask_url

        print(f"gan-study: error: {mask_url(' '.join(str(exc).split()))}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print("gan-study: interrupted; the running trial is marked failed and will be retried on the next run", file=sys.stderr)
        return EXIT_INTERRUPTED


def _stores(args: argparse.Namespace):
    from .storage.tracking import Stores

    return Stores.resolve(args.workdir, args.storage, args.tracking_uri)


def cmd_run(args: argparse.Namespace) -> int:
    from .storage.names import check_name
    from .spec.spec import load_spec

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
    from .spec.claims import claim_warnings

    for warning in claim_warnings(spec):  # before training: claims this schedule cannot judge
        print(f"gan-study: warning: {warning}", file=sys.stderr)
    import gan
    from gan.config import resolve_device

    from .trials.preflight import IDX_FILES, check_cache, check_idx_files, check_limits
    from .trials.progress import step
    from .commands.summary import summary_lines

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
    from .trials.runner import RunOptions, run_study

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
        from .storage.errors import mask_url

        why = mask_url(" ".join((result.last_failure or "no reason recorded").split()))
        print(f"gan-study: error: all {result.ran} trial(s) this run started failed (last: {why}); "
              f"fix the cause and run the same command again to retry them", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_specs(args: argparse.Namespace) -> int:
    from .spec.spec import builtin_specs, load_spec

    for name, path in builtin_specs().items():
        spec = load_spec(path)
        budget = f"{spec.budget:g} {spec.budget_unit}"
        kind = f"sweep of {len(spec.sweep)} points" if spec.sweep else f"{spec.sampler}, {spec.trials} trials"
        print(f"{name:8s} {kind}, {budget}, repeats {spec.repeats}: {' '.join(spec.description.split())}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .storage.names import check_name

    check_name(args.study)  # before the imports (torch, MLflow: seconds)
    from .commands.status import open_existing_study, status_table, trial_rows

    stores = _stores(args)
    study = open_existing_study(stores, args.study)
    rows = trial_rows(study, stores)
    if args.json or args.csv:
        from .commands.studies import status_csv, status_document

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
    from .storage.errors import mask_url

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
    from .commands.studies import dumps, studies_rows, studies_table

    rows = studies_rows(_stores(args))
    print(dumps(rows) if args.json else studies_table(rows))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .commands.dashboard import serve_dashboard
    from .storage.names import check_name

    for name in args.studies:
        check_name(name)
    try:
        serve_dashboard(_stores(args), args.studies, args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .commands.sample import sample_command

    print(sample_command(_stores(args), args.study, trial=args.trial, n=args.n, seed=args.seed, out=args.out))
    return 0


def cmd_evaluator(args: argparse.Namespace) -> int:
    from .commands.evaluator_card import evaluator_command

    print(evaluator_command(args.data_dir, args.retrain))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from gan.errors import GanStudyError

    from .storage.names import check_name, inside, refuse_links

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
    from .commands.status import open_existing_study

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
    run()
