"""A spec's claims (#15): checked with the spec, read from a file beside it, stored with the study
and replaceable on a later run without retraining."""

from __future__ import annotations

import optuna
import pytest
import yaml

from study.spec.claims import Claim, Requirement
from study.storage.record import StudyAttrs
from study.spec.samplers import open_study, spec_hash, effective_spec
from study.spec.spec import SpecError, load_spec, parse_spec

SWEEP = {"name": "cl", "budget": {"steps": 10}, "sweep": {"factors": {"lr": [
    {"label": "2e-5", "lr_g": 2.0e-5, "lr_d": 2.0e-5}, {"label": "2e-4", "lr_g": 2.0e-4, "lr_d": 2.0e-4}], "optimizer": ["adam", "sgd"]}}}
GOOD = {"id": "sgd-worse", "source": "000 §C.2", "claim": "SGD trails Adam.", "factor": "optimizer", "compare": ["sgd", "baseline"],
        "quantity": "fd", "relation": ">"}


def _spec(*claims):
    return parse_spec({**SWEEP, "claims": list(claims)})


def test_a_claim_parses_with_levels_by_label_or_number():
    spec = _spec(GOOD, {**GOOD, "id": "lr", "factor": "lr", "compare": [2e-5], "quantity": "d_acc.end_mean", "relation": "≈",
                        "value": 1.0, "tolerance": 0.1})
    assert spec.claims[0] == Claim("sgd-worse", "000 §C.2", "SGD trails Adam.", "optimizer", ("sgd", "adam"), "fd", ">")
    assert spec.claims[1].compare == ("2e-5",) and spec.claims[1].test_text() == "d_acc.end_mean(2e-5) ≈ 1 (± 0.1)"


@pytest.mark.parametrize("change, message", [
    ({"factor": "beta1"}, "factor 'beta1' is not a factor of the sweep; factors: lr, optimizer"),
    ({"compare": ["rmsprop"]}, "optimizer has no level 'rmsprop'; levels: sgd, baseline, adam"),
    ({"quantity": "fid"}, "unknown quantity 'fid'"),
    ({"quantity": "g_loss.end_median"}, "unknown quantity 'g_loss.end_median'"),
    ({"quantity": "fd.steps_below"}, "steps_below needs a threshold"),
    ({"quantity": "share:12"}, "share:D needs a digit 0-9"),
    ({"relation": "=="}, "relation must be one of >, <, ≈, lowest, highest"),
    ({"relation": "≈"}, "relation ≈ needs a tolerance"),
    ({"compare": ["sgd"]}, "one level with relation '>' needs a value"),
    ({"value": 3}, "two levels are compared with each other: remove value"),
    ({"claim": ""}, "claim must be a non-empty string"),
    ({"window": 2}, "window is a fraction of training in (0, 1]"),
    ({"colour": "red"}, "unknown key(s) ['colour']"),
])
def test_bad_claims_name_the_entry_key_and_fix(change, message):
    with pytest.raises(SpecError) as err:
        _spec({**GOOD, **change})
    assert str(err.value).startswith("claims[0] (sgd-worse): ") and message in str(err.value)


def test_ids_are_unique_and_claims_need_a_sweep():
    with pytest.raises(SpecError, match="id 'sgd-worse' is used twice"):
        _spec(GOOD, GOOD)
    with pytest.raises(SpecError, match="claims compare the levels of a sweep"):
        parse_spec({"name": "s", "space": {"optimizer": ["adam", "sgd"]}, "claims": [GOOD]})


def test_a_claims_file_beside_the_spec_is_read_and_stored_inline(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump([GOOD]))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SWEEP, "claims": "c.yaml"}))
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.claims[0].id == "sgd-worse" and spec.source["claims"] == [GOOD]  # inline in what the study stores
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SWEEP, "claims": "missing.yaml"}))
    with pytest.raises(SpecError, match="cannot read the claims file .*missing.yaml"):
        load_spec(tmp_path / "s.yaml")


def test_the_seeds_spec_carries_at_least_20_claims_with_sources():
    spec = load_spec("seeds")
    assert len(spec.claims) >= 20
    reports = {c.source[:3] for c in spec.claims}
    assert reports == {"000", "001", "002", "003", "004"} or len(reports) >= 4
    assert all(c.claim and c.source for c in spec.claims)


def test_edited_claims_replace_the_stored_ones_without_a_changed_spec_error():
    storage = optuna.storages.InMemoryStorage()
    first = _spec(GOOD)
    study = open_study(first, "cl", storage)
    edited = _spec({**GOOD, "relation": "<"})
    assert spec_hash(effective_spec(first)) == spec_hash(effective_spec(edited))
    study = open_study(edited, "cl", storage)  # no SpecError: claims change no training
    assert study.user_attrs[StudyAttrs.SPEC]["claims"][0]["relation"] == "<"
    with pytest.raises(SpecError, match="was run with another spec"):
        open_study(parse_spec({**SWEEP, "budget": {"steps": 20}, "claims": [GOOD]}), "cl", storage)


