"""``write_report``: a study's Optuna trials and MLflow runs -> report.md, report.pdf, figures/."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import optuna

from . import analysis as an
from . import figures as fg
from .sections_claims import claims_blocks
from .sections_search import search_blocks
from .sections_summary import summary
from .sections_values import value_blocks
from gan import metrics as gm

from .data import ReportError, StudyData, finite, load
from .doc import Block, Bullets, Figure, Heading, Table, Text, to_markdown, to_pdf
from .stats import fmt, fmt_estimate

log = logging.getLogger("gan_study.reports")
FORMATS = ("md", "pdf")


def write_report(study: optuna.Study, stores, out: Path, formats: list[str] | tuple[str, ...] = ("md", "pdf")) -> list[Path]:
    """Write ``report.md`` and/or ``report.pdf`` with ``figures/*.png`` into ``out``.

    Returns the written files: the reports first, then the figures.
    """
    formats = [f.lower() for f in formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ReportError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {','.join(formats) or 'nothing'}")
    out = Path(out)
    figures = out / "figures"
    for part in (figures, out / "report.md.tmp", out / "report.pdf.tmp", out / "claims.csv.tmp"):  # written through, never followed
        if part.is_symlink():
            raise ReportError(f"{part} is a symlink (to {os.readlink(part)}): remove it; the report writes only real files in {out}")
    try:
        figures.mkdir(parents=True, exist_ok=True)
        for old in figures.glob("*.png"):  # figures of an earlier report of this folder
            old.unlink()
        (out / "claims.csv").unlink(missing_ok=True)  # written again where the spec has claims
    except OSError as exc:
        raise ReportError(f"cannot write the report to {out} ({exc.strerror or exc}): choose another --out") from exc
    from study.trials.progress import step  # a line per step that takes a while, when the CLI shows them

    started = time.perf_counter()
    with step(f"reading the trials and MLflow runs of {study.study_name}"):
        data = load(study, stores, figures)
    with step("drawing the figures"):
        blocks = build(data, figures)
    written: list[Path] = []
    title = f"gan-study report: {data.name}"
    if "md" in formats:
        path = out / "report.md"
        _atomic_write(path, to_markdown(blocks, out).encode())
        written.append(path)
    if "pdf" in formats:
        path = out / "report.pdf"
        tmp = path.with_suffix(".pdf.tmp")
        with step("writing the PDF"):
            to_pdf(blocks, tmp, title)
        tmp.replace(path)
        written.append(path)
    if (out / "claims.csv").is_file():
        written.append(out / "claims.csv")
    log.info("report of %s written in %.1f s", data.name, time.perf_counter() - started)
    return written + sorted(figures.glob("*.png"))


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)


# -- the document ---------------------------------------------------------------------------------
def build(data: StudyData, figures: Path) -> list[Block]:
    blocks: list[Block] = [Heading(f"Study report: {data.name}", 1)]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    running = data.by_state("RUNNING")
    intro = f"Generated {stamp} from the Optuna study {data.name!r} and its MLflow experiment."
    if running:
        intro += f" The study is still running ({len(running)} trial{'s' * (len(running) != 1)} in progress): this is a snapshot."
    blocks.append(Text(intro))
    notes = [n for n in (data.mlflow_note, data.floors_note if not data.floors else "") if n]
    if notes:
        blocks.append(Bullets(notes))
    factor_list = an.factors(data)
    blocks += summary(data)
    blocks += leaderboard(data)
    blocks += per_factor(data, factor_list, figures)
    blocks += best_trial(data, figures)
    blocks += diagnostics(data, figures)
    blocks += findings(data, factor_list)
    blocks += claims_blocks(data, factor_list, figures)
    return blocks


def leaderboard(data: StudyData) -> list[Block]:
    columns, rows, numeric, emphasis = an.leaderboard(data)
    metric, direction = data.primary
    caption = (
        f"One row per trial: complete trials ranked by {metric} ({direction}), then running, pruned and failed ones. "
        "train_seconds is the training time of each run (seconds, evaluations excluded); n is the number of repeats (seeds) behind each value."
    )
    if data.repeats > 1:
        caption += " Values with ± are means with the half-width of the 95 % t-interval over the repeats."
    if data.floors:
        caption += " The first row is the real-data floor: MNIST training images scored like samples (the best a generator can reach; train_seconds does not apply)."
    else:
        caption += " Real-data floors are not available (see the note above)."
    blocks: list[Block] = [Heading("2. Leaderboard")]
    if data.multi_objective:
        pareto = an.pareto_numbers(data)
        if pareto:
            blocks.append(Text(f"Pareto-optimal trials ({', '.join(o for o, _ in data.objectives)}): {', '.join(map(str, sorted(pareto)))}."))
    blocks.append(Table(columns, rows, caption, numeric, emphasis))
    return blocks


def per_factor(data: StudyData, factor_list: list[an.Factor], figures: Path) -> list[Block]:
    blocks: list[Block] = [Heading("3. Per-factor comparison")]
    if not factor_list:
        blocks.append(Text("No complete trials yet: nothing to compare."))
        return blocks
    metric = data.primary[0]
    what = "the sweep factors (each factor's trials plus the baseline)" if data.is_sweep else "each search-space parameter (ranges in quantile bins)"
    blocks.append(
        Text(
            f"One row per varied hyperparameter — {what}. Left to right: generator loss, discriminator loss and "
            f"discriminator accuracy over training (line: mean over runs, band: ±1 sd over runs; complete trials only), "
            f"and the final {metric} of every run (points) with the mean and its 95 % t-interval (black diamond) and the "
            "real-data floor (dashed). Colors mark the same value in all four panels"
            + ("; the baseline is dark grey." if data.is_sweep else ".")
        )
    )
    for f in factor_list:
        path = fg.factor_row(data, f, metric, figures / f"factor_{fg.slug(f.name)}.png")
        counts = ", ".join(f"{lv.label}: {sum(max(t.n_repeats, 1) for t in lv.trials)}" for lv in f.levels)
        kind = {"binned": " (quantile bins of the sampled values)", "categorical": "", "sweep": ""}[f.kind]
        blocks += [Heading(f"{f.name}{kind}", 3), Figure(path, f"{f.name}: runs per value — {counts}.")]
        blocks += value_blocks(data, f, figures)
    return blocks


def best_trial(data: StudyData, figures: Path) -> list[Block]:
    blocks: list[Block] = [Heading("4. Best trial")]
    best = data.best_trial()
    if best is None:
        blocks.append(Text("No complete trial yet."))
        return blocks
    metric, direction = data.primary
    params = ", ".join(f"{k}={an.value_label(v)}" for k, v in best.params.items()) or "no parameters"
    seed_note = ""
    if len(best.curve_runs) > 1 or best.n_repeats > 1:
        seed_note = f" The pictures are from its first repeat (seed {best.config.get('seed', 0)})."
    among = " among the Pareto-optimal trials" if data.multi_objective else ""
    blocks.append(Text(f"Trial {best.number} ({params}) has the {'lowest' if direction == 'minimize' else 'highest'} {metric}{among}.{seed_note}"))
    rows = []
    for m in (info.name for info in gm.metrics_of("score", "run")):
        e = an.estimate(best, m)
        if e.n:
            floor = (data.floors or {}).get(m)
            rows.append([m, gm.label(m), fmt_estimate(e), fmt(floor) if finite(floor) else "—"])
    blocks.append(Table(["metric", "meaning", f"trial {best.number}", "real-data floor"], rows, numeric=[False, False, True, True]))
    art = dict(data.artifacts)
    n_final = data.spec.final_samples if data.spec else None
    captions = {
        "grid": "Samples from the fixed noise at the end of training.",
        "samples_20": "20 random samples with the evaluator's predicted digit under each.",
        "histogram": f"Predicted digit of {n_final:,} samples; dashed line: the uniform share." if n_final else "Predicted digit of the final samples; dashed line: the uniform share.",
        "interpolation": "Latent interpolation: each row walks a straight line between two random latents in 10 steps; the evaluator's predicted digit under each image.",
        "arithmetic": "Latent arithmetic: each row decodes two random latents x1 and x2, then x1 − x2 and x1 + x2, with the predicted digit under each.",
    }
    widths = {"grid": 0.4, "samples_20": 0.75, "histogram": 0.5, "interpolation": 0.75, "arithmetic": 0.4}
    if "grid" in art:  # real digits beside the generated ones, at the same scale
        side = fg.real_beside_generated(data, art["grid"], figures / "best_real_vs_generated.png")
        if side is not None:
            art["grid"] = side
            captions["grid"] = "Left: 64 random MNIST test digits; right: samples from the fixed noise at the end of training."
            widths["grid"] = 0.65
    missing = [k for k in captions if k not in art]
    for kind, caption in captions.items():
        if kind in art:
            blocks.append(Figure(art[kind], f"Trial {best.number}: {caption}", widths[kind]))
    if missing:
        blocks.append(Text(f"Not found in the trial's MLflow artifacts: {', '.join(missing)}."))
    return blocks


def _importances(data: StudyData) -> tuple[dict[str, dict[str, float]], str]:
    """Importances per objective, or the reason they cannot be computed."""
    if data.is_sweep:
        return {}, "Parameter importances do not apply to a sweep: it has one parameter (the sweep point) and varies one factor at a time; see the findings."
    done = [t for t in data.complete if t.values]
    varying = [k for k in an.param_names(data) if len({repr(t.params.get(k)) for t in done if k in t.params}) > 1]
    if len(done) < 2 or not varying:
        return {}, f"Parameter importances need at least 2 complete trials whose parameters vary; this study has {len(done)} complete trial{'s' * (len(done) != 1)}{' with varying parameters' if varying else (' and no varying parameter' if done else '')}."
    out: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for i, (metric, direction) in enumerate(data.objectives):
        sign = 1.0 if direction == "minimize" else -1.0  # PED-ANOVA assumes lower is better
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                imp = optuna.importance.get_param_importances(data.study, params=varying, target=lambda t, i=i, s=sign: s * t.values[i])
            except Exception as exc:  # noqa: BLE001 - say why in the report
                notes.append(f"{metric}: importances could not be computed ({type(exc).__name__}: {exc}).")
                continue
        out[metric] = imp
        for w in caught:
            text = str(w.message)
            if "equal" in text.lower() and text not in " ".join(notes):  # importances carry no information
                notes.append(f"{metric}: Optuna warns: {text}")
    note = f"Importances by Optuna's PED-ANOVA evaluator over {len(done)} complete trials."
    if notes:
        note += " " + " ".join(notes)
    return out, note


def diagnostics(data: StudyData, figures: Path) -> list[Block]:
    blocks: list[Block] = [Heading("5. Search diagnostics")]
    if data.complete or any(t.intermediate for t in data.trials):
        path = fg.optimization_history(data, figures / "optimization_history.png")
        blocks += [Heading("Optimization history", 3), Figure(path, "Objective value of each complete trial in trial order and the best so far; pruned and running trials at their last reported value.", 0.8 if data.multi_objective else 0.6)]
    else:
        blocks.append(Text("No trial has a value yet: no optimization history."))
    blocks.append(Heading("Parameter importances", 3))
    imp, note = _importances(data)
    if imp:
        path = fg.importances(imp, figures / "param_importances.png")
        blocks.append(Figure(path, note, 0.8 if len(imp) > 1 else 0.5))
    else:
        blocks.append(Text(note))
    if not data.is_sweep:
        blocks += search_blocks(data, imp, figures)
    if data.multi_objective:
        blocks.append(Heading("Pareto front", 3))
        pareto = an.pareto_numbers(data)
        if len([t for t in data.complete if t.values]) >= 1:
            path = fg.pareto_front(data, pareto, figures / "pareto_front.png")
            extra = f" (objectives beyond the first two, {', '.join(m for m, _ in data.objectives[2:])}, are not drawn)" if len(data.objectives) > 2 else ""
            blocks.append(Figure(path, f"Complete trials on the first two objectives; red: the Pareto front{extra}.", 0.5))
            rows = [[str(t.number), *(fmt(v) for v in t.values), ", ".join(f"{k}={an.value_label(v)}" for k, v in t.params.items())]
                    for t in sorted((t for t in data.complete if t.number in pareto), key=lambda t: t.values[0])]
            blocks.append(Table(["trial", *(m for m, _ in data.objectives), "parameters"], rows, "The Pareto-optimal trials.", [True, *[True] * len(data.objectives), False]))
        else:
            blocks.append(Text("No complete trial yet: no Pareto front."))
    pruning = (data.spec is not None and data.spec.pruner != "none") or any(t.state == "PRUNED" and t.intermediate for t in data.trials)
    path = fg.intermediate_values(data, figures / "intermediate_values.png") if pruning else None
    if path is not None:
        blocks += [Heading("Evaluations during training", 3), Figure(path, f"The objective {data.primary[0]} at each evaluation of each trial (first repeat), colored by the trial's state.", 0.6)]
    return blocks


def findings(data: StudyData, factor_list: list[an.Factor]) -> list[Block]:
    blocks: list[Block] = [Heading("6. Findings")]
    counts = {s: len(data.by_state(s)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    general = []
    if counts["PRUNED"] or counts["FAIL"]:
        reasons: dict[str, int] = {}
        for t in data.by_state("PRUNED", "FAIL"):
            key = (t.reason or "no reason recorded").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        general.append(
            f"{counts['PRUNED']} trial{'s' * (counts['PRUNED'] != 1)} pruned and {counts['FAIL']} failed "
            f"(reasons: {'; '.join(f'{k} ×{v}' for k, v in sorted(reasons.items()))})."
        )
    best = data.best_trial()
    metric, direction = data.primary
    if best is not None:
        e = an.estimate(best, metric)
        floor = (data.floors or {}).get(metric)
        who = f"Of the Pareto-optimal trials, {best.number} has the best {metric}:" if data.multi_objective else f"The best trial, {best.number}, reaches"
        sentence = f"{who} {metric} = {fmt_estimate(e)}"
        if finite(floor) and floor > 0 and metric == "fd":
            sentence += f", {e.mean / floor:.1f} times the real-data floor {fmt(floor)}"
        elif finite(floor):
            sentence += f" (real-data floor {fmt(floor)})"
        general.append(sentence + ".")
    if general:
        blocks.append(Bullets(general))
    if not data.is_sweep:
        if best is None:
            blocks.append(Text("No complete trial yet: no findings."))
        else:
            blocks.append(Text("Per-value effects of a search are confounded with the other parameters; see the per-factor rows and the importances above."))
        return blocks
    blocks.append(
        Text(
            f"For each swept factor: every value's mean ± 95 % t-interval over its runs, ★ the best value by {metric}, "
            f"and Δ{metric} to the baseline. 'clear': the 95 % interval of the difference to the baseline excludes 0 "
            "(a paired t-test where the value and the baseline ran the same seeds run for run, else Welch's: the rule "
            "the claims use); 'within noise': it holds 0; 'n/a': fewer than 2 runs on a side, or no spread."
        )
    )
    for f in an.sweep_findings(data, factor_list):
        numeric = [False, True, *[True] * (len(f.columns) - 4), True, False]
        blocks += [Heading(f.factor.name, 3), Table(f.columns, f.rows, numeric=numeric)]
        if f.sentences:
            blocks.append(Bullets(f.sentences))
    if not factor_list:
        blocks.append(Text("No complete sweep trials yet: no findings per factor."))
    return blocks
