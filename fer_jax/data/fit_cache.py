"""Landmark fits remembered by the image they were fitted on (`occlusion.fit_cache`).

The refit protocol fits landmarks again on every occluded validation face, and those faces are
the same pixels for every run of a study: an occluder is a pure function of the evaluation
seed and the face (`occlusion.occlude_batch`). So each fit is kept, keyed by the SHA-1 of the
fitter's settings and the image's dtype, shape and bytes, and a later evaluation on the same
machine reads it back instead of fitting again (dlib: about 6 s of an occluder's 25 s
evaluation of the 3,191 validation faces by the five-branch model, two cores, 2026-12-07). A key that misses (other pixels, another fitter) is fitted as before, so a
cache can only save time, never change a result; the folder is safe to delete.

One file per fitter, tag and process: `<fitter>-<tag>-p<process>.npz` (keys, landmarks,
fitted), written whole or not at all.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
from typing import Callable

from absl import logging
import numpy as np

from fer_jax import files


def fitter_id(fitter) -> str:
  """The settings a fit depends on: the source's name and its scalar settings, and the
  fitter's own (`landmarks.AlignedFitter`)."""
  def scalars(obj):
    return ",".join(f"{k}={v!r}" for k, v in sorted(vars(obj).items())
                    if not k.startswith("_") and isinstance(v, (int, float, str, bool)))
  source = getattr(fitter, "source", None)
  return f"{getattr(source, 'name', type(fitter).__name__)}({scalars(source) if source else ''})" \
         f"[{scalars(fitter)}]"


def _safe(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)[:80]


class FitCache:
  """`fit(fitter, image)` through the fits kept in `folder` ("" keeps nothing)."""

  def __init__(self, folder: str, fitter, tag: str, process_index: int = 0):
    self.folder = pathlib.Path(os.path.expanduser(folder)) if folder else None
    self.id = fitter_id(fitter)
    name = hashlib.sha1(self.id.encode()).hexdigest()[:12]
    self.prefix = f"{_safe(getattr(getattr(fitter, 'source', None), 'name', 'fit'))}-{name}-" \
                  f"{_safe(tag)}"
    self.process_index = process_index
    self._fits: dict[bytes, tuple[np.ndarray, bool]] = {}
    self.hits = self.new = 0
    if self.folder is not None and self.folder.is_dir():
      for path in sorted(self.folder.glob(f"{self.prefix}-p*.npz")):
        self._load(path)

  def _load(self, path: pathlib.Path) -> None:
    try:
      with np.load(path) as data:
        keys, landmarks, fitted = data["keys"], data["landmarks"], data["fitted"]
    except (OSError, ValueError, KeyError) as e:  # a damaged file costs its fits, nothing more
      logging.warning("fit cache %s is unreadable (%s): fitting again", path, e)
      return
    for k, pts, ok in zip(keys, landmarks, fitted):
      self._fits[k.tobytes()] = (pts.astype(np.float32), bool(ok))

  def key(self, image: np.ndarray) -> bytes:
    image = np.ascontiguousarray(image)
    h = hashlib.sha1(f"{self.id}|{image.dtype}|{image.shape}|".encode())
    h.update(image.tobytes())
    return h.digest()

  def fit(self, fitter: Callable[[np.ndarray], tuple[np.ndarray, bool]], image: np.ndarray
          ) -> tuple[np.ndarray, bool]:
    """`fitter(image)`, or what it gave for these very pixels before."""
    k = self.key(image)
    kept = self._fits.get(k)
    if kept is not None:
      self.hits += 1
      return kept[0].copy(), kept[1]
    pts, ok = fitter(image)
    self._fits[k] = (np.asarray(pts, np.float32).copy(), bool(ok))
    self.new += 1
    return pts, ok

  def save(self) -> pathlib.Path | None:
    """Writes every fit this cache knows to its process's file, if any is new."""
    if self.folder is None or not self.new:
      return None
    self.folder.mkdir(parents=True, exist_ok=True)
    path = self.folder / f"{self.prefix}-p{self.process_index}.npz"
    keys = list(self._fits)
    with files.atomic_path(path) as tmp, open(tmp, "wb") as f:
      # The digests as [n, 20] uint8 (numpy's bytes dtype would drop a trailing zero byte).
      np.savez(f, keys=np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), -1),
               landmarks=np.stack([self._fits[k][0] for k in keys]),
               fitted=np.array([self._fits[k][1] for k in keys]))
    self.new = 0
    return path