def test_kind_epochs_note_and_preconditions_parse():
    spec = _spec({**GOOD, "kind": "cited", "epochs": 10, "note": "Run on the MLP.",
                  "requires": {"learned": {"modes": 9, "kl_uniform": 0.25}, "levels": ["baseline"], "after": {"epochs": 2}}})
    c = spec.claims[0]
    assert (c.kind, c.epochs, c.note) == ("cited", 10.0, "Run on the MLP.")
    assert c.requires == Requirement(9.0, 0.25, ("adam",), 2.0, "epochs")  # 'baseline' names the baseline's level
    assert c.required_levels == ("sgd", "adam") and c.requires.text() == "learned at adam (modes ≥ 9 and KL ≤ 0.25); after 2 epochs"
    assert _spec(GOOD).claims[0].kind == "observed" and _spec(GOOD).claims[0].requires is None


@pytest.mark.parametrize("change, message", [
    ({"kind": "hearsay"}, "kind must be one of observed, cited, intent, extrapolation"),
    ({"requires": {"learned": {"modes": 11}}}, "modes is a number of digits in (0, 10]"),
    ({"requires": {"learned": {"fd": 3}}}, "requires.learned must be a mapping with modes"),
    ({"requires": {"levels": ["sgd"]}}, "requires.levels lists the levels whose runs must have learned"),
    ({"requires": {"learned": {"modes": 9}, "levels": ["rmsprop"]}}, "has no level 'rmsprop'"),
    ({"requires": {"after": {"hours": 2}}}, "requires.after must be {epochs: N} or {steps: N}"),
    ({"requires": "learned"}, "requires must be a mapping"),
    ({"epochs": 0}, "epochs is the source's budget in epochs, > 0"),
])
def test_bad_preconditions_name_the_entry_and_fix(change, message):
    with pytest.raises(SpecError) as err:
        _spec({**GOOD, **change})
    assert str(err.value).startswith("claims[0] (sgd-worse): ") and message in str(err.value)


def test_the_spec_check_flags_what_the_schedule_cannot_measure():
    from study.spec.claims import claim_warnings

    def spec(steps, every, *claims, repeats=3):
        return parse_spec({**SWEEP, "budget": {"steps": steps}, "repeats": repeats, "evaluation": {"every": every},
                           "claims": list(claims)})

    rise = {**GOOD, "id": "late", "quantity": "fd.late_rise"}
    below = {**GOOD, "id": "fast", "quantity": "fd.steps_below:30"}
    loss = {**GOOD, "id": "loss", "quantity": "g_loss.end_sd"}
    # 800 steps, evaluations every 2,000: FD at step 0 and the end only (#28's schedule)
    warnings = claim_warnings(spec(800, 2000, rise, below, loss, GOOD))
    assert len(warnings) == 2 and warnings[0].startswith("claim late: fd.late_rise needs 4 points of fd up to the end; at "
                                                         "optimizer=sgd the schedule gives 2 (800 steps, evaluations every 2000)")
    assert warnings[1].startswith("claim fast: fd.steps_below:30 needs 4 points")
    assert claim_warnings(spec(800, 100, rise, below, loss, GOOD)) == []  # 9 evaluations and the end
    slope = {**GOOD, "id": "slope", "quantity": "fd.end_slope", "window": 0.2}
    assert "needs 3 points of fd in its end window" in claim_warnings(spec(800, 100, slope))[0]
    boom = {**GOOD, "id": "boom", "quantity": "g_loss.explodes", "compare": ["sgd"], "value": 0.5}
    assert "no outcome of 3 runs per level reaches a verdict" in claim_warnings(spec(800, 100, boom))[0]
    assert claim_warnings(spec(800, 100, boom, repeats=6)) == []  # 6 of 6: p = 2 / 64
    late = {**GOOD, "id": "after", "requires": {"after": {"epochs": 5}}}
    assert "its precondition holds after 5 epochs, the budget is" in claim_warnings(spec(800, 100, late))[0]


def test_the_seeds_claims_are_judgeable_and_say_what_they_are():
    spec = load_spec("seeds")
    kinds = {c.kind for c in spec.claims}
    assert kinds == {"observed", "cited", "intent", "extrapolation"}
    assert next(c for c in spec.claims if c.id == "flip-mlp-d-higher").kind == "extrapolation"
    end_state = [c for c in spec.claims if (c.quantity.statistic is None or c.quantity.statistic.name == "end_mean") and c.kind == "observed"]
    assert all(c.requires is not None for c in end_state), [c.id for c in end_state if c.requires is None]
