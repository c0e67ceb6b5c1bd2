"""`--mode=predict`: photos and videos -> per-face expressions and branch weights.

    python main.py --workdir=RUN --mode=predict --input=PATH --output=DIR \
        [--checkpoint=best] [--config.predict.frame_stride=2 ...]

The input is an image, a folder of images (sorted by name) or a video (anything OpenCV's
VideoCapture reads; time = frame index / fps). In every frame, each face is detected, its 68
landmarks fitted (`config.predict.landmarks`: face-alignment when its weights are on this
machine, else dlib), and it is aligned onto the FERPlus template at 48 px in grey, as the
training faces are. The five crops are then cut exactly as in evaluation (the occluder of face
number k is drawn from `fold_in(key(data.eval_occluder_seed), k)`) and the checkpoint's model
runs in jitted batches of a fixed size, so that it compiles once.

The model, the crops and the seed come from the checkpoint's own config (its `meta` item, else
WORKDIR/config.json); only `config.predict` is read from the config given on the command line.

Written to the output folder:
- `faces.jsonl`, `faces.csv`: a row per face and frame (source, frame, time, track, box,
  score, landmarks, the 8 class probabilities by name, label, label_prob, the branch weights
  as mu_<branch>, landmark_source, edge), and a `no_face` row for a frame without a face.
  Rows are flushed as frames finish, so a crash keeps what was processed.
- `<stem>_annotated.jpg` per image, or `annotated.mp4` for a video (`predict.annotate`).
  Images of a folder that share a stem (`a.png`, `a.jpg`) are told apart by their extension:
  `a_png_annotated.jpg`, `a_jpg_annotated.jpg` (a name still taken gets `_2`, `_3`, ... in the
  order of the files); a unique stem keeps `<stem>_annotated.jpg`.
- Video only: `tracks.csv`, `tracks.json` (a row per IoU track: frames seen, first and last
  time, the share of each expression as label, mean probabilities, mean branch weights) and
  `tracks/track_<id>.png` (expression probabilities and eye weight over time).
- `summary.json`: what ran (checkpoint step, landmark source) and the counts.

Earlier results are never destroyed by accident: an output folder that already holds any of
these files is refused (before the model loads) unless `predict.overwrite` is set; then exactly
these files of the earlier run are removed before writing, so that none of them is mixed in
with the new ones, and anything else in the folder is left alone.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import pathlib
import time
from typing import Any, Iterator, Mapping

from absl import logging
import cv2
import jax
import ml_collections
import numpy as np
import tqdm

from fer_jax import annotate
from fer_jax import checkpoint as ckpt_lib
from fer_jax import evaluate
from fer_jax import parallel
from fer_jax import plots
from fer_jax import state as state_lib
from fer_jax import tracking
from fer_jax.data import ferplus
from fer_jax.data import labels as labels_lib
from fer_jax.data import landmarks as landmarks_lib

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
FACE_SIZE = ferplus.FACE_SIZE  # the side of the aligned training faces
EYE_BRANCH = "eyes"
MAX_PENDING_FRAMES = 64  # frames held back at most while a batch of faces fills up
# What predict writes into its output folder (the module docstring): names, the suffix of the
# annotated images, and the folder of track plots with the pattern of its files.
OUTPUT_FILES = ("faces.jsonl", "faces.csv", "summary.json", "tracks.csv", "tracks.json",
                "annotated.mp4")
ANNOTATED_SUFFIX = "_annotated.jpg"
TRACKS_DIR, TRACK_PLOTS = "tracks", "track_*.png"


# --------------------------------------------------------------------------------------------
# Options and the model.

def options(overrides: ml_collections.ConfigDict | Mapping | None = None
            ) -> ml_collections.ConfigDict:
  """`config.predict` of configs/default.py, updated with `overrides.predict`, checked."""
  from configs import default as default_config  # pylint: disable=g-import-not-at-top
  opts = default_config.get_config().predict
  given = overrides.get("predict") if overrides is not None else None
  if given is not None:
    given = given.to_dict() if hasattr(given, "to_dict") else dict(given)
    unknown = set(given) - set(opts.keys())
    if unknown:
      raise KeyError(f"unknown key(s) in config.predict: {sorted(unknown)}; "
                     f"known: {sorted(opts.keys())}")
    opts.update(given)
  if opts.landmarks not in landmarks_lib.SOURCES:
    raise ValueError(f"config.predict.landmarks must be one of {landmarks_lib.SOURCES}, "
                     f"got {opts.landmarks!r}")
  for name, least in (("frame_stride", 1), ("batch_size", 1), ("max_faces", 1),
                      ("min_face_size", 0), ("detector_upsample", 0), ("max_track_gap", 0)):
    if int(opts[name]) < least:
      raise ValueError(f"config.predict.{name} must be >= {least}, got {opts[name]}")
  if not 0 < opts.iou_threshold <= 1:
    raise ValueError(f"config.predict.iou_threshold must be in (0, 1], got {opts.iou_threshold}")
  if not isinstance(opts.overwrite, (bool, np.bool_)):
    raise ValueError(f"config.predict.overwrite must be True or False, got {opts.overwrite!r}")
  return opts


def run_config(workdir: str, mgr, step: int) -> ml_collections.ConfigDict:
  """The config a checkpoint was trained with (its `meta` item, else WORKDIR/config.json),
  laid over configs/default.py so that a checkpoint of an older fer_jax still loads: keys the
  run did not know keep their defaults, keys this version no longer has are ignored."""
  saved = ckpt_lib.read_meta(mgr, step).get("config")
  if not saved:
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
      raise FileNotFoundError(f"checkpoint {step} in {mgr.directory} carries no config and "
                              f"{path} does not exist: cannot tell which model it holds")
    saved = json.loads(path.read_text())
  from configs import default as default_config  # pylint: disable=g-import-not-at-top
  config = default_config.get_config()
  ignored = _overlay(config, saved, "config")
  if ignored:
    logging.info("the checkpoint's config has keys this version ignores: %s", ignored)
  return config


def _overlay(config: ml_collections.ConfigDict, saved: Mapping, prefix: str) -> list[str]:
  ignored = []
  for key, value in saved.items():
    if key not in config:
      ignored.append(f"{prefix}.{key}")
    elif isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
      ignored += _overlay(config[key], value, f"{prefix}.{key}")
    else:
      old = config[key]
      value = tuple(value) if isinstance(value, list) and isinstance(old, tuple) else value
      try:
        config[key] = value
      except TypeError:  # e.g. an int where this version keeps a float
        config[key] = type(old)(value)
  return ignored


def load_checkpoint(workdir: str, which: str | int = "latest"
                    ) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """(the run's config, the model variables, the step) of a checkpoint of `workdir`."""
  mgr = ckpt_lib.manager(workdir, read_only=True)

  def restore(step):
    config = run_config(workdir, mgr, step)
    return config, evaluate.restore_variables(config, mgr, step, parallel.make_mesh())

  step, (config, variables) = ckpt_lib.restore_first(mgr, which, restore)
  return config, variables, step


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


# --------------------------------------------------------------------------------------------
# Faces in a frame.

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


# --------------------------------------------------------------------------------------------
# Inputs.

@dataclasses.dataclass
class Frame:
  """One frame to process: where it came from, its number and time, the BGR image and the
  stem of its annotated image (`<stem>_annotated.jpg`, unique within the input)."""
  source: str
  index: int
  time: float | None
  image: np.ndarray
  stem: str


class Input:
  """An image, a folder of images or a video, checked when opened; `frames()` yields them.

  After iteration, `stopped_early` says whether a video stopped on a frame that failed to
  decode, and `skipped` lists the images of a folder that could not be read.
  """

  def __init__(self, path: str, frame_stride: int = 1):
    self.path = pathlib.Path(path)
    self.stride = int(frame_stride)
    self.stopped_early = False
    self.skipped: list[str] = []
    self.fps, self.size = None, None
    self._first = None
    if not self.path.exists():
      raise FileNotFoundError(f"input {self.path} does not exist")
    if self.path.is_dir():
      self.kind = "folder"
      self.files = sorted(p for p in self.path.iterdir()
                          if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
      if not self.files:
        raise ValueError(f"input folder {self.path} holds no images "
                         f"(looked for {', '.join(IMAGE_EXTS)})")
      self.total = len(self.files)
      self.stems = output_stems(self.files)
      return
    suffix = self.path.suffix.lower()
    if suffix not in VIDEO_EXTS:
      image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
      if image is not None:
        self.kind, self.files, self.total, self._first = "image", [self.path], 1, image
        self.stems = [self.path.stem]
        return
      if suffix in IMAGE_EXTS:
        raise ValueError(f"cannot read image {self.path}: not a readable image file")
    self.kind = "video"
    self._cap = cv2.VideoCapture(str(self.path))
    ok, frame = self._cap.read() if self._cap.isOpened() else (False, None)
    if not ok or frame is None:
      self._cap.release()
      what = "a video" if suffix in VIDEO_EXTS else "an image nor a video"
      raise ValueError(f"{self.path}: no frames (OpenCV decodes no frame of it as {what})")
    self._first = frame
    fps = self._cap.get(cv2.CAP_PROP_FPS)
    if not fps or not math.isfinite(fps) or fps <= 0:
      logging.warning("%s does not say its frame rate; assuming 25 fps", self.path)
      fps = 25.0
    self.fps = float(fps)
    self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    self.total = -(-self.frame_count // self.stride) if self.frame_count > 0 else None
    self.size = (frame.shape[1], frame.shape[0])
    self.files, self.stems = [self.path], [self.path.stem]

  def close(self) -> None:
    """Releases the video (also done when `frames()` finishes)."""
    if self.kind == "video":
      self._cap.release()

  def frames(self) -> Iterator[Frame]:
    if self.kind == "video":
      yield from self._video_frames()
      return
    for i, path in enumerate(self.files):
      image = self._first if (i == 0 and self._first is not None) else cv2.imread(
          str(path), cv2.IMREAD_COLOR)
      if image is None:
        logging.warning("skipped %s: not a readable image file", path)
        self.skipped.append(str(path))
        continue
      yield Frame(path.name, 0, None, image, self.stems[i])

  def _video_frames(self) -> Iterator[Frame]:
    cap, index, frame = self._cap, 0, self._first
    self._first = None
    processed = 0  # frames yielded: every stride-th frame of the video
    try:
      while True:
        yield Frame(self.path.name, index, index / self.fps, frame, self.path.stem)
        processed += 1
        ok = True
        for _ in range(self.stride - 1):  # skipped frames are demuxed, not decoded
          index += 1
          if not cap.grab():
            ok = False
            break
        if ok:
          index += 1
          try:
            ok, frame = cap.read()
          except cv2.error as e:  # pragma: no cover - depends on the codec
            logging.warning("%s: frame %d failed to decode (%s)", self.path, index, e)
            ok = False
        if not ok or frame is None:
          if self.frame_count and index < self.frame_count:
            logging.warning("%s: frame %d of %d failed to decode; stopping here and keeping "
                            "the %d frames processed", self.path, index, self.frame_count,
                            processed)
            self.stopped_early = True
          return
    finally:
      cap.release()


def output_stems(files) -> list[str]:
  """The stem of each file's annotated image, distinct (case-insensitively) and deterministic:
  the file's stem when no other file has it, else its name with dots as underscores
  (`a.png` -> `a_png`); such a name that is still taken gets `_2`, `_3`, ... in the order of
  `files`. A unique stem always keeps its name."""
  files = [pathlib.Path(f) for f in files]
  shared: dict[str, int] = {}
  for f in files:
    shared[f.stem.casefold()] = shared.get(f.stem.casefold(), 0) + 1
  unique = [shared[f.stem.casefold()] == 1 for f in files]
  wanted = [f.stem if u else f.name.replace(".", "_") for f, u in zip(files, unique)]
  used = {w.casefold() for w, u in zip(wanted, unique) if u}
  avoid = used | {w.casefold() for w in wanted}
  out = []
  for w, u in zip(wanted, unique):
    stem, n = w, 1
    while not u and (stem.casefold() in used or (n > 1 and stem.casefold() in avoid)):
      n += 1
      stem = f"{w}_{n}"
    used.add(stem.casefold())
    out.append(stem)
  return out


# --------------------------------------------------------------------------------------------
# Outputs.

def earlier_results(out_dir: pathlib.Path) -> list[pathlib.Path]:
  """The files of `out_dir` that predict writes (OUTPUT_FILES, *_annotated.jpg and
  tracks/track_*.png), sorted; nothing else."""
  if not out_dir.is_dir():
    return []
  found = [p for p in out_dir.iterdir()
           if p.name in OUTPUT_FILES or (p.name.endswith(ANNOTATED_SUFFIX) and not p.is_dir())]
  tracks = out_dir / TRACKS_DIR
  if tracks.is_dir():
    found += [p for p in tracks.glob(TRACK_PLOTS) if not p.is_dir()]
  return sorted(found)


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


def table_columns(class_names, branch_names) -> list[str]:
  """The columns of faces.csv (faces.jsonl holds the same keys, with `box` and `landmarks` as
  lists instead of x0..y1 and a JSON string)."""
  return (["source", "frame", "time", "track", "face", "no_face", "x0", "y0", "x1", "y1",
           "score"] + list(class_names) + ["label", "label_prob"] +
          [f"mu_{b}" for b in branch_names] + ["landmark_source", "edge", "landmarks"])


def face_row(frame: Frame, face_no: int | None, face: FoundFace | None, probs, mu, track,
             class_names, branch_names, landmark_source: str) -> dict[str, Any]:
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
  """faces.jsonl and faces.csv, each row flushed to disk as it is written."""

  def __init__(self, out_dir: pathlib.Path, columns: list[str]):
    self._jsonl = open(out_dir / "faces.jsonl", "w")
    self._csv_file = open(out_dir / "faces.csv", "w", newline="")
    self._csv = csv.DictWriter(self._csv_file, columns)
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


class VideoOut:
  """annotated.mp4 (mp4v), opened on the first frame."""

  def __init__(self, path: pathlib.Path, fps: float):
    self.path, self.fps, self._writer, self.frames = path, fps, None, 0

  def write(self, image: np.ndarray) -> None:
    if self._writer is None:
      h, w = image.shape[:2]
      self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                     (w, h))
      if not self._writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {self.path} (mp4v)")
    self._writer.write(image)
    self.frames += 1

  def close(self) -> None:
    if self._writer is not None:
      self._writer.release()


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
  (out_dir / "tracks.json").write_text(json.dumps(summaries, indent=1))
  columns = (["track", "frames_seen", "first_frame", "last_frame", "first_time", "last_time",
              "top_label"] + [f"share_{c}" for c in class_names] +
             [f"mean_{c}" for c in class_names] + ["mean_eye_weight"] +
             [f"mean_mu_{b}" for b in branch_names])
  with open(out_dir / "tracks.csv", "w", newline="") as f:
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
      mu = np.asarray(data["mu"])
      eye = (mu[:, list(branch_names).index(EYE_BRANCH)] if EYE_BRANCH in branch_names
             else np.full(len(mu), np.nan))
      plots.track_timeline(np.asarray(data["times"]), np.asarray(data["probs"]), eye,
                           class_names, out_dir / "tracks" / f"track_{tid}.png",
                           title=f"track {tid}: {s['frames_seen']} frames, "
                                 f"{s['first_time']:.1f}-{s['last_time']:.1f} s, "
                                 f"mostly {s['top_label']}")
  return summaries


# --------------------------------------------------------------------------------------------
# The run.

def predict(workdir: str, input_path: str, output_dir: str, checkpoint: str | int = "latest",
            overrides: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
  """Runs a checkpoint of `workdir` over the faces of `input_path`; writes `output_dir`.

  Args:
    workdir: the training run (its checkpoints and config).
    input_path: an image, a folder of images or a video.
    output_dir: created if absent; see the module docstring for what is written.
    checkpoint: `latest`, `best` or a step number.
    overrides: a config whose `predict` ConfigDict sets the options (configs/default.py).

  Returns:
    The summary (also written to `output_dir/summary.json`).

  Raises:
    FileNotFoundError: the input or the checkpoint does not exist.
    ValueError: the input is unreadable (a video with no frames, a folder without images), the
      output is a file, or it holds earlier results and `predict.overwrite` is not set.
  """
  start = time.time()
  opts = options(overrides)
  out_dir = pathlib.Path(output_dir)
  inp = Input(input_path, opts.frame_stride)  # bad input fails before the model loads
  try:
    stale = check_output(out_dir, bool(opts.overwrite), inp.files)  # so does a bad output
    config, variables, step = load_checkpoint(workdir, checkpoint)
    source = landmarks_lib.best_available(opts.landmarks,
                                          weights_dir=opts.face_alignment_dir or None,
                                          upsample=int(opts.detector_upsample))
  except BaseException:
    inp.close()
    raise
  if source.name != opts.landmarks:
    logging.warning("landmarks: %s cannot run here; using %s", opts.landmarks, source.name)
  classify = make_classifier(config, variables, int(opts.batch_size))
  class_names = list(labels_lib.CLASS_NAMES)
  branch_names = list(config.data.crops.branches)
  out_dir.mkdir(parents=True, exist_ok=True)
  remove_results(out_dir, stale)  # only with overwrite: no earlier file is left mixed in
  is_video = inp.kind == "video"

  rows = RowWriter(out_dir, table_columns(class_names, branch_names))
  video_out = (VideoOut(out_dir / "annotated.mp4", inp.fps / inp.stride)
               if is_video and opts.annotate else None)
  tracker = tracking.TrackerState()
  series: dict[int, dict[str, list]] = {}
  counts = dict(frames=0, faces=0, no_face_frames=0, edge_faces=0)
  label_counts = {c: 0 for c in class_names}
  pending: list[tuple[Frame, list[FoundFace], int]] = []  # (frame, faces, first face number)
  annotated_images: list[str] = []

  def flush_pending():
    """Classifies the faces of the pending frames, then writes those frames in order."""
    nonlocal tracker
    faces = [f for _, fs, _ in pending for f in fs]
    if faces:
      first = pending[0][2]
      probs, mu = classify(np.stack([f.aligned for f in faces]),
                           np.stack([f.aligned_landmarks for f in faces]),
                           np.arange(first, first + len(faces)))
    k = 0
    for frame, fs, _ in pending:
      ids = [None] * len(fs)
      if is_video:
        tracker, ids = tracking.update(tracker, [f.box for f in fs], counts["frames"],
                                       opts.iou_threshold, int(opts.max_track_gap))
      drawn = []
      if not fs:
        rows.write(face_row(frame, None, None, None, None, None, class_names, branch_names,
                            source.name))
        counts["no_face_frames"] += 1
      for j, (face, tid) in enumerate(zip(fs, ids)):
        p, m = probs[k], mu[k]
        k += 1
        row = face_row(frame, j, face, p, m, tid, class_names, branch_names, source.name)
        rows.write(row)
        counts["faces"] += 1
        counts["edge_faces"] += int(face.edge)
        label_counts[row["label"]] += 1
        drawn.append(dict(box=face.box, label_index=int(np.argmax(p)), prob=row["label_prob"],
                          weights=m, track=tid, landmarks=face.landmarks, edge=face.edge))
        if tid is not None:
          s = series.setdefault(tid, dict(times=[], frames=[], probs=[], mu=[]))
          s["times"].append(frame.time)
          s["frames"].append(frame.index)
          s["probs"].append(p)
          s["mu"].append(m)
      counts["frames"] += 1
      if opts.annotate:
        image = (annotate.draw_faces(frame.image, drawn, branch_names, class_names) if fs
                 else annotate.no_face(frame.image))
        if is_video:
          video_out.write(image)
        else:
          path = out_dir / f"{frame.stem}_annotated.jpg"
          cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
          annotated_images.append(str(path))
    rows.flush()
    pending.clear()

  next_face = 0
  try:
    bar = tqdm.tqdm(inp.frames(), total=inp.total, unit="frame", desc="predict",
                    mininterval=1.0)
    for frame in bar:
      rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
      fs = find_faces(source, rgb, int(opts.min_face_size), int(opts.max_faces))
      pending.append((frame, fs, next_face))
      next_face += len(fs)
      if (sum(len(f) for _, f, _ in pending) >= opts.batch_size or
          len(pending) >= MAX_PENDING_FRAMES):
        flush_pending()
    flush_pending()
  finally:
    rows.close()
    if video_out is not None:
      video_out.close()

  summaries = (write_tracks(out_dir, series, class_names, branch_names)
               if is_video else [])
  seconds = time.time() - start
  summary = dict(
      input=str(inp.path), kind=inp.kind, output=str(out_dir), workdir=str(workdir),
      checkpoint_step=int(step), landmark_source=source.name, **counts,
      label_counts=label_counts, tracks=len(summaries), fps=inp.fps,
      frame_stride=int(opts.frame_stride), stopped_early=inp.stopped_early,
      skipped=inp.skipped, annotated=(str(video_out.path) if video_out else annotated_images),
      seconds=round(seconds, 3))
  if counts["frames"] == 0:
    raise ValueError(f"{inp.path}: no frames could be read (skipped: {inp.skipped})")
  (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
  logging.info("predict: %d %s, %d faces (%d frames without one, %d at an edge%s), "
               "landmarks %s, checkpoint %d, %.1fs -> %s",
               counts["frames"], ("frame" if is_video else "image") +
               ("s" if counts["frames"] != 1 else ""), counts["faces"],
               counts["no_face_frames"], counts["edge_faces"],
               f", {len(summaries)} tracks" if is_video else "", source.name, step, seconds,
               out_dir)
  return summary
