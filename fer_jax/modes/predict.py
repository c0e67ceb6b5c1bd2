"""`--mode=predict`: photos and videos -> per-face expressions and branch weights.

    python main.py --workdir=RUN --mode=predict --input=PATH --output=DIR \
        [--checkpoint=best] [--config.predict.frame_stride=2 ...]

One face's way through the package: `inputs.py` (an image, a folder of images sorted by name,
or a video that OpenCV reads, decoded in a background thread; time = frame index / fps) ->
`faces.py` (detected by `predict.detector`: by default MTCNN on photos, BlazeFace on video,
on every `predict.detect_every`-th frame of a video and followed between; 68 landmarks fitted by
face-alignment when its weights are on this machine, else dlib; aligned onto the FERPlus
template at 48 px in grey, as the training faces are) -> `model.py` (the five evaluation
crops, the occluder of each face drawn from `fold_in(key(data.eval_occluder_seed),
face_keys(face))`, a number computed from the aligned face itself, so a face gets the same
output wherever it appears, and the checkpoint's model in jitted batches of a fixed size) -> `outputs.py` (rows, annotation) and `timelines.py` (tracks, the class timeline),
written frame by frame by `recorder.py`.

The model, the crops, the seed and eval_flip come from the checkpoint's own config
(`checkpoint.load_checkpoint`); only `config.predict` is read from the config given on the
command line. `predict.flip` (default `photos`) keeps the checkpoint's mirror average on photos
and folders and skips it on video, where it would double the model's cost on every frame
(`checkpoint`: as the checkpoint says everywhere; `on`, `off`).

Written to the output folder:
- `faces.jsonl`, `faces.csv`: a row per face and frame (source, frame, time, track, box,
  score, landmarks, the 8 class probabilities by name, label, label_prob, the branch weights
  as mu_<branch>, landmark_source, edge), and a `no_face` row for a frame without a face.
  Rows are flushed as frames finish, so a crash keeps what was processed.
- `<stem>_annotated.jpg` per image, or `annotated.mp4` for a video (`predict.annotate`); with
  `predict.blur_faces` every face (its box grown by a fifth on each side) is blurred out under
  its label, and landmarks are not drawn. Images of a folder that share a stem (`a.png`,
  `a.jpg`) are told apart by their extension: `a_png_annotated.jpg`, `a_jpg_annotated.jpg` (a
  name still taken gets `_2`, `_3`, ... in the order of the files); a unique stem keeps
  `<stem>_annotated.jpg`.
- Video only: `tracks.csv`, `tracks.json` (a row per IoU track: frames seen, first and last
  time, the share of each expression as label, mean probabilities, mean branch weights) and
  `tracks/track_<id>.png` (expression probabilities and eye weight over time); and the class
  timeline, `class_timeline.csv` and `.png`: a row per `predict.window_s` window with columns
  window, source, start_s, end_s, frames (processed), faces, share_<class> (the fraction of
  the window's faces with that label; the 8 sum to 1) and mean_eye_weight (the mean mu of the
  `eyes` branch); a window without faces has empty shares.
- `summary.json`: what ran (checkpoint step, landmark source, options) and the counts.

`predict.aggregate_only` writes class-level shares and nothing about any single face: no
faces.jsonl/csv, no tracks (no tracker runs), no annotated images or video at all (a blurred
frame still shows the room and the people), no per-label totals in summary.json. A video
gets its class timeline; a folder (or image) gets `class_shares.csv`, a row per photo (each
photo is its own window, in the columns above, without times). A window with fewer than
`predict.min_group` faces is left out of both.

Earlier results are never destroyed by accident: an output folder that already holds any of
these files is refused (before the model loads) unless `predict.overwrite` is set; then exactly
these files of the earlier run are removed before writing, so that none of them is mixed in
with the new ones, and anything else in the folder is left alone. A video run that was cut
short (summary.json missing or saying `stopped_by`) by a run with the same `predict_run.json`
(the video file, the model flags, the options: `outputs.run_record`) is resumed instead, at the
last detection frame it reached (`outputs.cut_run`, `Recorder`'s replay of the kept rows), its
annotation continuing in `annotated_from_<frame>.mp4`.
"""

from __future__ import annotations

import pathlib
import signal
import time
from typing import Any, Mapping

