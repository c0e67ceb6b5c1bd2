"""Faces of a frame: detected, landmarked, aligned and cropped as the training faces were.

A face detector (`fer_jax/predict/detectors.py`, `predict.detector`) gives the boxes; a landmark
source (`data/landmarks.py`: face-alignment or dlib) fits the 68 landmarks inside each box;
the face is then aligned onto the FERPlus template at 48 px in grey. The five crops are cut
later, inside the jitted model (`model.py`), exactly as evaluation cuts them.

In a video, `FaceFinder` runs the detector only on every `detect_every`-th processed frame. On
the frames between, each face of the previous frame is followed: its box is carried along by
its own landmarks (kept in the landmarks' frame, centre and scale, as it was when detected)
and the landmarks are fitted again inside it. The box moves `follow_weight` of the way to where
the landmarks put it (1: all the way; 0: it stays where it was detected): a small face's
landmarks are noisy, and a box that follows them fully wanders off the face over the frames
between detections (bench/RESULTS.md, "Faces followed in video"). A face that enters between two detections is
found at the next one; a followed face whose box leaves the frame or shrinks below
`min_face_size` is dropped.

`FaceFinder.frames` runs the detector ahead, in a background thread, on the next detection
frame while the fits of the frames before it go on in the caller's (the detector's interpreter
and OpenCV release Python's lock, so the two share the cores); what it finds is the same as
frame-by-frame calls.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
from typing import Any, Callable, Iterable, Iterator

from absl import logging
import numpy as np

from fer_jax.data import ferplus
from fer_jax.data import landmarks as landmarks_lib

FACE_SIZE = ferplus.FACE_SIZE  # the side of the aligned training faces


@dataclasses.dataclass
class FoundFace:
  """A face of a frame: box and landmarks in frame coordinates, the aligned face and its
  landmarks, the detector's score, whether landmarks fall outside the frame, and whether the
  box was followed from the previous frame rather than detected in this one."""
  box: np.ndarray
  landmarks: np.ndarray
  score: float
  edge: bool
  aligned: np.ndarray
  aligned_landmarks: np.ndarray
  followed: bool = False
  box_in_landmarks: np.ndarray | None = None  # (box - centre) / scale of the landmarks


def outside_frame(points: np.ndarray, shape) -> bool:
  """Whether any (x, y) point lies outside a frame of `shape` (pixel-index coordinates)."""
  h, w = shape[:2]
  p = np.asarray(points, np.float64)
  return bool(np.any((p[:, 0] < -0.5) | (p[:, 0] > w - 0.5) |
                     (p[:, 1] < -0.5) | (p[:, 1] > h - 0.5)))


def landmark_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
  """The centre (mean) and scale (root mean square distance to it) of landmarks [68, 2]."""
  p = np.asarray(points, np.float64)
  centre = p.mean(0)
  return centre, float(np.sqrt(np.mean(np.sum((p - centre) ** 2, -1))))


def _side(box) -> float:
  return float(min(box[2] - box[0], box[3] - box[1]))


def _faces(source, rgb: np.ndarray, candidates, max_faces: int, face_size: int,
           followed: bool = False) -> list[FoundFace]:
  """(box, score, landmarks or None, box_in_landmarks or None) -> aligned faces, largest
  first. Landmarks missing from a candidate are fitted by `source` inside its box."""
  candidates = sorted(candidates, key=lambda c: -(c[0][2] - c[0][0]) * (c[0][3] - c[0][1]))
  if not candidates:
    return []
  gray = landmarks_lib.to_gray_u8(rgb)  # once for all faces (alignment is in grey)
  fit_on = gray if getattr(source, "fits_gray", False) else rgb
  out = []
  for box, score, pts, rel in candidates[:max_faces]:
    if pts is None:
      pts = np.asarray(source.fit(fit_on, box), np.float32)
    if pts.shape != (68, 2) or not np.all(np.isfinite(pts)):
      continue
    if rel is None:
      centre, scale = landmark_frame(pts)
      rel = (np.asarray(box, np.float64) - np.tile(centre, 2)) / max(scale, 1e-6)
    try:
      aligned, aligned_pts, _ = landmarks_lib.align_face(gray, pts, face_size, gray=True)
    except ValueError as e:
      logging.warning("skipped a face at %s: %s", np.round(box).tolist(), e)
      continue
    out.append(FoundFace(np.asarray(box, np.float32), pts, float(score),
                         outside_frame(pts, rgb.shape), aligned, aligned_pts, followed,
                         rel.astype(np.float32)))
  return out


def find_faces(source, rgb: np.ndarray, min_face_size: int = 24, max_faces: int = 30,
               face_size: int = FACE_SIZE, detect: Callable | None = None,
               detected: list | None = None) -> list[FoundFace]:
  """Detects, fits and aligns the faces of an RGB frame, largest first.

  The boxes come from `detect(rgb) -> [(box, score), ...]` (a `detectors.make_detector`),
  and `source` fits the landmarks inside each; without `detect`, from the landmark source's
  own detector (`source.detect`); `detected` is `detect(rgb)` computed already. Boxes whose
  shorter side is under `min_face_size` px are
  dropped, then all but the `max_faces` largest. A face whose landmarks are degenerate
  (alignment impossible) is skipped with a warning; one whose landmarks leave the frame is
  aligned (borders replicated) and flagged `edge`.
  """
  if detect is not None or detected is not None:
    detected = detect(rgb) if detected is None else detected
    candidates = [(np.asarray(box, np.float32), score, None, None) for box, score in detected]
  else:
    candidates = [(np.asarray(f.box, np.float32), f.score,
                   np.asarray(f.landmarks, np.float32), None) for f in source.detect(rgb)]
  candidates = [c for c in candidates if _side(c[0]) >= min_face_size]
  return _faces(source, rgb, candidates, max_faces, face_size)


class FaceFinder:
  """The faces of consecutive frames of one video (or of independent images, with
  `detect_every=1`): detection every `detect_every`-th call, faces followed in between (see
  the module docstring). One finder per input; it keeps the previous frame's faces."""

  def __init__(self, source, detect: Callable | None, min_face_size: int = 24,
               max_faces: int = 30, detect_every: int = 1, face_size: int = FACE_SIZE,
               min_face_fraction: float = 0.0, follow_weight: float = 1.0):
    if detect_every < 1:
      raise ValueError(f"detect_every must be >= 1, got {detect_every}")
    if not 0.0 <= follow_weight <= 1.0:
      raise ValueError(f"follow_weight must be in [0, 1], got {follow_weight}")
    self.follow_weight = float(follow_weight)
    self.source, self.detect = source, detect
    self.min_face_size, self.max_faces = min_face_size, max_faces
    self.min_face_fraction = min_face_fraction
    self.detect_every, self.face_size = detect_every, face_size
    self.calls, self.detections = 0, 0
    self._previous: list[FoundFace] = []

  def smallest(self, rgb: np.ndarray) -> float:
    """The smallest face kept in this frame (px): `min_face_size`, or `min_face_fraction` of
    the frame's shorter side where that is larger (a 6000x4000 photo: 40 px at 0.01)."""
    return max(float(self.min_face_size), self.min_face_fraction * min(rgb.shape[:2]))

  def __call__(self, rgb: np.ndarray, detected: list | None = None) -> list[FoundFace]:
    """The faces of the next frame; `detected` is `detect(rgb)` when computed already (a
    detection frame only)."""
    if self.calls % self.detect_every == 0:
      faces = find_faces(self.source, rgb, self.smallest(rgb), self.max_faces, self.face_size,
                         self.detect, detected)
      self.detections += 1
    else:
      faces = self._follow(rgb)
    self.calls += 1
    self._previous = faces
    return faces

  def frames(self, items: Iterable[tuple[Any, np.ndarray]]
             ) -> Iterator[tuple[Any, list[FoundFace]]]:
    """(item, RGB frame) pairs -> (item, its faces), in order, as calls one by one would give,
    with the detector on the next detection frame running in a background thread meanwhile
    (up to `detect_every` frames are held back for it)."""
    if self.detect is None:
      for item, rgb in items:
        yield item, self(rgb)
      return
    ahead: collections.deque = collections.deque()
    position = self.calls  # of the next item taken
    entry = None
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="detect") as pool:
      try:
        for item, rgb in items:
          detecting = position % self.detect_every == 0
          position += 1
          entry = (item, rgb, pool.submit(self.detect, rgb) if detecting else None)
          while detecting and ahead:  # the frames before it, while its detector runs
            yield self._next(ahead)
          ahead.append(entry)
          entry = None
        while ahead:
          yield self._next(ahead)
      finally:  # stopped early: no detector left to run
        for *_, future in list(ahead) + ([entry] if entry is not None else []):
          if future is not None:
            future.cancel()

  def _next(self, ahead: collections.deque) -> tuple[Any, list[FoundFace]]:
    item, rgb, future = ahead.popleft()
    return item, self(rgb, future.result() if future is not None else None)

  def _follow(self, rgb: np.ndarray) -> list[FoundFace]:
    h, w = rgb.shape[:2]
    candidates = []
    for face in self._previous:
      centre, scale = landmark_frame(face.landmarks)
      box = np.tile(centre, 2) + face.box_in_landmarks * scale
      box = (self.follow_weight * box + (1 - self.follow_weight) * face.box).astype(np.float32)
      inside = box[0] < w and box[1] < h and box[2] > 0 and box[3] > 0
      if inside and _side(box) >= self.smallest(rgb):
        candidates.append((box, face.score, None, face.box_in_landmarks))
    return _faces(self.source, rgb, candidates, self.max_faces, self.face_size, followed=True)
