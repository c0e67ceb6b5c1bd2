"""What predict writes per face and frame: faces.jsonl/csv rows, annotated images and video, and
the bookkeeping that keeps earlier results from being destroyed by accident.

Class-level summaries over time (tracks, the class timeline) are `timelines.py`'s.
"""

from __future__ import annotations

import csv
import json
import pathlib
import queue
import threading
from typing import Any, Iterable, Iterator, Sequence

from absl import logging
import cv2
import numpy as np

from fer_jax import files
from fer_jax.predict import annotate

# Every file predict may write into its output folder (the package docstring): names, the suffix
# of the annotated images, and the folder of track plots with the pattern of its files.
OUTPUT_FILES = ("faces.jsonl", "faces.csv", "summary.json", "tracks.csv", "tracks.json",
                "annotated.mp4", "class_timeline.csv", "class_timeline.png", "class_shares.csv",
                "predict_run.json")
RUN_RECORD = "predict_run.json"  # what a run read and how, written first: a resume must match it
ANNOTATED_SUFFIX = "_annotated.jpg"
RESUMED_VIDEO = "annotated_from_{frame}.mp4"  # a resumed video's annotation, from that frame on
TRACKS_DIR, TRACK_PLOTS = "tracks", "track_*.png"
JPEG_QUALITY = 92


# ---- earlier results

def earlier_results(out_dir: pathlib.Path) -> list[pathlib.Path]:
  """The files of `out_dir` that predict writes (OUTPUT_FILES, *_annotated.jpg and
  tracks/track_*.png), sorted; nothing else."""
  if not out_dir.is_dir():
    return []
  found = [p for p in out_dir.iterdir()
           if p.name in OUTPUT_FILES or (p.name.endswith(ANNOTATED_SUFFIX) and not p.is_dir())
           or (p.name.startswith("annotated_from_") and p.suffix == ".mp4")]
  tracks = out_dir / TRACKS_DIR
  if tracks.is_dir():
    found += [p for p in tracks.glob(TRACK_PLOTS) if not p.is_dir()]
  return sorted(found)


def run_record(inp, workdir: str, checkpoint, opts) -> dict[str, Any]:
  """What a prediction reads and how, as far as it shapes the outputs: the input (its path,
  size, modification time, frames and rate), the model asked for and the options. Written to
  RUN_RECORD before the first frame; a cut run is resumed only by a run with the same record."""
  path = pathlib.Path(inp.path).resolve()
  stat = path.stat() if path.is_file() else None
  return dict(
      input=str(path), size=stat.st_size if stat else None,
      mtime_ns=stat.st_mtime_ns if stat else None, frame_count=inp.frame_count, fps=inp.fps,
      workdir=str(pathlib.Path(workdir).resolve()), checkpoint=str(checkpoint),
      options={f"predict.{k}": (v.to_dict() if hasattr(v, "to_dict") else v)
               for k, v in sorted(opts.items()) if k not in ("overwrite", "batch_size")})


