"""The ``gan-study`` command line: run studies, list specs, show status, open the UI, report."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gan.errors import GanStudyError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
HTTP_VARS = (
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "retries of one call to an MLflow server (default here 4)"),
    ("MLFLOW_HTTP_REQUEST_TIMEOUT", "seconds per call to an MLflow server (default here 60)"),
)
ENV_VARS = {
    "run": STORE_VARS + DATA_VARS + HTTP_VARS,
    "worker": STORE_VARS + DATA_VARS + HTTP_VARS,
    "specs": (),
    "status": STORE_VARS + HTTP_VARS,
    "ui": STORE_VARS,
    "report": STORE_VARS + DATA_VARS + HTTP_VARS,
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
        p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $GAN_STUDY_DATA or ./data)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    add("specs", "list the built-in specs")

    p = add("status", "the trials of a study")
    p.add_argument("study", help="study name")
    _store_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON list of trial objects")

    p = add("ui", "serve the MLflow UI on the workdir's store", "serve the MLflow UI (127.0.0.1 unless --host)")
    _store_args(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)

    p = add("report", "write a markdown and PDF report of a study", "write report.md, report.pdf and figures/")
    p.add_argument("study", help="study name")
    _store_args(p)
    p.add_argument("--format", default="md,pdf", help="comma-separated: md, pdf (default: md,pdf)")
    p.add_argument("--out", help="output folder (default: <workdir>/reports/<study>/); refused where it passes through a symlink inside the work folder")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (for the evaluator's floors)")
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A scheduler's or `kill`'s SIGTERM stops a study as Ctrl-C does: the running trial is marked
    # failed in both stores now, instead of staying RUNNING until the next run reconciles it.
    signal.signal(signal.SIGTERM, _interrupt)
    import logging

    # MLflow announces its schema migrations at INFO; the CLI prints only what the user asked for.
    # (MLflow sets its loggers' level from MLFLOW_LOGGING_LEVEL when it is imported.)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args) or 0
    except GanStudyError as exc:
        from .tracking import mask_url

        print(f"gan-study: error: {mask_url(' '.join(str(exc).split()))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gan-study: interrupted; the running trial is marked failed and will be retried on the next run", file=sys.stderr)
        return EXIT_INTERRUPTED


def _stores(args: argparse.Namespace):
    from .tracking import Stores

    return Stores.resolve(args.workdir, args.storage, args.tracking_uri)


def cmd_run(args: argparse.Namespace) -> int:
    from .names import check_name
    from .spec import SpecError, load_spec

    if args.study_name is not None:  # before anything: the name becomes a path and a store key
        check_name(args.study_name, "--study-name")
    if args.data_dir:
        os.environ["GAN_STUDY_DATA"] = args.data_dir
    spec = load_spec(args.spec)
    if args.steps is not None:
        spec = spec.with_budget_steps(args.steps)
    if args.trials is not None:
        spec = spec.with_trials(args.trials)
    if args.jobs < 1:
        raise SpecError(f"--jobs must be >= 1, got {args.jobs}")
    import gan
    from gan.config import resolve_device

    resolve_device(args.device)  # --device cuda without CUDA: fail now
    stores = _stores(args)
    stores.check()  # unreachable servers, an unusable work folder: fail before anything is written
    _check_idx_files(args.data_dir)
    for train in (True, False):  # a missing or corrupt dataset fails before any store is touched
        gan.load_mnist(args.data_dir, train=train, subset=1)
    _check_cache()
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
    summary = f"study {result.study_name}: {result.complete} complete, {result.pruned} pruned, {result.failed} failed in {result.seconds:.0f} s"
    print(summary)
    if result.best:
        metrics = result.best["metrics"]
        shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in ("fd", "modes", "kl_uniform", "is", "precision", "recall") if k in metrics)
        print(f"best trial {result.best['number']}: {shown}")
    print(f"stores: {opts.stores.workdir if opts.stores.embedded else '(remote)'}; see 'gan-study status {result.study_name}'")
    return 0


IDX_FILES = {  # name: (magic, item shape)
    "train-images-idx3-ubyte": (0x0803, (28, 28)),
    "train-labels-idx1-ubyte": (0x0801, ()),
    "t10k-images-idx3-ubyte": (0x0803, (28, 28)),
    "t10k-labels-idx1-ubyte": (0x0801, ()),
}


def _check_idx_files(data_dir: str | None) -> None:
    """MNIST's IDX files that are there must be whole: the header's magic, and the size it implies.

    (Missing files are left to the loader, which downloads them where it can.)
    """
    from gan.data import resolve_data_dir
    from gan.errors import DataError

    raw = resolve_data_dir(data_dir) / "MNIST" / "raw"
    for name, (magic, shape) in IDX_FILES.items():
        path = raw / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header = handle.read(4 + 4 * (1 + len(shape)))
        fix = f"replace it with the official IDX file (or delete {raw} to download MNIST again)"
        if len(header) < 4 or int.from_bytes(header[:4], "big") != magic:
            raise DataError(f"MNIST file {path} is not an IDX file of its kind (wrong magic number {header[:4].hex() or 'none'}, expected {magic:08x}): {fix}")
        dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(1 + len(shape))]
        expected = len(header) + (dims[0] if len(dims) == 1 + len(shape) else 0) * (28 * 28 if shape else 1)
        if len(header) < 4 + 4 * (1 + len(shape)) or tuple(dims[1:]) != shape or size != expected:
            raise DataError(f"MNIST file {path} is truncated or corrupt ({size} bytes, its header implies {expected}): {fix}")


def _check_cache() -> None:
    """Without a cached evaluator one is trained (minutes): refuse first if it could not be saved."""
    from gan.evaluator import CACHE_ENV, CACHE_FILE, resolve_cache_dir

    from .tracking import StoreError, writable_problem

    from .names import inside

    folder = resolve_cache_dir()
    inside(folder, folder / CACHE_FILE, "the evaluator cache file")  # a link planted there must not redirect the write
    if (folder / CACHE_FILE).is_file():
        return  # read when the study starts; a corrupt or stale file is rebuilt, with a warning
    problem = writable_problem(folder)
    if problem:
        raise StoreError(f"cannot write the evaluator cache in {folder} ({problem}): set {CACHE_ENV} to a writable folder")


def cmd_specs(args: argparse.Namespace) -> int:
    from .spec import builtin_specs, load_spec

    for name, path in builtin_specs().items():
        spec = load_spec(path)
        budget = f"{spec.budget:g} {spec.budget_unit}"
        kind = f"sweep of {len(spec.sweep)} points" if spec.sweep else f"{spec.sampler}, {spec.trials} trials"
        print(f"{name:8s} {kind}, {budget}, repeats {spec.repeats}: {' '.join(spec.description.split())}")
    return 0


def open_existing_study(stores, name: str):
    """The named study; a one-line error listing the studies that exist otherwise."""
    import optuna

    from .tracking import StoreError, mask_url

    if stores.embedded and not Path(stores.storage_url).exists():
        raise StoreError(f"no study {name!r}: there are no studies in {stores.workdir} (run one with 'gan-study run')")
    if not stores.embedded:
        from .tracking import check_database

        check_database(stores.storage_url, "Optuna storage", "--storage")
    storage = stores.optuna_storage(heartbeat=False, create=False)
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as exc:
        raise StoreError(f"cannot read the Optuna storage {mask_url(stores.storage_url)}: {str(exc).splitlines()[0]}") from exc
    if name not in names:
        existing = ", ".join(sorted(names)) or "none"
        raise StoreError(f"no study {name!r} in {mask_url(stores.storage_url)}; studies: {existing}")
    return optuna.load_study(study_name=name, storage=storage)


def trial_rows(study, stores) -> list[dict[str, Any]]:
    """One object per trial: what status prints and scripts read."""
    client = stores.mlflow()
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_id = t.user_attrs.get("mlflow_run_id")
        run_status = None
        if run_id:
            try:
                run_status = client.get_run(run_id).info.status
            except Exception:
                run_status = "MISSING"
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "values": t.values,
                "metrics": t.user_attrs.get("metrics", {}),
                "reason": t.user_attrs.get("reason") or ("worker died (no heartbeat)" if t.state.name == "FAIL" else None),
                "duration_s": duration,
                "mlflow_run_id": run_id,
                "mlflow_status": run_status,
            }
        )
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    from .names import check_name

    check_name(args.study)
    stores = _stores(args)
    study = open_existing_study(stores, args.study)
    rows = trial_rows(study, stores)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    import pandas as pd

    table = []
    for r in rows:
        m = r["metrics"]
        table.append(
            {
                "#": r["number"],
                "state": r["state"],
                "value": ", ".join(f"{v:.4g}" for v in r["values"]) if r["values"] else "",
                **{k: (f"{m[k]:.4g}" if k in m else "") for k in ("fd", "modes", "kl_uniform", "is", "precision", "recall")},
                "secs": f"{r['duration_s']:.0f}" if r["duration_s"] is not None else "",
                "mlflow run": f"{(r['mlflow_run_id'] or '')[:8]} {r['mlflow_status'] or ''}".strip(),
                "params": ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items()),
                "reason": (r["reason"] or "")[:60],
            }
        )
    with pd.option_context("display.max_colwidth", 80, "display.width", 250):
        print(f"study {args.study}: {len(rows)} trials")
        print(pd.DataFrame(table).to_string(index=False) if table else "(no trials yet)")
    return 0


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    stores = _stores(args)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", stores.tracking_uri, "--host", args.host, "--port", str(args.port)]
    if stores.artifact_root:
        command += ["--default-artifact-root", stores.artifact_root]
    from .tracking import mask_url

    print(f"MLflow UI on http://{args.host}:{args.port} (store {mask_url(stores.tracking_uri)}); Ctrl-C stops it")
    print(f"Optuna dashboard for the same studies: optuna-dashboard {mask_url(stores.storage_url)}", flush=True)
    try:
        # No GenAI job-runner processes (huey consumers, a /dev/shm folder) for a UI on a study.
        return subprocess.call(command, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ})
    except KeyboardInterrupt:
        return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .names import check_name, inside, refuse_links

    check_name(args.study)
    if args.data_dir:
        os.environ["GAN_STUDY_DATA"] = args.data_dir
    stores = _stores(args)
    # --out is the user's choice, but no link planted in the work folder may redirect the report.
    out = Path(args.out) if args.out else stores.workdir / "reports" / args.study
    refuse_links(stores.workdir, out, "the report folder")
    if not args.out:
        inside(stores.workdir / "reports", out, "the report folder")
    study = open_existing_study(stores, args.study)
    from reports import write_report
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    written = write_report(study, stores, out, formats=formats)
    for path in written:
        print(path)
    return 0


COMMANDS = {
    "run": cmd_run,
    "worker": cmd_run,
    "specs": cmd_specs,
    "status": cmd_status,
    "ui": cmd_ui,
    "report": cmd_report,
}

if __name__ == "__main__":
    sys.exit(main())