from absl import logging
import cv2
import ml_collections
import numpy as np
import tqdm

from fer_jax.checkpoint import load_checkpoint
from fer_jax.data import labels as labels_lib
from fer_jax.data import landmarks as landmarks_lib
from fer_jax import defaults
from fer_jax import files
from fer_jax.modes import Args
from fer_jax.predict import detectors
from fer_jax.predict.faces import FaceFinder, FoundFace, find_faces, outside_frame
from fer_jax.predict.inputs import Frame, Input, output_stems
from fer_jax.predict.model import classify_frames, make_classifier
from fer_jax.predict import outputs
from fer_jax.predict import recorder
from fer_jax import validation

__all__ = ["options", "predict", "make_detector", "detector_options", "load_checkpoint",
           "make_classifier", "find_faces", "FaceFinder",
           "FoundFace", "outside_frame", "Frame", "Input", "output_stems"]

BOOLEAN_KEYS = ("overwrite", "annotate", "blur_faces", "aggregate_only", "recursive")


def options(overrides: ml_collections.ConfigDict | Mapping | None = None
            ) -> ml_collections.ConfigDict:
  """`config.predict` of `fer_jax.defaults`, updated with `overrides.predict`, checked."""
  opts = defaults.get_config().predict
  given = overrides.get("predict") if overrides is not None else None
  if given is not None:
    given = given.to_dict() if hasattr(given, "to_dict") else dict(given)
    unknown = set(given) - set(opts.keys())
    if unknown:
      raise KeyError(f"unknown key(s) in config.predict: {sorted(unknown)}; "
                     f"known: {sorted(opts.keys())}")
    for key, value in given.items():
      try:
        opts[key] = value
      except TypeError:
        kind = ("True or False" if isinstance(opts[key], bool) else
                f"a {type(opts[key]).__name__}")
        raise ValueError(f"config.predict.{key} must be {kind}, got {value!r}") from None
  # The ranges and choices of every predict key are validation.py's tables (where a command's
  # config enters too); predict.predict may be called without going through it.
  validation.check_values(ml_collections.ConfigDict(dict(predict=opts)))
  for name in BOOLEAN_KEYS:
    if not isinstance(opts[name], (bool, np.bool_)):
      raise ValueError(f"config.predict.{name} must be True or False, got {opts[name]!r}")
  return opts


# predict.flip -> whether each face is averaged with its mirror image, given the checkpoint's
# eval_flip and the input's kind (image, folder, video: a file, a camera or a stream).
FLIPS = {
    # Photos as the checkpoint says; video without: a face's frames already average its
    # predictions over time, and the mirror doubles the model's cost on every frame.
    "photos": lambda checkpoint, kind: checkpoint and kind != "video",
    "checkpoint": lambda checkpoint, kind: checkpoint,
    "on": lambda checkpoint, kind: True,
    "off": lambda checkpoint, kind: False,
}


def mirror_average(flip: str, checkpoint: bool, kind: str) -> bool:
  """Whether predict averages each face with its mirror image (`FLIPS`)."""
  if flip not in FLIPS:
    raise ValueError(f"config.predict.flip must be one of {', '.join(FLIPS)}, got {flip!r}")
  return FLIPS[flip](checkpoint, kind)


def make_detector(opts: ml_collections.ConfigDict, kind: str,
                  extra: Mapping[str, Any] | None = None) -> detectors.Detector:
  """The detector `opts.detector` names for an input of `kind` (image, folder, video), made
  with `detector_options` (and `extra` constructor options on top). `auto` tries
  `detectors.AUTO[kind]` in order, with a warning for each that cannot run here; a detector
  named otherwise that cannot run raises. Sets `opts.detector` to the detector made and
  `opts.min_face_size` to the size kept with it (`detectors.keep_face`): summary.json records
  both.

  Raises:
    DetectorUnavailable: no detector asked for can run here (the message says what to install).
  """
  names = detectors.AUTO[kind] if opts.detector == "auto" else (opts.detector,)
  for i, name in enumerate(names):
    chosen = ml_collections.ConfigDict(dict(
        opts.to_dict(), detector=name,
        min_face_size=detectors.keep_face(name, opts.min_face_size)))
    try:
      detect = detectors.make_detector(name, **{**detector_options(chosen), **(extra or {})})
    except detectors.DetectorUnavailable as e:
      if i + 1 == len(names):
        raise
      logging.warning("%s; finding faces with %s instead", e, names[i + 1])
      continue
    opts.detector, opts.min_face_size = name, chosen.min_face_size
    return detect
  raise AssertionError("unreachable")


