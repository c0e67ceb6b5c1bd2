"""One prediction's outputs as its frames come in: the per-frame writing and counting that ties
`outputs.py` (rows, annotation) and `timelines.py` (tracks, windows) together, under the
options (`predict.annotate`, `blur_faces`, `aggregate_only`, `min_group`, `window_s`). A
video's class timeline (class_timeline.csv) is rewritten as each window closes, so that it can
be read while a long video runs.
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterable, Iterator

from absl import logging
import numpy as np

from fer_jax import files
from fer_jax.predict.inputs import Frame, Input
from fer_jax.predict import outputs
from fer_jax.predict import timelines
from fer_jax.predict import tracking


class Recorder:
  """What one prediction writes and counts as its frames come in, in order: rows (flushed by
  `flush`), tracks, windows and annotated images; `finish` writes the tracks, the class
  timeline or shares and summary.json."""

  def __init__(self, opts, out_dir: pathlib.Path, inp: Input, class_names, branch_names,
               landmark_source: str, kept: Iterable[dict[str, Any]] | None = None,
               start: int = 0):
    """`kept`, `start`: the rows of a cut run of the same video that this one continues from
    frame `start` (`outputs.cut_run`), read once: copied into the new faces.jsonl/csv as its
    counts, tracks and windows are rebuilt from them."""
    self.stopped_by = None  # the signal that ended the run before its input did, if any
    self.opts, self.out_dir, self.inp = opts, out_dir, inp
    self.class_names, self.branch_names = class_names, branch_names
    self.landmark_source = landmark_source
    self.is_video = inp.kind == "video"
    self.aggregate = bool(opts.aggregate_only)
    self.annotate = bool(opts.annotate) and not self.aggregate
    self.resumed_at = int(start) if kept is not None else None
    self.tracker = tracking.TrackerState() if self.is_video and not self.aggregate else None
    self.series: dict[int, dict[str, list]] = {}
    self.windows: dict[int, timelines.Window] = {}
    self.counts = dict(frames=0, faces=0, no_face_frames=0, edge_faces=0)
    self.eval_flip = None  # set by the caller: whether the model averaged with mirror images
    self.label_counts = {c: 0 for c in class_names}
    self.annotated_images: list[str] = []
    self.last_index = 0
    self._open_window = None  # the window of the latest frame (a video's windows only grow)
    replayed = None if kept is None else self._replayed(kept)
    self.rows = (None if self.aggregate else
                 outputs.RowWriter(out_dir, outputs.table_columns(class_names, branch_names),
                                   replayed))
    if self.rows is None and replayed is not None:
      for _ in replayed:  # an aggregate-only run keeps no rows: nothing to replay
        pass
    video_name = ("annotated.mp4" if not self.resumed_at else
                  outputs.RESUMED_VIDEO.format(frame=self.resumed_at))
    self.video_out = (outputs.VideoOut(out_dir / video_name, inp.fps / inp.stride)
                      if self.is_video and self.annotate else None)

  def _replayed(self, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`rows`, passed on one by one, each frame's replayed once its rows are all seen."""
    group: list[dict[str, Any]] = []
    for row in rows:
      if group and row["frame"] != group[0]["frame"]:
        self._replay(group)
        group = []
      group.append(row)
      yield row
    if group:
      self._replay(group)

  def record(self, frame: Frame, faces, probs, mu) -> None:
    """One frame's faces and predictions: rows, tracks, its window and its annotation (`mu`
    holds the weights of `branch_names` first: a one-branch model's single weight is not
    recorded)."""
    mu = (np.asarray(mu).reshape(len(faces), -1)[:, :len(self.branch_names)] if len(faces)
          else np.zeros((0, len(self.branch_names))))
    ids = self._track([f.box for f in faces])
    if self.rows is not None:
      if not faces:
        self.rows.write(outputs.face_row(frame, None, None, None, None, None, self.class_names,
                                         self.branch_names, self.landmark_source))
      for j, (face, p, m, tid) in enumerate(zip(faces, probs, mu, ids)):
        self.rows.write(outputs.face_row(frame, j, face, p, m, tid, self.class_names,
                                         self.branch_names, self.landmark_source))
    self._count(frame.source, frame.index, frame.time, probs, mu, ids, [f.edge for f in faces])
    if self.annotate:
      image = outputs.annotated(frame.image, faces, probs, mu, ids, self.class_names,
                                self.branch_names, blur=bool(self.opts.blur_faces))
      if self.video_out is not None:
        self.video_out.write(image)
      else:
        self.annotated_images.append(outputs.write_image(
            self.out_dir / f"{frame.stem}{outputs.ANNOTATED_SUFFIX}", image))

  def _track(self, boxes) -> list[int | None]:
    """Track ids of this frame's boxes (None for each when nothing is tracked)."""
    if self.tracker is None:
      return [None] * len(boxes)
    self.tracker, ids = tracking.update(self.tracker, boxes, self.counts["frames"],
                                        self.opts.iou_threshold, int(self.opts.max_track_gap))
    return ids

  def _count(self, source: str, index: int, time, probs, mu, ids, edges) -> None:
    """A frame's faces into the counts, the tracks' series and the frame's window."""
    for p, m, tid, edge in zip(probs, mu, ids, edges):
      self.label_counts[self.class_names[int(np.argmax(p))]] += 1
      self.counts["edge_faces"] += int(edge)
      if tid is not None:
        s = self.series.setdefault(tid, dict(times=[], frames=[], probs=[], mu=[]))
        s["times"].append(time)
        s["frames"].append(index)
        s["probs"].append(p)
        s["mu"].append(m)
    self.counts["faces"] += len(probs)
    self.counts["no_face_frames"] += int(not len(probs))
    key = (timelines.window_index(time, self.opts.window_s) if self.is_video
           else self.counts["frames"])
    if self.is_video and self._open_window is not None and key > self._open_window:
      self._timeline_so_far()  # the windows before this frame's are closed
    self._open_window = key
    eye = timelines.eye_weights(mu, self.branch_names) if len(probs) else np.zeros(0)
    self.windows[key] = timelines.add_frame(self.windows.get(key), source, probs, eye,
                                            len(self.class_names))
    self.counts["frames"] += 1
    self.last_index = index

  def _replay(self, rows: list[dict[str, Any]]) -> None:
    """A kept frame's rows (a resumed run) into the tracker, counts, series and windows, as
    `record` put them there; the track ids the rows hold are checked against the replay."""
    faces = [r for r in rows if not r.get("no_face")]
    probs = np.array([[r[c] for c in self.class_names] for r in faces]).reshape(
        -1, len(self.class_names))
    mu = np.array([[r.get(f"mu_{b}", 1.0) for b in self.branch_names] for r in faces]).reshape(
        -1, len(self.branch_names))
    ids = self._track([r["box"] for r in faces])
    if [r.get("track") for r in faces] != ids:
      logging.warning("frame %d: the tracks replayed from faces.jsonl (%s) are not the ones "
                      "written (%s); the resumed run goes on with the replayed ones",
                      rows[0]["frame"], ids, [r.get("track") for r in faces])
    index = rows[0]["frame"]  # its time as `record` had it (the rows' is rounded)
    self._count(rows[0]["source"], index, index / self.inp.fps, probs, mu, ids,
                [bool(r.get("edge")) for r in faces])

  def _timeline_so_far(self) -> None:
    """class_timeline.csv of the windows closed so far, rewritten whole (atomically) as each
    window closes, so that an hours-long video's class timeline can be read while it runs;
    `finish` writes the last window and the PNG."""
    least = int(self.opts.min_group) if self.aggregate else 0
    end_s = (self._open_window + 1) * self.opts.window_s
    rows, _ = timelines.window_rows(self.windows, self.class_names, least, self.opts.window_s,
                                    end_s)
    timelines.write_windows(self.out_dir / "class_timeline.csv", rows, self.class_names)

  def flush(self) -> None:
    if self.rows is not None:
      self.rows.flush()

  def close(self) -> None:
    if self.rows is not None:
      self.rows.close()
    if self.video_out is not None:
      self.video_out.close()

  def finish(self, workdir: str, step: int, seconds: float) -> dict[str, Any]:
    """Tracks, the class timeline or shares, and summary.json; returns the summary."""
    inp, opts, names = self.inp, self.opts, self.class_names
    least = int(opts.min_group) if self.aggregate else 0
    windows_written, dropped = 0, []
    if self.is_video:
      end_s = (inp.frame_count if inp.frame_count and not inp.stopped_early
             and not self.stopped_by
               else self.last_index + 1) / inp.fps
      rows, dropped = timelines.window_rows(self.windows, names, least, opts.window_s, end_s)
      shown = inp.name if inp.live else inp.path.name
      title = (f"{shown}: {len(rows)} window{'s' * (len(rows) != 1)} of {opts.window_s:g} s" +
               (f" ({len(dropped)} under {least} faces left out)" if dropped else ""))
      timelines.write_class_timeline(self.out_dir, rows, names, title)
      windows_written = len(rows)
    elif self.aggregate:
      rows, dropped = timelines.window_rows(self.windows, names, least)
      timelines.write_windows(self.out_dir / "class_shares.csv", rows, names)
      windows_written = len(rows)
    summary = dict(
        input=inp.name, kind=inp.kind, output=str(self.out_dir), workdir=str(workdir),
        checkpoint_step=int(step), landmark_source=self.landmark_source,
        detector=str(opts.detector), min_face_size=int(opts.min_face_size),
        detect_every=int(opts.detect_every) if self.is_video else 1, eval_flip=self.eval_flip,
        aggregate_only=self.aggregate, blur_faces=bool(opts.blur_faces), **self.counts,
        label_counts=self.label_counts, fps=inp.fps, frame_stride=int(opts.frame_stride),
        stopped_early=inp.stopped_early, stopped_by=self.stopped_by, skipped=inp.skipped,
        annotated=(str(self.video_out.path) if self.video_out else self.annotated_images),
        resumed_at=self.resumed_at)
    if self.resumed_at and self.video_out is not None:  # the video's annotation, part by part
      summary["annotated"] = [str(p) for p in sorted(
          outputs.earlier_results(self.out_dir), key=lambda p: (p.name != "annotated.mp4",
                                                                len(p.name), p.name))
          if p.suffix == ".mp4"]
    if self.tracker is not None:
      summary["tracks"] = len(timelines.write_tracks(self.out_dir, self.series, names,
                                                     self.branch_names))
    elif not self.aggregate:
      summary["tracks"] = 0
    if self.is_video or self.aggregate:
      summary.update(windows=windows_written, windows_left_out=len(dropped))
      summary.update(window_s=float(opts.window_s) if self.is_video else None)
    if self.aggregate:  # class-level counts only: nothing that could single out one face
      summary.update(min_group=int(opts.min_group))
      for key in ("label_counts", "edge_faces"):
        summary.pop(key)
    summary["seconds"] = round(seconds, 3)
    files.write_json(self.out_dir / "summary.json", summary)
    return summary

