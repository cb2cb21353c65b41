"""The evaluator classifier: accuracy on the real test set, freezing, its identity and disk cache.

The full evaluator trains once per checkout (cached in $GAN_STUDY_CACHE); cache-rebuild tests
use tmp folders and a real but short training (``max_steps``), so they prove "rebuilt, not
crashed" in seconds.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from gan import evaluator as evaluator_module
from gan.evaluator import (
    CACHE_FILE,
    FEATURES,
    ClassifierConfig,
    Evaluator,
    accuracy_and_loss,
    load_evaluator,
    read_cache,
    weights_hash,
    write_cache,
)

QUICK = ClassifierConfig(max_steps=40)  # a real training, ~2 s; its test accuracy is ~95 %


def test_test_accuracy_is_at_least_99_3_percent(evaluator, mnist_test):
    accuracy, loss = accuracy_and_loss(evaluator, mnist_test)
    assert accuracy >= 0.993
    assert accuracy == pytest.approx(evaluator.test_accuracy, abs=1e-4)
    assert loss == pytest.approx(evaluator.test_loss, rel=1e-4)
    assert 0 < evaluator.train_seconds < float("inf")


def test_card_identifies_the_scorer(evaluator):
    card = evaluator.card()
    assert set(card) == {"architecture", "weights_hash", "test_accuracy", "test_loss", "train_seconds", "recipe_key"}
    assert card["architecture"] == f"CNN 24-48-64 conv, {FEATURES}-d features, 10 classes"
    assert card["weights_hash"] == evaluator.weights_hash == weights_hash(evaluator)
    assert len(card["weights_hash"]) == 64 and int(card["weights_hash"], 16) >= 0
    assert card["recipe_key"] == evaluator.key and card["recipe_key"] != card["weights_hash"]
    assert 0 < card["test_accuracy"] <= 1
    assert 0 < card["test_loss"] < math.log(10)  # finite and better than a uniform guess
    assert 0 < card["train_seconds"] < math.inf


def test_weights_hash_changes_with_any_weight(evaluator):
    changed = copy.deepcopy(evaluator)
    assert weights_hash(changed) == evaluator.weights_hash
    with torch.no_grad():
        w = changed.body[1].weight.view(-1)
        w[7] = torch.nextafter(w[7], torch.tensor(math.inf))  # one float32 ulp
    assert weights_hash(changed) != evaluator.weights_hash
    with torch.no_grad():
        changed.body[2].running_mean[0] += 1  # buffers define the scores as much as parameters
        w[7] = evaluator.body[1].weight.view(-1)[7]
    assert weights_hash(changed) != evaluator.weights_hash


def test_is_frozen_in_eval_mode(evaluator):
    assert not evaluator.training
    assert not any(p.requires_grad for p in evaluator.parameters())


def test_predict_gives_logits_and_penultimate_features(evaluator, mnist_test):
    images = mnist_test.batch(torch.arange(2500))
    logits, features = evaluator.predict(images, batch_size=1000)
    assert logits.shape == (2500, 10) and features.shape == (2500, FEATURES) and FEATURES <= 128
    assert not logits.requires_grad and torch.isfinite(features).all()
    # Batching does not change the result.
    small_logits, _ = evaluator.predict(images[:10], batch_size=3)
    torch.testing.assert_close(small_logits, logits[:10], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 3, 28, 28), (4, 1, 32, 32)])
def test_predict_rejects_other_shapes(evaluator, shape):
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        evaluator.predict(torch.zeros(shape))


def test_second_load_reads_the_cache(evaluator):
    again = load_evaluator()
    assert again.card() == evaluator.card()  # same weights hash, numbers and key
    for a, b in zip(again.state_dict().values(), evaluator.state_dict().values()):
        assert torch.equal(a, b)


def test_training_is_deterministic(tmp_path):
    a = load_evaluator(cache_dir=tmp_path / "a", config=QUICK)
    b = load_evaluator(cache_dir=tmp_path / "b", config=QUICK)
    assert a.weights_hash == b.weights_hash and a.test_loss == b.test_loss
    assert a.test_accuracy == b.test_accuracy > 0.8  # it really trained


def _rebuilt(cache_dir, caplog, expected: str) -> Evaluator:
    """Load with a damaged cache: warns ``expected``, retrains, and leaves a valid cache."""
    with caplog.at_level(logging.WARNING, logger="gan.evaluator"):
        model = load_evaluator(cache_dir=cache_dir, config=QUICK)
    assert expected in caplog.text
    assert model.test_accuracy > 0.8  # a real training ran
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gan.evaluator"):
        again = load_evaluator(cache_dir=cache_dir, config=QUICK)
    assert caplog.text == "" and again.train_seconds == model.train_seconds  # read back, not retrained
    return model


def test_stale_cache_is_rebuilt(tmp_path, caplog, evaluator):
    # The fully trained cache is stale for the QUICK config (another key).
    shutil.copy(evaluator.cache_dir / CACHE_FILE, tmp_path / CACHE_FILE)
    model = _rebuilt(tmp_path, caplog, "stale")
    assert model.key != evaluator.key


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_rebuilt(tmp_path, caplog, evaluator, damage):
    content = (evaluator.cache_dir / CACHE_FILE).read_bytes()
    (tmp_path / CACHE_FILE).write_bytes(b"not a torch file" if damage == "garbage" else content[: len(content) // 2])
    _rebuilt(tmp_path, caplog, "corrupt")


def test_cache_with_wrong_weights_is_rebuilt(tmp_path, caplog):
    key = load_evaluator(cache_dir=tmp_path, config=QUICK).key
    write_cache(tmp_path / CACHE_FILE, key, {"state_dict": {"head.weight": torch.zeros(3)}, "test_accuracy": 1.0})
    _rebuilt(tmp_path, caplog, "corrupt")


def test_cache_without_test_loss_gains_it_without_retraining(tmp_path, caplog, evaluator):
    # A cache file written before test_loss was recorded: the loss is computed on load and stored.
    payload = read_cache(evaluator.cache_dir / CACHE_FILE, evaluator.key)
    old = {k: v for k, v in payload.items() if k != "test_loss"}
    write_cache(tmp_path / CACHE_FILE, evaluator.key, old)
    with caplog.at_level(logging.WARNING, logger="gan.evaluator"):
        model = load_evaluator(cache_dir=tmp_path)
    assert caplog.text == ""  # neither stale nor corrupt
    assert model.card() == evaluator.card() | {"test_loss": pytest.approx(evaluator.test_loss, rel=1e-4)}
    stored = read_cache(tmp_path / CACHE_FILE, evaluator.key)
    assert stored["test_loss"] == model.test_loss and stored["train_seconds"] == evaluator.train_seconds


def test_concurrent_first_loads_train_once(tmp_path, monkeypatch):
    # The second load reads the empty cache while the first trains, then waits for its file.
    trainings, reads, second_has_looked = [], [], threading.Event()
    real_train, real_load = evaluator_module._train, evaluator_module._load_cached

    def counted_train(*args):
        trainings.append(threading.get_ident())
        assert second_has_looked.wait(600)
        return real_train(*args)

    def counted_load(*args):
        found = real_load(*args)
        reads.append(found)
        if len(reads) == 2:
            second_has_looked.set()
        return found

    monkeypatch.setattr(evaluator_module, "_train", counted_train)
    monkeypatch.setattr(evaluator_module, "_load_cached", counted_load)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(load_evaluator, cache_dir=tmp_path, config=QUICK)
        second = pool.submit(load_evaluator, cache_dir=tmp_path, config=QUICK)
        a, b = first.result(timeout=600), second.result(timeout=600)
    assert len(trainings) == 1 and a.card() == b.card()


def test_cache_write_is_atomic_and_readable(tmp_path):
    path = tmp_path / "sub" / "x.pt"
    write_cache(path, "k", {"a": torch.arange(3), "b": 1.5})
    payload = read_cache(path, "k")
    assert payload is not None and torch.equal(payload["a"], torch.arange(3)) and payload["b"] == 1.5
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]  # no temporary file left behind
    assert read_cache(path, "other") is None


def test_loading_and_training_leave_the_global_rng_alone(tmp_path):
    before = torch.get_rng_state()
    load_evaluator()
    load_evaluator(cache_dir=tmp_path, config=ClassifierConfig(max_steps=2))
    assert torch.equal(torch.get_rng_state(), before)