def detector_options(opts: ml_collections.ConfigDict) -> dict[str, Any]:
  """Constructor options of `opts.detector`. BlazeFace's finest tiles and MTCNN's first pyramid
  level are sized for faces of `detect_face_size` px (0: the detector's own,
  `detectors.SEARCH_FACE`), or of `min_face_size` where that is larger, never under 12 px;
  both also find smaller faces, down to the `min_face_size` predict keeps, less often than a
  finer search would, which costs time (bench/RESULTS.md, "Small faces: MTCNN")."""
  if opts.detector in detectors.SEARCH_FACE:  # one thread: the detector runs beside the fits
    # and the model (`FaceFinder.frames`), where a second thread costs CPU for little time
    size = float(opts.detect_face_size) or detectors.SEARCH_FACE[opts.detector]
    kept = detectors.keep_face(opts.detector, opts.min_face_size)
    return dict(min_face=max(size, kept, 12.0), threads=1,
                min_face_fraction=float(opts.min_face_fraction))
  return {}


class StopOnSignal:
  """SIGTERM or Ctrl-C (SIGINT) while predicting: no further frame is taken (the few decoded
  ahead are dropped), the frames taken are classified and recorded, and every output is written
  as after the last frame (rows, annotated video, tracks, class timeline, summary.json with
  `stopped_by`). Exit status 0: a camera or a stream is ended this way. Held from the first
  output file to the last; a second Ctrl-C quits at once (outputs may then be incomplete)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.received is None:
      logging.warning("%s: finishing the frames read, then writing every output", name)
      self.received = name
    elif signum == signal.SIGINT:  # Ctrl-C twice: the user insists
      raise KeyboardInterrupt
    else:
      logging.warning("%s again: still writing the outputs", name)

  def __enter__(self) -> "StopOnSignal":
    for s in self.SIGNALS:
      try:
        self._previous[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread: the signals keep their handlers
        pass
    return self

  def __exit__(self, *exc) -> None:
    for s, previous in self._previous.items():
      signal.signal(s, previous if previous is not None else signal.SIG_DFL)

  def frames(self, frames):
    for frame in frames:
      if self.received:
        return
      yield frame


def weighted_branches(config: ml_collections.ConfigDict) -> list[str]:
  """The branches whose weights (mu) predict writes: all of a multi-branch model's; none of
  one network on the whole face, whose single weight is always 1 (no mu columns, no weight
  panel, no mean branch weights in tracks)."""
  branches = list(config.data.crops.branches)
  return branches if len(branches) > 1 else []


def _run(opts, out_dir: pathlib.Path, stale, inp: Input, config, source, detect, classify,
         stop: "StopOnSignal", workdir: str, step: int, start: float,
         cut: tuple[Any, int] | None = None, record: dict[str, Any] | None = None
         ) -> dict[str, Any]:
  """predict's frames through the model into every output (continuing `cut`, a cut run's kept
  rows and the frame it resumes at; `record` is written first, `outputs.run_record`); returns
  the summary."""
  out_dir.mkdir(parents=True, exist_ok=True)
  outputs.remove_results(out_dir, stale)  # only with overwrite: no earlier file is left mixed in
  if record is not None:
    files.write_json(out_dir / outputs.RUN_RECORD, record)
  kept, first = cut if cut else (None, 0)
  if cut:
    logging.info("%s holds a cut run of %s with the same options: resuming at frame %d",
                 out_dir, inp.name, first)
  try:  # a resumed run's kept rows are rewritten and replayed here
    run = recorder.Recorder(opts, out_dir, inp, list(labels_lib.CLASS_NAMES),
                            weighted_branches(config), source.name, kept, first)
  except BaseException:
    inp.close()
    raise
  run.eval_flip = bool(config.eval_flip)
  finder = FaceFinder(source, detect, int(opts.min_face_size), int(opts.max_faces),
                      int(opts.detect_every) if inp.kind == "video" else 1,
                      min_face_fraction=float(opts.min_face_fraction),
                      follow_weight=float(opts.follow_weight))
  frames, found = inp.frames(first), None
  try:
    bar = tqdm.tqdm(stop.frames(frames), total=inp.total, initial=run.counts["frames"],
                    unit="frame", desc="predict", mininterval=1.0)
    found = finder.frames((frame, cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB))
                          for frame in bar)
    for group in classify_frames(found, classify, int(opts.batch_size)):
      for frame, faces, probs, mu in group:
        run.record(frame, faces, probs, mu)
      run.flush()  # rows reach the disk group by group: a crash keeps what was processed
    run.stopped_by = stop.received
  finally:
    if found is not None:
      found.close()  # its detector thread ends with it
    frames.close()  # stops the decoding thread if the loop ended early
    run.close()
  # Frames the detector ran on, a resumed run's kept frames' included (it resumes on one).
  run.counts["detections"] = finder.detections + (
      first // inp.stride // int(opts.detect_every) if inp.kind == "video" else 0)
  if run.counts["frames"] == 0:
    why = f"stopped by {stop.received} before the first" if stop.received else "no"
    raise ValueError(f"{inp.name}: {why} frame could be read (skipped: {inp.skipped})")
  return run.finish(workdir, step, time.time() - start)


def predict(workdir: str, input_path: str, output_dir: str, checkpoint: str | int = "latest",
            overrides: ml_collections.ConfigDict | None = None) -> dict[str, Any]:
  """Runs a checkpoint of `workdir` over the faces of `input_path`; writes `output_dir`.

  Args:
    workdir: the training run (its checkpoints and config).
    input_path: an image, a folder of images, a video, a camera index ("0") or a stream
      address (rtsp://, http://); SIGTERM or Ctrl-C ends a run with every output written.
    output_dir: created if absent; see the package docstring for what is written.
    checkpoint: `latest`, `best` or a step number.
    overrides: a config whose `predict` ConfigDict sets the options (`fer_jax/defaults.py`).

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
  inp = Input(input_path, opts.frame_stride, recursive=bool(opts.recursive),
              exclude=str(out_dir))  # bad input fails before the model loads
  try:
    # The detector first: the run record holds the detector and the face size that run.
    detect = make_detector(opts, inp.kind)  # summary.json says which ran
    # A cut run of this video in --output continues (the same command resumes it); any other
    # results there are refused unless predict.overwrite, as bad output fails before the model.
    record = (outputs.run_record(inp, workdir, checkpoint, opts)
              if inp.kind == "video" and not inp.live else None)
    cut = (outputs.cut_run(out_dir, record, inp.stride, int(opts.detect_every))
           if record is not None and not opts.overwrite else None)
    stale = [] if cut else outputs.check_output(out_dir, bool(opts.overwrite), inp.files)
    config, variables, step = load_checkpoint(workdir, checkpoint)
    source = landmarks_lib.best_available(opts.landmarks,
                                          weights_dir=opts.face_alignment_dir or None)
  except BaseException:
    inp.close()
    raise
  if source.name != opts.landmarks:
    logging.warning("landmarks: %s cannot run here; using %s", opts.landmarks, source.name)
  config.eval_flip = mirror_average(opts.flip, bool(config.eval_flip), inp.kind)
  classify = make_classifier(config, variables, int(opts.batch_size))
  with StopOnSignal() as stop:  # from the first file written to the last
    summary = _run(opts, out_dir, stale, inp, config, source, detect, classify, stop, workdir,
                   step, start, cut, record)
  logging.info("predict: %d %s, %d faces (%d frames without one%s%s), landmarks %s, "
               "checkpoint %d, %.1fs -> %s", summary["frames"],
               ("frame" if inp.kind == "video" else "image") +
               ("s" if summary["frames"] != 1 else ""), summary["faces"],
               summary["no_face_frames"],
               f", {summary['edge_faces']} at an edge" if "edge_faces" in summary else "",
               f", {summary['tracks']} tracks" if inp.kind == "video" and "tracks" in summary
               else "", source.name, step, summary["seconds"], out_dir)
  return summary


def main(args: Args) -> dict[str, Any]:
  """`--mode=predict`: only `config.predict` of --config is read (the rest is the model's)."""
  return predict(args.workdir, args.input, args.output, checkpoint=args.checkpoint,
                 overrides=args.config)
