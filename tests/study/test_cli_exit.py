"""How the ``gan-study`` process ends (study.cli.exit_now): without CPython's teardown, with
everything an exit does that anyone can see."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.common import REPO

PROGRAM = """
import atexit, sys, threading, time
import study.cli
def late():
    time.sleep(0.5)
    print("thread done", flush=True)
threading.Thread(target=late).start()              # non-daemon: the exit waits for it
atexit.register(lambda: print("atexit ran"))       # printed unflushed: the exit flushes it
sys.stderr.write("unflushed error line")
study.cli.exit_now(3)
"""


def test_exit_waits_for_threads_runs_atexit_handlers_flushes_and_keeps_the_code():
    out = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    assert out.stdout.splitlines() == ["thread done", "atexit ran"]
    assert out.stderr == "unflushed error line"


def test_the_installed_console_script_runs_a_command_to_its_exit_code():
    script = Path(sys.executable).with_name("gan-study")  # pip's wrapper around study.cli:run
    out = subprocess.run([str(script), "specs"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["full", "quick", "seeds"]
