"""Faces of a frame: detected, landmarked, aligned and cropped as the training faces were.

Each face is detected and its 68 landmarks fitted by a landmark source (`data/landmarks.py`:
face-alignment or dlib), then aligned onto the FERPlus template at 48 px in grey. The five
crops are cut later, inside the jitted model (`model.py`), exactly as evaluation cuts them.
"""

from __future__ import annotations

import dataclasses

from absl import logging
import numpy as np

from fer_jax.data import ferplus
from fer_jax.data import landmarks as landmarks_lib

FACE_SIZE = ferplus.FACE_SIZE  # the side of the aligned training faces


@dataclasses.dataclass
class FoundFace:
  """A face of a frame: box and landmarks in frame coordinates, the aligned face and its
  landmarks, the detector's score and whether landmarks fall outside the frame."""
  box: np.ndarray
  landmarks: np.ndarray
  score: float
  edge: bool
  aligned: np.ndarray
  aligned_landmarks: np.ndarray


def outside_frame(points: np.ndarray, shape) -> bool:
  """Whether any (x, y) point lies outside a frame of `shape` (pixel-index coordinates)."""
  h, w = shape[:2]
  p = np.asarray(points, np.float64)
  return bool(np.any((p[:, 0] < -0.5) | (p[:, 0] > w - 0.5) |
                     (p[:, 1] < -0.5) | (p[:, 1] > h - 0.5)))


def find_faces(source, rgb: np.ndarray, min_face_size: int = 24, max_faces: int = 30,
               face_size: int = FACE_SIZE) -> list[FoundFace]:
  """Detects, fits and aligns the faces of an RGB frame, largest first.

  Boxes whose shorter side is under `min_face_size` px are dropped, then all but the
  `max_faces` largest. A face whose landmarks are degenerate (alignment impossible) is skipped
  with a warning; one whose landmarks leave the frame is aligned (borders replicated) and
  flagged `edge`.
  """
  faces = []
  for face in source.detect(rgb):
    box = np.asarray(face.box, np.float32)
    side = min(box[2] - box[0], box[3] - box[1])
    pts = np.asarray(face.landmarks, np.float32)
    if side < min_face_size or pts.shape != (68, 2) or not np.all(np.isfinite(pts)):
      continue
    faces.append((float((box[2] - box[0]) * (box[3] - box[1])), box, pts, face.score))
  faces.sort(key=lambda f: -f[0])
  out = []
  for _, box, pts, score in faces[:max_faces]:
    try:
      aligned, aligned_pts, _ = landmarks_lib.align_face(rgb, pts, face_size, gray=True)
    except ValueError as e:
      logging.warning("skipped a face at %s: %s", np.round(box).tolist(), e)
      continue
    out.append(FoundFace(box, pts, float(score), outside_frame(pts, rgb.shape), aligned,
                         aligned_pts))
  return out
