"""Calibration: ECE and NLL by hand, the temperature recovered from faces drawn at a known one,
the temperature applied by the evaluation step, and a release's temperature stored."""

import functools
import json
import shutil

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import calibration, release
from fer_jax import inference


def test_nll_and_ece_by_hand():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
  labels = np.array([0, 1, 1, 0])
  assert calibration.nll(probs, labels) == pytest.approx(
      -(np.log(0.9) + np.log(0.4) + np.log(0.7) + np.log(0.55)) / 4)
  # Confidences 0.9, 0.6, 0.7, 0.55 in 15 bins of width 1/15: 0.9 -> bin 13, 0.6 -> 8,
  # 0.7 -> 10, 0.55 -> 8. Bin 8: confidence (0.6 + 0.55)/2, accuracy 1/2 (the 0.6 face is
  # wrong); bins 10 and 13: right, |1 - conf|.
  expected = (2 * abs(0.5 - 0.575) + abs(1 - 0.7) + abs(1 - 0.9)) / 4
  assert calibration.ece(probs, labels) == pytest.approx(expected)
  conf, acc, count = calibration.reliability(probs, labels)
  assert count.tolist() == [0] * 8 + [2, 0, 1, 0, 0, 1, 0] and acc[8] == 0.5
  assert calibration.ece(np.eye(3), np.arange(3)) == 0.0  # sure and right: calibrated


def test_the_temperature_faces_were_drawn_at_is_recovered():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 3, (20000, 1, 8))
  labels = np.array([rng.choice(8, p=p) for p in calibration.probabilities(logits, 2.0)])
  fitted = calibration.fit_temperature(logits, labels)
  assert fitted == pytest.approx(2.0, rel=0.05)
  report = calibration.report(logits, labels)
  assert report["nll_at_fitted"] < report["nll"] and report["ece_at_fitted"] < report["ece"]
  assert report["ece_at_fitted"] < 0.02  # calibrated, up to sampling noise
  # Before a temperature: the figures at 1, whatever temperature the model carries.
  tempered = calibration.report(logits, labels, temperature=2.0)
  assert tempered["nll_at_1"] == report["nll"] and tempered["ece_at_1"] == report["ece"]
  assert tempered["nll"] == pytest.approx(report["nll_at_fitted"], rel=0.01)
  # One view: softmax(logits / T). Two (the mirror average): the views' softmax averaged, then
  # tempered, so the most probable class never changes with T.
  np.testing.assert_allclose(calibration.probabilities(logits[:5], 2.0),
                             calibration.softmax(logits[:5, 0] / 2))
  two = np.stack([logits[:50, 0], rng.normal(0, 3, (50, 8))], 1)
  mean = (calibration.softmax(two[:, 0]) + calibration.softmax(two[:, 1])) / 2
  np.testing.assert_allclose(calibration.probabilities(two, 2.0),
                             calibration.softmax(np.log(mean) / 2))
  for t in (0.3, 1.0, 5.0):
    assert (calibration.probabilities(two, t).argmax(1) == mean.argmax(1)).all()


def test_the_evaluation_step_applies_the_temperature_to_each_view():
  # A linear stand-in for the network: logits from the crops' pixels (no mirror symmetry).
  w = jax.random.normal(jax.random.key(2), (5 * 4 * 4, 8))
  model = types.SimpleNamespace(apply=lambda v, x, train: dict(
      logits=x.reshape(len(x), -1) @ v["w"], mu=jnp.ones((len(x), 5))))
  crops = jax.random.normal(jax.random.key(0), (3, 5, 4, 4, 1))
  step = functools.partial(inference.eval_step, {"w": w}, {"crops": crops}, model=model,
                           crop_cfg=None, crops_on="host", occluder_seed=0, flip=True)
  plain, warm = step(temperature=1.0), step(temperature=3.0)
  np.testing.assert_allclose(plain["logits"], warm["logits"])  # raw logits: [n, 2 views, 8]
  assert warm["logits"].shape == (3, 2, 8)
  np.testing.assert_allclose(warm["probs"], calibration.probabilities(warm["logits"], 3.0),
                             rtol=1e-5, atol=1e-6)
  assert np.abs(np.asarray(warm["probs"]) - np.asarray(plain["probs"])).max() > 1e-3


def test_a_release_stores_the_temperature_fitted_on_validation(tmp_path):
  shutil.copytree(release.model_dir(release.DEFAULT_MODEL), tmp_path / "m")
  evaluation = tmp_path / "validation.json"
  cal = dict(temperature=1.0, nll=1.0, ece=0.08, fitted_temperature=1.4, nll_at_fitted=0.9,
             ece_at_fitted=0.02, bins=15)
  evaluation.write_text(json.dumps(dict(split="validation", num_examples=3191,
                                        calibration=cal)))
  assert release.set_temperature("m", str(evaluation), root=tmp_path) == 1.4
  config, _, _ = release.load("m", root=tmp_path)
  assert config.model.temperature == 1.4
  info = json.loads((tmp_path / "m" / "release.json").read_text())["calibration"]
  assert info["before"] == dict(temperature=1.0, nll=1.0, ece=0.08)
  assert info["after"] == dict(nll=0.9, ece=0.02)
  evaluation.write_text(json.dumps(dict(split="test", calibration=cal)))
  with pytest.raises(ValueError, match="a temperature is fitted on validation"):
    release.set_temperature("m", str(evaluation), root=tmp_path)
