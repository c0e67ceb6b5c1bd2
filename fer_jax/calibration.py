"""Calibration: whether a probability of 0.7 is right 70% of the time (pure numpy).

Classroom summaries average the class probabilities of many faces, so those probabilities must
mean what they say. Evaluation reports:

- `nll`: the mean negative log-likelihood of each face's (majority-vote) label;
- `ece`: the expected calibration error over 15 equal-width confidence bins: the mean over
  faces of |accuracy - confidence| within each face's bin (Guo et al., 2017);
- the temperature T that minimises the NLL on the evaluated split (`fit_temperature`), and the
  NLL and ECE at it: the model's probabilities p (averaged over the mirror views when it
  averages them) tempered as softmax(log p / T), which for one view is softmax(logits / T).

A released model stores the temperature fitted on validation as `model.temperature`
(`release.calibrate`), which evaluation and prediction then apply; 1 means none. T does not
change which class is most probable, so accuracy is the same at every temperature.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

BINS = 15
T_RANGE = (0.05, 20.0)  # the temperatures fit_temperature searches


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
  z = logits - logits.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  """logits [N, views, C] (views: the face and, with the mirror average, its mirror image) ->
  probabilities [N, C]: the views' softmax averaged (as evaluation averages them), then
  tempered, softmax(log(p) / T): the most probable class is the same at every T."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim == 2:
    logits = logits[:, None]
  p = softmax(logits).mean(axis=1)
  if temperature == 1.0:
    return p
  return softmax(np.log(np.maximum(p, 1e-30)) / float(temperature))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
  """Mean -log p(label) (probabilities floored at 1e-12)."""
  labels = np.asarray(labels, np.int64)
  if not len(labels):
    return float("nan")
  p = np.asarray(probs, np.float64)[np.arange(len(labels)), labels]
  return float(-np.mean(np.log(np.maximum(p, 1e-12))))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per equal-width confidence bin ((i/bins, (i+1)/bins], the first including 0): (mean
  confidence, accuracy, number of faces); bins without faces hold NaN and 0."""
  probs = np.asarray(probs, np.float64)
  confidence = probs.max(axis=1)
  correct = probs.argmax(axis=1) == np.asarray(labels)
  which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  count = np.bincount(which, minlength=bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    conf = np.bincount(which, confidence, bins) / count
    acc = np.bincount(which, correct.astype(np.float64), bins) / count
  return conf, acc, count


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
  """Expected calibration error: sum over bins of (faces in it / N) x |accuracy - confidence|."""
  conf, acc, count = reliability(probs, labels, bins)
  if not count.sum():
    return float("nan")
  used = count > 0
  return float(np.sum(count[used] * np.abs(acc[used] - conf[used])) / count.sum())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
  """The temperature in T_RANGE minimising the NLL of `probabilities(logits, T)` (a bounded
  search over log T)."""
  labels = np.asarray(labels, np.int64)
  if not len(labels):
    return 1.0
  cost = lambda log_t: nll(probabilities(logits, np.exp(log_t)), labels)
  found = scipy.optimize.minimize_scalar(cost, bounds=tuple(np.log(T_RANGE)), method="bounded",
                                         options=dict(xatol=1e-4))
  return float(np.exp(found.x))


def report(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict:
  """The calibration figures of an evaluation: NLL and ECE at the model's temperature, before
  it (at temperature 1: `nll_at_1`, `ece_at_1`), and the temperature fitted on these faces
  with the NLL and ECE it gives."""
  fitted = fit_temperature(logits, labels)
  at = lambda t: probabilities(logits, t)
  conf, acc, count = reliability(at(temperature), labels)
  plain = lambda a: [None if not np.isfinite(v) else round(float(v), 6) for v in a]
  return dict(temperature=float(temperature), nll=nll(at(temperature), labels),
              ece=ece(at(temperature), labels), fitted_temperature=fitted,
              nll_at_fitted=nll(at(fitted), labels), ece_at_fitted=ece(at(fitted), labels),
              nll_at_1=nll(at(1.0), labels), ece_at_1=ece(at(1.0), labels),
              bins=BINS, reliability=dict(confidence=plain(conf), accuracy=plain(acc),
                                          count=[int(c) for c in count]))
