"""The studies the report tests share, made once per session with the real CLI, and helpers
that read reports back.

``sweep``: a one-factor sweep of 2 factors (3 points) with 2 repeats, 30 steps of batch 32 each
(evaluations at steps 0 and 15, progress snapshots at 0, 8, 15 and 30) and 3 claims to judge.
``mixed``: a 2-point grid over ``loss_bound`` where the tiny bound diverges at once (PRUNED,
reason "diverged: ...") and the other completes, plus a FAIL trial told through Optuna's API
on the same storage (the state a crashed worker leaves).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.common import gan_study, journal_study

__all__ = ["PNG", "image_links", "make_report", "pdf_images", "pdf_text", "section", "table_rows"]


EVAL = {"every": 15, "samples": 500, "final_samples": 1000}
SWEEP = {
    "name": "sweep",
    "objective": "fd",
    "repeats": 2,
    "budget": {"steps": 30},
    "evaluation": EVAL,
    "fixed": {"batch_size": 32},
    "sweep": {
        "factors": {
            "lr": [{"label": "1e-4", "lr_g": 1.0e-4, "lr_d": 1.0e-4}, {"label": "2e-4", "lr_g": 2.0e-4, "lr_d": 2.0e-4}],
            "optimizer": ["adam", "rmsprop"],
        }
    },
    "claims": [
        {"id": "rmsprop-lower-fd", "source": "test §1", "claim": "RMSprop reaches a lower FD than Adam.", "factor": "optimizer",
         "compare": ["rmsprop", "adam"], "quantity": "fd", "relation": "<"},
        # FD's scale is that of the evaluator's features (pure noise scores below 100): this claim
        # is contradicted whatever the runs learn, as the report must say.
        {"id": "fd-above-million", "source": "test §2", "claim": "FD ends above a million.", "factor": "lr",
         "compare": ["1e-4"], "quantity": "fd", "relation": ">", "value": 1.0e6},
        {"id": "low-lr-best", "source": "test §3", "claim": "The low learning rate is the best.", "factor": "lr",
         "compare": ["1e-4"], "quantity": "fd", "relation": "lowest"},
    ],
}
MIXED = {
    "name": "mixed",
    "objective": "fd",
    "sampler": {"name": "grid", "seed": 0},
    "budget": {"steps": 30},
    "evaluation": EVAL,
    "fixed": {"batch_size": 32},
    "space": {"loss_bound": [0.001, 1000.0]},
}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory, evaluator) -> Path:
    """Stores holding the 'sweep' and 'mixed' studies (both run at once: 'mixed' trains one run).

    ``evaluator`` fills a cold evaluator cache first, so the two processes do not both train it.
    """
    from optuna.trial import TrialState

    root = tmp_path_factory.mktemp("report-studies")
    work = root / "runs"
    procs = []
    for spec in (SWEEP, MIXED):
        path = root / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        command = [sys.executable, "-m", "study.cli", "run", str(path), "--workdir", str(work), "--quiet"]
        # Started together on a new work folder: the two processes also prove that setting up one
        # MLflow SQLite store at once works (they take turns on its schema migration).
        procs.append(subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()))
    for proc in procs:
        _, err = proc.communicate(timeout=1800)  # against a hang only: a busy machine is slow
        assert proc.returncode == 0, err[-3000:]
    mixed = journal_study(work, "mixed")
    mixed.tell(mixed.ask(), state=TrialState.FAIL)
    return work


def make_report(workdir: Path, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = gan_study("report", name, "--workdir", str(workdir), "--out", str(out), *extra, cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def sweep_report(workdir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep-report") / "report"
    result = make_report(workdir, "sweep", out)
    (out.parent / "stdout.txt").write_text(result.stdout)
    return out


@pytest.fixture(scope="session")
def mixed_report(workdir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mixed-report") / "report"
    make_report(workdir, "mixed", out)
    return out


# -- helpers --------------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n"


def section(md: str, title: str) -> str:
    """The text of the '## <title>' section, up to the next '## ' heading."""
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 3)
    return md[start : end if end > 0 else len(md)]


def table_rows(text: str) -> list[list[str]]:
    """Rows of the first pipe table in ``text`` (header and separator excluded)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    header = rows[0]
    assert set("".join(rows[1])) <= set("|-: "), rows[1]
    body = []
    for row in rows[2:]:
        if row == header:  # the next table
            break
        body.append(row)
    return [header, *body]


def image_links(md: str) -> list[str]:
    import re

    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def pdf_images(reader) -> int:
    count = 0
    for page in reader.pages:
        xobjects = page.get("/Resources", {}).get("/XObject", {})
        count += sum(1 for x in xobjects.values() if x.get_object().get("/Subtype") == "/Image")
    return count


def pdf_text(reader) -> str:
    return "\n".join(page.extract_text() or "" for page in reader.pages)
