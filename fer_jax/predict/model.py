"""The checkpoint's model over aligned faces: evaluation crops and a jitted forward pass, in
batches of a fixed size so that it compiles once, the faces of several frames batched together.

Face number k of an input (counted from 0 over all its frames) is cut with the occluder of
`fold_in(key(data.eval_occluder_seed), k)`, as evaluation cuts example k.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Iterator, Sequence

import jax
import ml_collections
import numpy as np

from fer_jax import evaluate
from fer_jax import state as state_lib
from fer_jax.data import labels as labels_lib

MAX_PENDING_FRAMES = 64  # frames held back at most while a batch of faces fills up


def make_classifier(config: ml_collections.ConfigDict, variables, batch_size: int):
  """A function (faces uint8 [n, F, F, 1], landmarks [n, 68, 2], face numbers [n]) ->
  (probabilities [n, 8], branch weights [n, nb]), numpy.

  It cuts the evaluation crops and runs the model (`evaluate.eval_step`) in jitted batches of
  exactly `batch_size` faces, the last one padded, so that it compiles once.
  """
  model = state_lib.build_model(config)
  step = jax.jit(functools.partial(
      evaluate.eval_step, model=model, crop_cfg=state_lib.crop_config(config),
      crops_on="device", occluder_seed=int(config.data.eval_occluder_seed),
      flip=bool(config.eval_flip)))
  nb = len(config.data.crops.branches)

  def classify(images: np.ndarray, landmarks: np.ndarray, indices: np.ndarray):
    images, landmarks = np.asarray(images, np.uint8), np.asarray(landmarks, np.float32)
    indices = np.asarray(indices, np.int32)
    n = len(images)
    probs = np.zeros((n, labels_lib.NUM_CLASSES), np.float32)
    mu = np.zeros((n, nb), np.float32)
    for start in range(0, n, batch_size):
      stop = min(start + batch_size, n)
      pad = batch_size - (stop - start)
      batch = dict(
          image=np.concatenate([images[start:stop],
                                np.zeros((pad,) + images.shape[1:], np.uint8)]),
          landmarks=np.concatenate([landmarks[start:stop],
                                    np.zeros((pad,) + landmarks.shape[1:], np.float32)]),
          index=np.concatenate([indices[start:stop], np.zeros((pad,), np.int32)]))
      out = jax.device_get(step(variables, batch))
      probs[start:stop] = out["probs"][:stop - start]
      mu[start:stop] = out["mu"][:stop - start]
    return probs, mu

  return classify


def classify_frames(frames: Iterable[tuple[Any, Sequence]], classify, batch_size: int,
                    max_pending: int = MAX_PENDING_FRAMES
                    ) -> Iterator[list[tuple[Any, Sequence, np.ndarray, np.ndarray]]]:
  """(frame, its faces) pairs -> lists of (frame, faces, probabilities [n, 8], weights [n, nb]),
  in order. Frames are held back until their faces fill `batch_size` (or `max_pending` frames
  wait), then classified together; each yielded list is one such group."""
  pending, first = [], 0
  for frame, faces in frames:
    pending.append((frame, faces))
    if sum(len(f) for _, f in pending) >= batch_size or len(pending) >= max_pending:
      yield _classified(pending, classify, first)
      first += sum(len(f) for _, f in pending)
      pending = []
  if pending:
    yield _classified(pending, classify, first)


def _classified(pending, classify, first: int):
  faces = [f for _, fs in pending for f in fs]
  if faces:
    probs, mu = classify(np.stack([f.aligned for f in faces]),
                         np.stack([f.aligned_landmarks for f in faces]),
                         np.arange(first, first + len(faces)))
  else:
    probs, mu = np.zeros((0, labels_lib.NUM_CLASSES), np.float32), np.zeros((0, 0), np.float32)
  out, k = [], 0
  for frame, fs in pending:
    out.append((frame, fs, probs[k:k + len(fs)], mu[k:k + len(fs)]))
    k += len(fs)
  return out
