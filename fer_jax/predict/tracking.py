"""A small IoU tracker: face boxes, frame after frame, -> track ids.

Greedy matching: every (track, detection) pair with IoU >= `iou_threshold` is considered in
order of decreasing IoU, and a pair is taken when neither side is taken yet. A detection left
over starts a new track; a track that has gone unseen for more than `max_gap` frames ends and
is never matched again. Ids count up from 0 and are never reused.

Pure functions of numpy arrays and an immutable `TrackerState`: `update` returns a new state.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Track:
  """One live track: its id, the box it was last seen at (x0, y0, x1, y1) and that frame."""
  id: int
  box: tuple[float, float, float, float]
  last_seen: int


@dataclasses.dataclass(frozen=True)
class TrackerState:
  """The live tracks and the next unused id."""
  tracks: tuple[Track, ...] = ()
  next_id: int = 0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Intersection over union of every box of `a` [n, 4] with every box of `b` [m, 4] -> [n, m]."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  x0 = np.maximum(a[:, None, 0], b[None, :, 0])
  y0 = np.maximum(a[:, None, 1], b[None, :, 1])
  x1 = np.minimum(a[:, None, 2], b[None, :, 2])
  y1 = np.minimum(a[:, None, 3], b[None, :, 3])
  inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
  area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
  """(row, column) pairs taken greedily by decreasing IoU, each row and column at most once."""
  iou = np.asarray(iou, np.float64)
  rows, cols = np.nonzero(iou >= threshold)
  order = np.argsort(-iou[rows, cols], kind="stable")
  used_r, used_c, pairs = set(), set(), []
  for k in order:
    r, c = int(rows[k]), int(cols[k])
    if r not in used_r and c not in used_c:
      used_r.add(r)
      used_c.add(c)
      pairs.append((r, c))
  return pairs


def update(state: TrackerState, boxes: Sequence, frame: int, iou_threshold: float = 0.3,
           max_gap: int = 10) -> tuple[TrackerState, list[int]]:
  """Assigns a track id to each box seen at `frame`.

  Args:
    state: the tracker before this frame.
    boxes: [n, 4] boxes (x0, y0, x1, y1) of this frame's faces.
    frame: this frame's number (frames must come in increasing order).
    iou_threshold: the least IoU at which a box continues a track.
    max_gap: a track unseen for more than this many frames ends.

  Returns:
    (the new state, one track id per box, in the order of `boxes`).
  """
  if not 0 < iou_threshold <= 1:
    raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
  if max_gap < 0:
    raise ValueError(f"max_gap must be >= 0, got {max_gap}")
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  live = [t for t in state.tracks if frame - t.last_seen - 1 <= max_gap]
  pairs = greedy_match(iou_matrix(np.array([t.box for t in live]).reshape(-1, 4), boxes),
                       iou_threshold) if live and len(boxes) else []
  ids = [-1] * len(boxes)
  moved = {}
  for r, c in pairs:
    ids[c] = live[r].id
    moved[r] = Track(live[r].id, tuple(float(v) for v in boxes[c]), frame)
  next_id = state.next_id
  new = []
  for c in range(len(boxes)):
    if ids[c] < 0:
      ids[c] = next_id
      new.append(Track(next_id, tuple(float(v) for v in boxes[c]), frame))
      next_id += 1
  tracks = tuple(moved.get(r, t) for r, t in enumerate(live)) + tuple(new)
  return TrackerState(tracks, next_id), ids
