"""A screenshot of the MLflow UI on a study's experiment, as a user first sees it.

    python -m benchmarks.ui_screenshot STUDY --workdir gan-study-runs --out ui.png

Starts ``gan-study ui`` on a free port of 127.0.0.1, waits for its health check, and has
headless Chromium (Debian's ``chromium`` package) render the experiment's page. It shows
whether the experiment opens on its training runs (``mlflow.experimentKind``) with readable
run names, rather than on MLflow's GenAI overview.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1400,900",
    "--virtual-time-budget=20000",  # let the single-page app load its runs before the picture is taken
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the MLflow UI did not answer at {url} within {seconds:.0f} s")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--workdir", default="gan-study-runs")
    parser.add_argument("--out", default="mlflow-ui.png")
    parser.add_argument("--path", default="", help="after the experiment's URL, e.g. /runs")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{Path(args.workdir).resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(args.study)
    if experiment is None:
        raise SystemExit(f"no experiment {args.study!r} in {args.workdir}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen([sys.executable, "-m", "study.cli", "ui", "--workdir", args.workdir, "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(url, 120)
        with tempfile.TemporaryDirectory() as profile:
            page = f"{url}/#/experiments/{experiment.experiment_id}{args.path}"
            subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={Path(args.out).resolve()}", page],
                           check=True, timeout=180, capture_output=True)
        print(f"{args.out}: {page} (experimentKind={experiment.tags.get('mlflow.experimentKind')})")
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)


if __name__ == "__main__":
    main()
