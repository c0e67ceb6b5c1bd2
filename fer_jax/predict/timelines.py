"""Faces summed over time: per-student tracks, and the class as a whole window by window.

A track is a face followed across a video's frames by the IoU tracker (`fer_jax/predict/tracking.py`).
A window is `predict.window_s` seconds of a video (window k holds the frames with
k * window_s <= time < (k + 1) * window_s), or one photo of a folder. A window keeps class-level
counts only (frames, faces, faces per label, the sum of the eye weights): no value of any single
face, so `aggregate_only` can write windows and nothing else.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
from typing import Any, Sequence

import numpy as np

from fer_jax import files
from fer_jax import plots

EYE_BRANCH = "eyes"


def eye_weights(mu: np.ndarray, branch_names: Sequence[str]) -> np.ndarray:
  """The `eyes` branch's weight of each face [n] (NaN when the model has no such branch)."""
  mu = np.asarray(mu, np.float64).reshape(len(mu), -1)
  if EYE_BRANCH not in branch_names:
    return np.full(len(mu), np.nan)
  return mu[:, list(branch_names).index(EYE_BRANCH)]


# ---- tracks (video)

def track_summaries(series: dict[int, dict[str, list]], class_names, branch_names
                    ) -> list[dict[str, Any]]:
  """Per track: frames seen, first and last time and frame, the share of frames with each
  expression as label, the mean probabilities and the mean branch weights (eye weight apart)."""
  out = []
  for tid in sorted(series):
    s = series[tid]
    probs, mu = np.asarray(s["probs"], np.float64), np.asarray(s["mu"], np.float64)
    labels = probs.argmax(-1)
    share = np.bincount(labels, minlength=len(class_names)) / len(labels)
    mean_p = probs.mean(0)
    mean_mu = mu.mean(0)
    eye = (float(mean_mu[list(branch_names).index(EYE_BRANCH)])
           if EYE_BRANCH in branch_names else None)
    out.append(dict(
        track=tid, frames_seen=len(labels), first_frame=s["frames"][0],
        last_frame=s["frames"][-1], first_time=round(s["times"][0], 4),
        last_time=round(s["times"][-1], 4), top_label=class_names[int(mean_p.argmax())],
        label_share={c: round(float(v), 4) for c, v in zip(class_names, share)},
        mean_probs={c: round(float(v), 6) for c, v in zip(class_names, mean_p)},
        mean_eye_weight=None if eye is None else round(eye, 6),
        mean_weights={b: round(float(v), 6) for b, v in zip(branch_names, mean_mu)}))
  return out


def write_tracks(out_dir: pathlib.Path, series, class_names, branch_names,
                 make_plots: bool = True) -> list[dict[str, Any]]:
  """tracks.json, tracks.csv and tracks/track_<id>.png of a video."""
  summaries = track_summaries(series, class_names, branch_names)
  files.write_json(out_dir / "tracks.json", summaries)
  columns = (["track", "frames_seen", "first_frame", "last_frame", "first_time", "last_time",
              "top_label"] + [f"share_{c}" for c in class_names] +
             [f"mean_{c}" for c in class_names] + ["mean_eye_weight"] +
             [f"mean_mu_{b}" for b in branch_names])
  with files.atomic_path(out_dir / "tracks.csv") as tmp, open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    for s in summaries:
      flat = {k: v for k, v in s.items() if not isinstance(v, dict)}
      flat.update({f"share_{c}": v for c, v in s["label_share"].items()})
      flat.update({f"mean_{c}": v for c, v in s["mean_probs"].items()})
      flat.update({f"mean_mu_{b}": v for b, v in s["mean_weights"].items()})
      writer.writerow(flat)
  if make_plots:
    for s in summaries:
      tid = s["track"]
      data = series[tid]
      plots.track_timeline(np.asarray(data["times"]), np.asarray(data["probs"]),
                           eye_weights(np.asarray(data["mu"]), branch_names), class_names,
                           out_dir / "tracks" / f"track_{tid}.png",
                           title=f"track {tid}: {s['frames_seen']} frames, "
                                 f"{s['first_time']:.1f}-{s['last_time']:.1f} s, "
                                 f"mostly {s['top_label']}")
  return summaries


