"""Evaluate: the numpy ridge probes, and the whole probe run on a tiny checkpoint (eval.json, report)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from laionface.train.evaluate import few_shot_accuracy, nme, ridge_cv, ridge_fit

from . import make_run


def test_ridge_recovers_a_linear_map_and_nme_is_zero_for_exact_points():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12))
    w = rng.normal(size=(12, 10))
    y = x @ w + 3.0
    model = ridge_cv(x, y, lambda p, t: float(np.mean((p - t) ** 2)))
    np.testing.assert_allclose(model.predict(x), y, atol=0.05)
    dual = ridge_fit(x[:8], y[:8], 1e-6)  # fewer samples than features: the dual form
    np.testing.assert_allclose(dual.predict(x[:8]), y[:8], atol=1e-3)
    points = rng.uniform(size=(5, 10))
    assert nme(points, points) == 0.0
    shifted = points.copy()
    shifted[:, 0::2] += 0.1
    iod = np.linalg.norm(points.reshape(5, 5, 2)[:, 0] - points.reshape(5, 5, 2)[:, 1], axis=1)
    assert nme(shifted, points) == pytest.approx(float(np.mean(0.1 / iod)))


def test_few_shot_accuracy_separates_separable_classes_and_not_noise():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(2, 1, size=(50, 6)), rng.normal(-2, 1, size=(50, 6))
    assert few_shot_accuracy(pos, neg, None) > 0.95
    assert abs(few_shot_accuracy(rng.normal(size=(50, 6)), rng.normal(size=(50, 6)), None) - 0.5) < 0.15


def test_evaluate_writes_both_columns_to_eval_json_and_the_report(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("open_clip")
    from laionface.train.evaluate import ACCEPTANCE, evaluate, format_table
    from laionface.train.pretrain import PretrainConfig, pretrain

    from .test_pretrain import TINY

    make_run(tmp_path, n=80, per_shard=40)
    ckpt = pretrain(tmp_path, PretrainConfig(steps=2, batch_size=8, workers=0, warmup=1, max_minutes=0, **TINY),
                    progress=False).checkpoint
    (tmp_path / "report.html").write_text("<html><body><h1>report</h1></body></html>")
    result = evaluate(tmp_path, ckpt.parent, device="cpu")
    saved = json.loads((tmp_path / "eval.json").read_text())
    for column in ("pretrained", "random_init"):
        assert set(ACCEPTANCE) <= set(saved[column])
        assert 0 <= saved[column]["retrieval_r1"] <= saved[column]["retrieval_r5"] <= 1
    assert saved["margins"].keys() == result["margins"].keys()
    assert saved["counts"]["test_crops"] >= 10 and saved["counts"]["held_out_pairs"] >= 5
    table = format_table(result)
    assert "random" in table and "pretrained" in table and "margin" in table
    evaluate(tmp_path, ckpt, device="cpu")  # again, by file: the report keeps one section
    page = (tmp_path / "report.html").read_text()
    assert page.count('<section id="evaluation">') == 1 and page.index("<h1>report</h1>") < page.index("evaluation")
