"""The checkpoint's model over aligned faces: evaluation crops and a jitted forward pass, the
faces of several frames batched together, in a few padded batch shapes so that it compiles a
few times only, running while the next frames' faces are found.

A face's occluded branch is cut with the occluder of `fold_in(key(data.eval_occluder_seed),
face_keys(face))`, a number computed from the aligned face's own pixels and landmarks: the same
face gets the same numbers whatever its place in a folder, batch or video.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import ml_collections
import numpy as np

from fer_jax.data import labels as labels_lib
from fer_jax import inference
from fer_jax import state as state_lib

MAX_PENDING_FRAMES = 64  # frames held back at most while a batch of faces fills up


def face_keys(images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
  """int32 [n]: one number per aligned face, a CRC-32 of its pixels and landmarks (31 bits),
  the key of its evaluation occluder in place of a dataset index."""
  images = np.ascontiguousarray(images, np.uint8)
  landmarks = np.ascontiguousarray(landmarks, np.float32)
  return np.array([zlib.crc32(landmarks[i].tobytes(), zlib.crc32(images[i].tobytes()))
                   & 0x7FFFFFFF for i in range(len(images))], np.int32)


def batch_bucket(n: int, batch_size: int, smallest: int = 8) -> int:
  """The padded size of a batch of n <= batch_size faces: the next power of two from
  `smallest`, at most `batch_size`, so that a few shapes compile and little is padding."""
  if n >= batch_size:
    return batch_size
  return min(batch_size, max(smallest, 1 << max(n - 1, 0).bit_length()))


class Classifier:
  """(faces uint8 [n, F, F, 1], landmarks [n, 68, 2], face keys [n]) -> (probabilities
  [n, 8], branch weights [n, nb]), numpy.

  It cuts the evaluation crops and runs the model (`inference.eval_step`) in jitted batches of
  at most `batch_size` faces, each padded to `batch_bucket` (a few shapes compile). `dispatch`
  starts the work and returns a function that waits for it and returns the arrays: JAX runs
  the batches while the caller goes on (finding the next frame's faces).
  """

  def __init__(self, config: ml_collections.ConfigDict, variables, batch_size: int):
    model = state_lib.build_model(config)
    self._step = jax.jit(functools.partial(
        inference.eval_step, model=model, crop_cfg=state_lib.crop_config(config),
        crops_on="device", occluder_seed=int(config.data.eval_occluder_seed),
        flip=bool(config.eval_flip), temperature=float(config.model.temperature)))
    self._variables, self.batch_size = variables, int(batch_size)
    self.num_branches = len(config.data.crops.branches)

  def dispatch(self, images: np.ndarray, landmarks: np.ndarray, keys: np.ndarray
               ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    images, landmarks = np.asarray(images, np.uint8), np.asarray(landmarks, np.float32)
    keys = np.asarray(keys, np.int32)
    n, running = len(images), []
    for start in range(0, n, self.batch_size):
      stop = min(start + self.batch_size, n)
      pad = batch_bucket(stop - start, self.batch_size) - (stop - start)
      batch = dict(
          image=np.concatenate([images[start:stop],
                                np.zeros((pad,) + images.shape[1:], np.uint8)]),
          landmarks=np.concatenate([landmarks[start:stop],
                                    np.zeros((pad,) + landmarks.shape[1:], np.float32)]),
          index=np.concatenate([keys[start:stop], np.zeros((pad,), np.int32)]))
      running.append((stop - start, self._step(self._variables, batch)))  # asynchronous

    def result():
      probs = np.zeros((n, labels_lib.NUM_CLASSES), np.float32)
      mu = np.zeros((n, self.num_branches), np.float32)
      start = 0
      for size, out in running:
        out = jax.device_get(out)
        probs[start:start + size] = out["probs"][:size]
        mu[start:start + size] = out["mu"][:size]
        start += size
      return probs, mu
    return result

  def __call__(self, images, landmarks, keys) -> tuple[np.ndarray, np.ndarray]:
    return self.dispatch(images, landmarks, keys)()


def make_classifier(config: ml_collections.ConfigDict, variables, batch_size: int) -> Classifier:
  """The checkpoint's model over aligned faces (`Classifier`)."""
  return Classifier(config, variables, batch_size)


def classify_frames(frames: Iterable[tuple[Any, Sequence]], classify, batch_size: int,
                    max_pending: int = MAX_PENDING_FRAMES
                    ) -> Iterator[list[tuple[Any, Sequence, np.ndarray, np.ndarray]]]:
  """(frame, its faces) pairs -> lists of (frame, faces, probabilities [n, 8], weights [n, nb]),
  in order. Frames are held back until their faces fill `batch_size` (or `max_pending` frames
  wait), then classified together; each yielded list is one such group. A group is yielded
  once the next one has been dispatched (when `classify` has `dispatch`): the model runs
  while the next frames' faces are found."""
  running = None
  for started in _dispatched(frames, classify, batch_size, max_pending):
    if running is not None:
      yield _collect(*running)
    running = started
  if running is not None:
    yield _collect(*running)


def _dispatched(frames, classify, batch_size: int, max_pending: int):
  """The groups of `classify_frames`, each dispatched as soon as it is full (or at the end)."""
  pending = []
  for frame, faces in frames:
    pending.append((frame, faces))
    if sum(len(f) for _, f in pending) >= batch_size or len(pending) >= max_pending:
      yield _dispatch(pending, classify)
      pending = []
  if pending:
    yield _dispatch(pending, classify)


def _dispatch(pending, classify):
  faces = [f for _, fs in pending for f in fs]
  if not faces:
    empty = (np.zeros((0, labels_lib.NUM_CLASSES), np.float32), np.zeros((0, 0), np.float32))
    return pending, lambda: empty
  images = np.stack([f.aligned for f in faces])
  landmarks = np.stack([f.aligned_landmarks for f in faces])
  args = (images, landmarks, face_keys(images, landmarks))
  dispatch = getattr(classify, "dispatch", None)
  if dispatch is None:
    out = classify(*args)
    return pending, lambda: out
  return pending, dispatch(*args)


def _collect(pending, result):
  probs, mu = result()
  out, k = [], 0
  for frame, fs in pending:
    out.append((frame, fs, probs[k:k + len(fs)], mu[k:k + len(fs)]))
    k += len(fs)
  return out