# ---- windows (the class as a whole)

@dataclasses.dataclass(frozen=True)
class Window:
  """The class-level counts of one window: frames, faces, faces per label (argmax) and the sum
  of the faces' eye weights."""
  source: str
  frames: int = 0
  faces: int = 0
  labels: tuple[int, ...] = ()
  eye_sum: float = 0.0


def window_index(time: float, window_s: float) -> int:
  """The window of a video time (seconds)."""
  return int(math.floor(time / window_s + 1e-9))


def add_frame(window: Window | None, source: str, probs: np.ndarray, eye: np.ndarray,
              num_classes: int) -> Window:
  """`window` (None: a new one) with one more frame and its faces (probabilities [n, C], eye
  weights [n])."""
  window = window or Window(source, labels=(0,) * num_classes)
  probs = np.asarray(probs, np.float64).reshape(-1, num_classes)
  counts = np.bincount(probs.argmax(-1), minlength=num_classes) if len(probs) else 0
  return dataclasses.replace(
      window, frames=window.frames + 1, faces=window.faces + len(probs),
      labels=tuple(int(v) for v in np.asarray(window.labels) + counts),
      eye_sum=window.eye_sum + float(np.sum(eye)))


def window_columns(class_names) -> list[str]:
  """The columns of class_timeline.csv and class_shares.csv."""
  return (["window", "source", "start_s", "end_s", "frames", "faces"] +
          [f"share_{c}" for c in class_names] + ["mean_eye_weight"])


def window_rows(windows: dict[int, Window], class_names, least: int = 0, window_s=None,
                end_s=None) -> tuple[list[dict[str, Any]], list[int]]:
  """(a row per window, the windows dropped for holding fewer than `least` faces).

  With `window_s` (a video) every window from 0 to the last is listed, a window in which no
  frame was processed as 0 frames, and the bounds are k * window_s to (k + 1) * window_s (the
  last ends at `end_s`); without it (photos) the windows are the photos, without times. Shares
  are the fraction of the window's faces with each label, summing to 1; a window without faces
  has no shares and no eye weight.
  """
  keys = range(max(windows) + 1) if (window_s and windows) else sorted(windows)
  rows, dropped = [], []
  for k in keys:
    w = windows.get(k) or Window(next(iter(windows.values())).source,
                                 labels=(0,) * len(class_names))
    if w.faces < least:
      dropped.append(k)
      continue
    row = dict(window=k, source=w.source, start_s=None, end_s=None, frames=w.frames,
               faces=w.faces)
    if window_s:
      row.update(start_s=round(k * window_s, 4),
                 end_s=round(min((k + 1) * window_s, max(end_s or 0, k * window_s)), 4))
    row.update({f"share_{c}": (round(n / w.faces, 4) if w.faces else None)
                for c, n in zip(class_names, w.labels)})
    eye = w.eye_sum / w.faces if w.faces else float("nan")
    row["mean_eye_weight"] = round(eye, 6) if math.isfinite(eye) else None
    rows.append(row)
  return rows, dropped


def write_windows(path: pathlib.Path, rows: list[dict[str, Any]], class_names) -> str:
  with files.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, window_columns(class_names))
    writer.writeheader()
    writer.writerows(rows)
  return str(path)


def write_class_timeline(out_dir: pathlib.Path, rows: list[dict[str, Any]], class_names,
                         title: str = "", make_plot: bool = True) -> None:
  """class_timeline.csv and class_timeline.png of a video."""
  write_windows(out_dir / "class_timeline.csv", rows, class_names)
  if not make_plot:
    return
  value = lambda v: np.nan if v is None else v
  plots.class_timeline(
      [r["start_s"] for r in rows], [r["end_s"] for r in rows],
      [[value(r[f"share_{c}"]) for c in class_names] for r in rows],
      [value(r["mean_eye_weight"]) for r in rows], [r["faces"] for r in rows], class_names,
      out_dir / "class_timeline.png", title)