def cut_run(out_dir: pathlib.Path, record: dict[str, Any], stride: int, detect_every: int
            ) -> tuple[Iterator[dict[str, Any]], int] | None:
  """(the rows to keep, read as they are needed; the frame to resume at) of a prediction into
  `out_dir` that was cut short (a SIGKILL, a crash, a SIGTERM: summary.json missing or saying
  `stopped_by`) and whose RUN_RECORD equals `record`; None when `out_dir` holds no such run.

  The run resumes at the last detection frame it reached (processed frames 0, `detect_every`,
  ...), so that detection and following go on as in an uninterrupted run; the rows from there
  on are dropped (the cut may have split a frame's rows, or a line). An aggregate-only run has
  no rows: it starts again from the first frame."""
  try:
    if json.loads((out_dir / RUN_RECORD).read_text()) != json.loads(json.dumps(record)):
      return None
  except (OSError, ValueError):
    return None
  summary = out_dir / "summary.json"
  if summary.exists():
    try:
      if not json.loads(summary.read_text()).get("stopped_by"):
        return None  # a run that finished
    except ValueError:
      pass  # a summary cut mid-write: the run did not finish
  path = out_dir / "faces.jsonl"
  last = None
  if path.is_file():
    for row in _whole_rows(path):
      last = row["frame"]
  if last is None:
    return iter(()), 0
  step = stride * detect_every
  start = (last // step) * step
  return (r for r in _whole_rows(path) if r["frame"] < start), start


def _whole_rows(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  """faces.jsonl's rows in order, read line by line, up to a line a cut left half-written."""
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        return
      if not isinstance(row, dict) or not isinstance(row.get("frame"), int):
        return
      yield row


def check_output(out_dir: pathlib.Path, overwrite: bool, inputs=()) -> list[pathlib.Path]:
  """Fails (ValueError) on an output folder that holds results (`earlier_results`) unless
  `overwrite`; returns the results to remove. (`cli.check_paths` has already made sure that
  the folder is one and takes files.)"""
  results = earlier_results(out_dir)
  if not results:
    return []
  shown = [str(p.relative_to(out_dir)) for p in results]
  listing = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
  if not overwrite:
    raise ValueError(f"output folder {out_dir} already holds the results of a prediction "
                     f"({listing}); pass --config.predict.overwrite=True to replace them, or "
                     "choose another --output")
  folders = [p for p in results if p.is_dir() and not p.is_symlink()]
  if folders:
    raise ValueError(f"cannot overwrite the results in {out_dir}: "
                     f"{', '.join(p.name for p in folders)} is a folder, not a file")
  given = {pathlib.Path(p).resolve() for p in inputs}
  clash = [p for p in results if p.resolve() in given]
  if clash:
    raise ValueError(f"input {clash[0]} lies in output folder {out_dir} under a name predict "
                     "writes; choose another --output")
  return results


def remove_results(out_dir: pathlib.Path, results: list[pathlib.Path]) -> None:
  """Removes the earlier results `check_output` listed (and tracks/ once it is empty)."""
  for p in results:
    p.unlink(missing_ok=True)
  tracks = out_dir / TRACKS_DIR
  if any(p.parent == tracks for p in results) and tracks.is_dir() and not any(tracks.iterdir()):
    tracks.rmdir()
  if results:
    logging.info("overwrite: removed %d earlier result file(s) from %s", len(results), out_dir)


# ---- rows

def table_columns(class_names, branch_names) -> list[str]:
  """The columns of faces.csv (faces.jsonl holds the same keys, with `box` and `landmarks` as
  lists instead of x0..y1 and a JSON string)."""
  return (["source", "frame", "time", "track", "face", "no_face", "x0", "y0", "x1", "y1",
           "score"] + list(class_names) + ["label", "label_prob"] +
          [f"mu_{b}" for b in branch_names] + ["landmark_source", "edge", "landmarks"])


def face_row(frame, face_no: int | None, face, probs, mu, track, class_names, branch_names,
             landmark_source: str) -> dict[str, Any]:
  """One faces.jsonl row: a face of `frame` with its prediction, or a no-face row."""
  row = dict(source=frame.source, frame=frame.index,
             time=None if frame.time is None else round(frame.time, 4), track=track,
             face=face_no, no_face=face is None)
  if face is None:
    row.update(landmark_source=landmark_source)
    return row
  label = int(np.argmax(probs))
  row.update(box=[round(float(v), 1) for v in face.box], score=round(face.score, 4))
  row.update({c: round(float(p), 6) for c, p in zip(class_names, probs)})
  row.update(label=class_names[label], label_prob=round(float(probs[label]), 6))
  row.update({f"mu_{b}": round(float(m), 6) for b, m in zip(branch_names, mu)})
  row.update(landmark_source=landmark_source, edge=face.edge,
             landmarks=np.round(face.landmarks, 2).tolist())
  return row


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
  """A faces.jsonl row flattened for faces.csv."""
  out = {k: v for k, v in row.items() if k not in ("box", "landmarks")}
  if "box" in row:
    out.update(zip(("x0", "y0", "x1", "y1"), row["box"]))
    out["landmarks"] = json.dumps(row["landmarks"], separators=(",", ":"))
  return out


class RowWriter:
  """faces.jsonl and faces.csv, each row flushed to disk as it is written; a resumed run's
  files start with the rows it keeps (`kept`)."""

  def __init__(self, out_dir: pathlib.Path, columns: list[str],
               kept: Iterable[dict[str, Any]] | None = None):
    jsonl_path, csv_path = out_dir / "faces.jsonl", out_dir / "faces.csv"
    if kept is not None:  # the kept rows replace the old files whole, then rows are appended
      with files.atomic_path(jsonl_path) as tmp_jsonl, files.atomic_path(csv_path) as tmp_csv:
        with open(tmp_jsonl, "w") as fj, open(tmp_csv, "w", newline="") as fc:
          writer = csv.DictWriter(fc, columns)
          writer.writeheader()
          for row in kept:  # one pass: a long video's rows are never all in memory
            fj.write(json.dumps(row) + "\n")
            writer.writerow(csv_row(row))
    mode = "w" if kept is None else "a"
    self._jsonl = open(jsonl_path, mode)
    self._csv_file = open(csv_path, mode, newline="")
    self._csv = csv.DictWriter(self._csv_file, columns)
    if kept is None:
      self._csv.writeheader()

  def write(self, row: dict[str, Any]) -> None:
    self._jsonl.write(json.dumps(row) + "\n")
    self._csv.writerow(csv_row(row))

  def flush(self) -> None:
    self._jsonl.flush()
    self._csv_file.flush()

  def close(self) -> None:
    self._jsonl.close()
    self._csv_file.close()


# ---- annotation

def annotated(image: np.ndarray, faces: Sequence, probs, mu, tracks, class_names, branch_names,
              blur: bool = False) -> np.ndarray:
  """`image` with each face's box, label, probability and branch weights drawn (and its
  landmarks, unless `blur`); with `blur`, every face is blurred out first."""
  if blur:
    image = annotate.blur_boxes(image, [f.box for f in faces])
  if not faces:
    return annotate.no_face(image)
  drawn = [dict(box=f.box, label_index=int(np.argmax(p)), prob=round(float(np.max(p)), 6),
                weights=m, track=t, landmarks=None if blur else f.landmarks, edge=f.edge)
           for f, p, m, t in zip(faces, probs, mu, tracks)]
  return annotate.draw_faces(image, drawn, branch_names, class_names)


def write_image(path: pathlib.Path, image: np.ndarray) -> str:
  with files.atomic_path(path, durable=False) as tmp:  # renamed whole; one fsync per image
    if not cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):  # is slow
      raise RuntimeError(f"could not write {path} (a full disk?)")
  return str(path)


class VideoOut:
  """annotated.mp4 (mp4v; a resumed run's `RESUMED_VIDEO`), opened on the first frame. Frames
  are encoded in a background thread (OpenCV's encoder releases Python's lock), at most
  `QUEUE` frames behind the caller; `close` waits for the last and raises an encoder error."""

  QUEUE = 8

  def __init__(self, path: pathlib.Path, fps: float):
    self.path, self.fps, self._writer, self.frames = path, fps, None, 0
    self._queue: queue.Queue = queue.Queue(self.QUEUE)
    self._thread: threading.Thread | None = None
    self._error: BaseException | None = None

  def write(self, image: np.ndarray) -> None:
    if self._error is not None:
      raise RuntimeError(f"could not write {self.path}: {self._error}") from self._error
    if self._writer is None:
      h, w = image.shape[:2]
      self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                     (w, h))
      if not self._writer.isOpened():
        self._writer = None  # a later write tries again rather than queueing for no encoder
        raise RuntimeError(f"OpenCV cannot write {self.path} (mp4v)")
      self._thread = threading.Thread(target=self._encode, name="annotated-video", daemon=True)
      self._thread.start()
    self._queue.put(image)
    self.frames += 1

  def _encode(self) -> None:
    while (image := self._queue.get()) is not None:
      if self._error is None:
        try:
          self._writer.write(image)
        except BaseException as e:  # pylint: disable=broad-except
          self._error = e  # raised by the caller's next write or close

  def close(self) -> None:
    if self._thread is not None:
      self._queue.put(None)
      self._thread.join()
      self._thread = None
    if self._writer is not None:
      self._writer.release()
      self._writer = None
    if self._error is not None:
      raise RuntimeError(f"could not write {self.path}: {self._error}") from self._error
