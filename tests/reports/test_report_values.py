"""Every setting shown, not only the best trial (#14): what each trial stores, and the per-value
figures and tables of the report, in the markdown and in the PDF."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from study.storage.record import Tag
from tests.common import mlflow_runs
from tests.reports.conftest import PNG, image_links, pdf_images, pdf_text, section, table_rows

pytestmark = pytest.mark.slow  # the session's real studies and reports

FACTORS = ("lr", "optimizer")
PER_FACTOR = ("factor_{}_evals.png", "values_{}_samples.png", "values_{}_progress.png", "values_{}_classes.png")


@pytest.fixture(scope="module")
def curve_runs(workdir):
    client, runs = mlflow_runs(workdir, "sweep")
    return client, [r for r in runs if r.data.tags.get(Tag.CURVES) == "true"]


def _pictures(client, run_id: str, tmp: Path) -> dict[str, np.ndarray]:
    local = client.download_artifacts(run_id, "final/pictures.npz", str(tmp))
    with np.load(local) as npz:
        return {k: npz[k] for k in npz.files}


def test_each_run_stores_its_pictures_and_scores_from_step_0(curve_runs, tmp_path):
    client, runs = curve_runs
    assert len(runs) == 6  # 3 points x 2 repeats
    step0 = {}
    for run in runs:
        files = {a.path for d in ("final", "samples") for a in client.list_artifacts(run.info.run_id, d)}
        assert {"final/pictures.npz", "final/latent_arithmetic.png", "final/interpolation.png", "samples/step_000000.png"} <= files
        pics = _pictures(client, run.info.run_id, tmp_path / run.info.run_id)
        assert pics["samples_20"].shape == (20, 28, 28) and pics["samples_20"].dtype == np.uint8
        assert pics["interpolation"].shape == (50, 28, 28) and pics["arithmetic"].shape == (16, 28, 28)
        for kind, n in (("samples_20", 20), ("interpolation", 50), ("arithmetic", 16)):
            assert len(pics[f"{kind}_pred"]) == n and set(pics[f"{kind}_pred"].tolist()) <= set(range(10))
        assert pics["progress_steps"].tolist() == [0, 8, 15, 30]  # 0, 25 %, 50 %, 100 % of 30 steps
        assert pics["progress"].shape == (4, 10, 28, 28)
        # the FD at every evaluation, the untrained models at step 0 included, and the final one
        assert [m.step for m in client.get_metric_history(run.info.run_id, "fd")] == [0, 15, 30]
        assert client.get_metric_history(run.info.run_id, "d_acc_real")
        seed = run.data.params["seed"]
        step0.setdefault(seed, []).append(pics["progress"][0])
    # the same noise everywhere: untrained generators of one seed draw the same step-0 strip
    for strips in step0.values():
        assert len(strips) == 3 and all(np.array_equal(strips[0], s) for s in strips[1:])


def test_every_factor_shows_every_value(sweep_report):
    md = (sweep_report / "report.md").read_text()
    per_factor = section(md, "3. Per-factor comparison")
    links = set(image_links(per_factor))
    for factor in FACTORS:
        for pattern in PER_FACTOR:
            link = f"figures/{pattern.format(factor)}"
            assert link in links, link
            path = sweep_report / link
            assert path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG
        part = per_factor[per_factor.index(f"### {factor}") :]
        header, *rows = table_rows(part[part.index("| value | 0 |") :])
        assert header == ["value", *map(str, range(10)), "kl_uniform", "modes"]
        assert len(rows) == 2 and sum("baseline" in r[0] for r in rows) == 1
        for row in rows:
            assert abs(sum(float(v) for v in row[1:11]) - 100) < 0.5
            assert float(row[11].split("±")[0]) >= 0
    # one strip per value: two values, two rows of 28-pixel digits
    from PIL import Image

    with Image.open(sweep_report / "figures" / "values_lr_samples.png") as im:
        assert im.size[0] > 4 * im.size[1]


def test_best_trial_has_arithmetic_interpolation_and_real_digits(sweep_report):
    best = section((sweep_report / "report.md").read_text(), "4. Best trial")
    for name in ("best_real_vs_generated.png", "best_interpolation.png", "best_arithmetic.png"):
        assert f"figures/{name}" in image_links(best)
    assert "x1 − x2" in best and "predicted digit under each" in best


def test_summary_has_the_evaluator_card(sweep_report):
    summary = section((sweep_report / "report.md").read_text(), "1. Summary")
    assert "| evaluator | CNN " in summary
    assert "test accuracy" in summary and "test loss" in summary and "trained in" in summary
    assert "| evaluator weights | sha256 " in summary
    assert "different evaluators" not in summary


def test_a_study_scored_by_two_evaluators_is_flagged():
    from reports.sections_summary import evaluator_warning

    trials = [SimpleNamespace(number=i, evaluator={"weights_hash": h}) for i, h in enumerate(["aaa", "aaa", "bbb"])]
    trials.append(SimpleNamespace(number=3, evaluator=None))
    warning = evaluator_warning(SimpleNamespace(trials=trials))
    assert "2 different evaluators" in warning and "trials 0, 1" in warning and "trials 2" in warning
    assert evaluator_warning(SimpleNamespace(trials=trials[:2])) == ""


def test_pdf_holds_every_per_value_figure(sweep_report):
    import pypdf

    md = (sweep_report / "report.md").read_text()
    reader = pypdf.PdfReader(str(sweep_report / "report.pdf"))
    links = set(image_links(md))
    assert len(links) >= 2 * len(PER_FACTOR) + 8
    assert pdf_images(reader) >= len(links)
    text = pdf_text(reader)
    assert "samples across training" in text and "share of each predicted digit" in text
    assert "kl_uniform" in text


def test_a_search_report_has_slices_the_top_two_and_modes_per_value(tmp_path):
    """A search study's own views, from Optuna trials alone (no MLflow runs)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from reports import write_report
    from study.storage.record import StudyAttrs, attrs
    from study.storage.tracking import Stores
    from tests.common import TINY

    stores = Stores.resolve(tmp_path / "runs")
    stores.workdir.mkdir()
    study = optuna.create_study(study_name="search", storage=stores.optuna_storage(heartbeat=False))
    spec = {**TINY, "name": "search", "trials": 6, "space": {**TINY["space"], "optimizer": ["adam", "rmsprop"]}}
    for key, value in ((StudyAttrs.SPEC, spec), (StudyAttrs.OBJECTIVES, ["fd"]), (StudyAttrs.REPEATS, 1)):
        study.set_user_attr(key, value)
    dists = {"lr_g": FloatDistribution(1e-4, 1e-3, log=True), "optimizer": CategoricalDistribution(["adam", "rmsprop"])}
    rng = np.random.default_rng(0)
    for i in range(6):
        counts = rng.multinomial(500, [0.1] * 10).tolist()
        metrics = {"fd": 40.0 - 3 * i, "modes": 10.0 - i % 3, "kl_uniform": 0.05 * (i + 1), "class_counts": counts}
        study.add_trial(optuna.trial.create_trial(
            params={"lr_g": float(10 ** rng.uniform(-4, -3)), "optimizer": ["adam", "rmsprop"][i % 2]}, distributions=dists,
            value=metrics["fd"], user_attrs=attrs(metrics=metrics, repeat_metrics=[metrics])))
    out = tmp_path / "out"
    write_report(study, stores, out)
    md = (out / "report.md").read_text()
    diagnostics = section(md, "5. Search diagnostics")
    links = image_links(diagnostics)
    assert "figures/slices.png" in links and "figures/top_two.png" in links
    for link in links:
        assert (out / link).read_bytes()[:8] == PNG
    header, *rows = table_rows(diagnostics[diagnostics.index("### Modes and class balance per value") :])
    assert header == ["parameter", "value", "runs", "fd", "modes", "kl_uniform"]
    assert {r[0] for r in rows} == {"lr_g", "optimizer"} and {r[1] for r in rows if r[0] == "optimizer"} == {"adam", "rmsprop"}
    # per-value class histograms come from the trials' class counts, no pictures needed
    assert "figures/values_optimizer_classes.png" in image_links(section(md, "3. Per-factor comparison"))


