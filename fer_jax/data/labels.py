"""FERPlus vote vectors -> training targets, with the semantics of Microsoft's FERPlus code.

Each FERPlus image carries ten vote counts in the order of `VOTE_NAMES`: the eight emotions,
`unknown` and `NF` (not a face). Microsoft's `ferplus.py` turns them into a distribution over
the eight emotions in one of four modes, or discards the image:

- `majority`: drop single votes; keep the image only if its top emotion holds more than half of
  the remaining votes; the target is that emotion, one-hot.
- `probability` and `crossentropy`: drop single votes; take the top emotions (ties together)
  until they hold at least 75% of the votes, at most three; discard if they hold half or less,
  or if `unknown`/`NF` is among the top ones. The target is their normalised vote share
  (`probability` trains on a one-hot sample of it, `crossentropy` on the share itself).
- `multi_target`: drop single votes; keep every emotion with at least 30% of the votes; discard
  if those hold half or less. The target is their normalised share.

Everything here is a pure function of numpy arrays: no randomness, no I/O.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
               "contempt")
VOTE_NAMES = CLASS_NAMES + ("unknown", "NF")
NUM_CLASSES = len(CLASS_NAMES)
NUM_VOTES = len(VOTE_NAMES)
LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target")


def check_votes(votes) -> np.ndarray:
  """Returns `votes` as a float64 [10] array, or raises naming what is wrong."""
  v = np.asarray(votes, dtype=np.float64)
  if v.shape != (NUM_VOTES,):
    raise ValueError(f"a FERPlus vote vector has {NUM_VOTES} counts ({', '.join(VOTE_NAMES)}), "
                     f"got shape {v.shape}")
  if np.any(v < 0) or not np.all(np.isfinite(v)):
    raise ValueError(f"vote counts must be finite and >= 0, got {v.tolist()}")
  return v


def vote_distribution(votes, mode: str) -> np.ndarray | None:
  """The target distribution over the 8 emotions for one image, or None when it is discarded.

  Args:
    votes: the ten vote counts (`VOTE_NAMES` order).
    mode: one of `LABEL_MODES`.

  Returns:
    float32 [8] summing to 1, or None if the image is not kept in this mode.
  """
  if mode not in LABEL_MODES:
    raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
  raw = check_votes(votes).copy()
  raw[raw <= 1.0] = 0.0  # outlier removal: a single annotator's vote does not count
  total = raw.sum()
  if total <= 0:
    return None
  emotion = np.zeros(NUM_VOTES)

  if mode == "majority":
    top = int(np.argmax(raw))
    if raw[top] <= 0.5 * total:
      return None
    emotion[top] = raw[top]
  elif mode in ("probability", "crossentropy"):
    taken, count, valid = 0.0, 0, True
    while taken < 0.75 * total and count < 3 and valid:
      peak = raw.max()
      for i in range(NUM_VOTES):
        if raw[i] == peak:
          emotion[i] = peak
          raw[i] = 0.0
          taken += emotion[i]
          count += 1
          if i >= NUM_CLASSES:  # unknown or NF share the top count
            valid = False
            if emotion.sum() > peak:  # other emotions came before it: drop it, keep them
              emotion[i] = 0.0
              count -= 1
            break
    if emotion.sum() <= 0.5 * total or count > 3:
      return None
  else:  # multi_target
    keep = raw >= 0.3 * total
    emotion[keep] = raw[keep]
    if emotion.sum() <= 0.5 * total:
      return None

  emotion /= emotion.sum()
  if int(np.argmax(emotion)) >= NUM_CLASSES:  # the peak is unknown or NF: not an emotion
    return None
  dist = emotion[:NUM_CLASSES]
  return (dist / dist.sum()).astype(np.float32)


def majority_label(votes) -> int | None:
  """The majority-vote class index of one image (the evaluation protocol), or None."""
  dist = vote_distribution(votes, "majority")
  return None if dist is None else int(np.argmax(dist))


def targets_for_split(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
  """Vectorised over a split: votes [N, 10] -> (kept [N] bool, targets [N, 8] float32).

  Discarded rows get an all-zero target.
  """
  votes = np.asarray(votes)
  kept = np.zeros(len(votes), bool)
  out = np.zeros((len(votes), NUM_CLASSES), np.float32)
  for i, v in enumerate(votes):
    dist = vote_distribution(v, mode)
    if dist is not None:
      kept[i], out[i] = True, dist
  return kept, out