def test_the_claims_section_judges_every_claim_of_the_spec(sweep_report):
    import pypdf

    from reports.claims_csv import recompute
    from reports.verdicts import VERDICTS
    from tests.reports.conftest import SWEEP

    md = (sweep_report / "report.md").read_text()
    claims = section(md, "7. Claims")
    header, *rows = table_rows(claims[: claims.index("### Verdicts by budget")])
    assert header == ["id", "kind", "source", "claim", "test", "budget", "measured", "test used", "verdict", "Holm", "figure"]
    assert [r[0] for r in rows] == [c["id"] for c in SWEEP["claims"]]
    for row in rows:
        assert row[1] == "observed" and row[8] in VERDICTS and "(n=2)" in row[6]  # 2 repeats per level
        assert "epochs (30 steps): the largest budget run" in row[5]  # 30 steps of batch 32: 0.016 epochs
        link = row[10][row[10].index("](") + 2 : -1]
        assert (sweep_report / link).read_bytes().startswith(PNG)
    # every level runs seeds 0 and 1: the comparison is paired, with its interval, p, effect and MDD
    assert rows[0][7] == "paired t" and "rmsprop − adam = " in rows[0][6] and "p = " in rows[0][6] and "MDD" in rows[0][6]
    assert rows[1][8] == "contradicted", rows[1]  # FD far below a million for any runs, at any spread
    counts = {v: sum(r[8] == v for r in rows) for v in VERDICTS}
    assert f"Headline: of 3 observed claims, {', '.join(f'{n} {k}' for k, n in counts.items() if n)};" in claims
    # The verdicts by budget: step 15 and the end, in epochs; the figure; claims.csv recomputes them all.
    assert "### Verdicts by budget" in claims and "figures/claims_by_budget.png" in image_links(claims)
    by_budget = table_rows(claims[claims.index("### Verdicts by budget"):])
    assert by_budget[0] == ["id", "0.008", "0.016"] and all(r[2].endswith("*") for r in by_budget[1:])
    again = recompute(sweep_report / "claims.csv")
    assert {k[0] for k in again} == {r[0] for r in rows} and len(again) == 6
    for row in rows:
        assert again[(row[0], repr(0.016))][0] == row[8]
        assert again[(row[0], repr(0.016))][1] == row[9] or row[9] == ""
    text = pdf_text(pypdf.PdfReader(str(sweep_report / "report.pdf")))
    assert "7. Claims" in text and "rmsprop-lower-fd" in text
