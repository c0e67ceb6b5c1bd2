"""Prediction speed on this machine: stage costs and end-to-end frames/s of `--mode=predict`.

    python bench/predict.py                                # the default released model (--model=NAME)
    python bench/predict.py --workdir=RUN [--checkpoint=best]   # a training run
    python bench/predict.py --detect_every=1,5 --detectors=blazeface,hog_up1 --flip=checkpoint,off
    python bench/predict.py --startup     # one photo: compilation cache cold, then warm
    python bench/predict.py --lecture=10  # a 10-minute lecture at 1 frame/s: memory over time
    python bench/predict.py --video=400   # main.py --mode=predict on a 400-frame video, as a
                                          # user runs it: end-to-end frames/s, cold and warm

The input is a synthetic classroom: 1280x720 frames with 20 faces (resized copies of the two
test photos' faces, tests/data/photos, tiled 5 x 4 on a grey background), each face drifting a
few pixels from frame to frame, written as an mp4 video.

- stages: per frame, each detector on the frame; the 68-point fits and alignment of its
  faces; the model (evaluation crops and the jitted forward pass, `predict.make_classifier`)
  on them; annotation. Each is timed after one untimed warm-up call.
- end to end: `predict.predict` itself (decode thread, detection every `detect_every`-th
  frame with the faces followed between, fits, batched model, annotated video, rows, tracks
  and the class timeline written), on a short video and on one `--frames` frames longer:
  frames/s = extra frames / extra seconds, which leaves out the fixed cost (restoring the
  model, compiling it), reported separately.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import resource
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import ml_collections  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from fer_jax.data import labels, landmarks  # pylint: disable=g-import-not-at-top
from fer_jax import defaults, release  # pylint: disable=g-import-not-at-top
from fer_jax.modes import predict  # pylint: disable=g-import-not-at-top
from fer_jax.predict import annotate, detectors  # pylint: disable=g-import-not-at-top

PHOTOS = ROOT / "tests" / "data" / "photos"
# dlib's face boxes in the two photos (x0, y0, x1, y1).
FACE_BOXES = {"astronaut.png": (129, 55, 204, 130), "grace_hopper.jpg": (180, 139, 366, 325)}
WIDTH, HEIGHT, COLS, ROWS = 1280, 720, 5, 4
SHORT = 10  # frames of the short video (fixed cost + these)


def head(name: str, size: int) -> np.ndarray:
  """A size x size BGR patch around the face of a test photo (the face about 60% of it)."""
  img = cv2.imread(str(PHOTOS / name))
  if img is None:
    raise FileNotFoundError(f"test photo {PHOTOS / name} is missing")
  x0, y0, x1, y1 = FACE_BOXES[name]
  cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * (x1 - x0)
  s = size / (2 * half)
  m = np.float32([[s, 0, -(cx - half) * s], [0, s, -(cy - half) * s]])
  return cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REPLICATE)


def classroom_frame(t: int = 0) -> np.ndarray:
  """Frame t: a grey BGR 1280x720 frame, 5 x 4 faces (the two photos alternating, sizes
  varying), face i shifted by a few pixels along its own circle as t grows."""
  frame = np.full((HEIGHT, WIDTH, 3), 110, np.uint8)
  cw, ch = WIDTH // COLS, HEIGHT // ROWS
  names = sorted(FACE_BOXES)
  for r in range(ROWS):
    for c in range(COLS):
      i = r * COLS + c
      size = int(min(cw, ch) * (0.8 + 0.2 * ((r + c) % 2)))
      patch = head(names[(r + c) % 2], size)
      dx, dy = (int(round(8 * np.cos(t / 6 + i))), int(round(6 * np.sin(t / 6 + i))))
      y = min(max(r * ch + (ch - size) // 2 + dy, 0), HEIGHT - size)
      x = min(max(c * cw + (cw - size) // 2 + dx, 0), WIDTH - size)
      frame[y:y + size, x:x + size] = patch
  return frame


def write_video(path: pathlib.Path, frames: int, fps: float = 25.0) -> pathlib.Path:
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
  if not writer.isOpened():
    raise RuntimeError(f"OpenCV cannot write {path}")
  for t in range(frames):
    writer.write(classroom_frame(t))
  writer.release()
  return path


def _with_flip(config: ml_collections.ConfigDict, flip: bool) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval_flip = flip
  return config


def timed(fn, repeats: int) -> tuple[float, object]:
  """(seconds per call, last result) over `repeats` calls after one untimed warm-up call."""
  out = fn()
  t = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  return (time.perf_counter() - t) / repeats, out


def startup(repeats: int) -> None:
  """`--startup`: `main.py --mode=predict` on one photo, as a user runs it, with an empty
  compilation cache (cold) and then with the cache that run left (warm): wall seconds, each
  the median of `repeats` pairs, and the ratio."""
  import statistics  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  cold, warm = [], []
  for _ in range(repeats):
    with tempfile.TemporaryDirectory() as tmp:
      env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
      env["FER_JAX_CACHE_DIR"] = str(pathlib.Path(tmp) / "cache")
      for times, out in ((cold, "cold"), (warm, "warm")):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "main.py"), "--mode=predict",
                        f"--input={PHOTOS / 'astronaut.png'}", f"--output={tmp}/{out}"],
                       check=True, capture_output=True, env=env, cwd=tmp)
        times.append(time.perf_counter() - t0)
  c, w = statistics.median(cold), statistics.median(warm)
  print(f"main.py --mode=predict on one photo (the released model, defaults), median of "
        f"{repeats}: cold cache {c:.1f} s, warm {w:.1f} s ({c / w:.2f}x); all runs: cold "
        f"{[round(x, 1) for x in cold]}, warm {[round(x, 1) for x in warm]}")


def video(frames: int, predict_flags: list[str]) -> None:
  """`--video=N`: `main.py --mode=predict` on an N-frame 1280x720 video of the classroom
  frames, in a fresh process as a user runs it (every default output written), once with an
  empty compilation cache and once with the cache that run left: wall seconds, end-to-end
  frames/s (N over the whole run: start, restoring, compiling, decoding, every stage, writing)
  and the child's peak resident memory."""
  import subprocess  # pylint: disable=g-import-not-at-top
  print(f"main.py --mode=predict on a {frames}-frame {WIDTH}x{HEIGHT} video, 20 faces a frame, "
        f"the released model; flags: {' '.join(predict_flags) or '(defaults)'}")
  with tempfile.TemporaryDirectory() as tmp:
    clip = write_video(pathlib.Path(tmp) / "lecture.mp4", frames)
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["FER_JAX_CACHE_DIR"] = str(pathlib.Path(tmp) / "cache")
    for run in ("cold", "warm"):
      before = resource.getrusage(resource.RUSAGE_CHILDREN)
      t0 = time.perf_counter()
      done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--mode=predict",
                             f"--input={clip}", f"--output={tmp}/{run}", *predict_flags],
                            capture_output=True, text=True, env=env, cwd=tmp)
      wall = time.perf_counter() - t0
      if done.returncode:
        raise RuntimeError(f"predict failed ({done.returncode}): {done.stderr[-2000:]}")
      after = resource.getrusage(resource.RUSAGE_CHILDREN)
      cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
      peak = after.ru_maxrss / 1024
      summary = json.loads((pathlib.Path(tmp) / run / "summary.json").read_text())
      print(f"{run} compilation cache: {wall:.1f} s, {summary['frames']} frames, "
            f"{summary['faces']} faces: {frames / wall:.2f} frames/s end to end "
            f"(CPU time {cpu:.1f} s, {cpu / wall:.2f} cores busy; peak RSS of the runs so far "
            f"{peak:.0f} MB)")


def rss_mb() -> float:
  """This process's resident memory now (MB; Linux's /proc)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


class RssSampler(threading.Thread):
  """Samples `rss_mb` every `every` seconds while it runs: (seconds since start, MB) pairs."""

  def __init__(self, every: float = 0.5):
    super().__init__(daemon=True)
    self.every, self.samples, self._done = every, [], threading.Event()

  def run(self) -> None:
    t0 = time.perf_counter()
    while not self._done.is_set():
      self.samples.append((time.perf_counter() - t0, rss_mb()))
      self._done.wait(self.every)

  def stop(self) -> list[tuple[float, float]]:
    self._done.set()
    self.join()
    return self.samples


def lecture(args, workdir: str) -> None:
  """`--lecture=MINUTES`: a synthetic lecture (the classroom frames, `--lecture_fps` frames a
  second) through `predict.predict` at `predict.frame_stride` = one processed frame per
  second of video, as a long recording is read, with every default output (annotated video,
  rows, tracks, class timeline): wall time, processed frames/s, and the process's resident
  memory sampled through the run, at each quarter and its peak: flat memory is the same
  figure at a quarter and at the end."""
  frames = int(args.lecture * 60 * args.lecture_fps)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    t = time.perf_counter()
    video = write_video(tmp / "lecture.mp4", frames, fps=args.lecture_fps)
    print(f"lecture: {args.lecture:g} min at {args.lecture_fps:g} fps ({frames} frames, "
          f"{video.stat().st_size / 2**20:.0f} MB), written in {time.perf_counter() - t:.0f} s")
    over = defaults.get_config()
    over.predict.update(landmarks=args.landmarks, detector=args.detector,
                        frame_stride=int(args.lecture_fps))
    sampler = RssSampler()
    sampler.start()
    t = time.perf_counter()
    summary = predict.predict(workdir, str(video), str(tmp / "out"), checkpoint=args.checkpoint,
                              overrides=over)
    wall = time.perf_counter() - t
    samples = sampler.stop()
  at = lambda q: next(mb for s, mb in samples if s >= q * samples[-1][0])
  print(f"processed {summary['frames']} frames ({summary['faces']} faces, "
        f"{summary['tracks']} tracks) in {wall:.0f} s: {summary['frames'] / wall:.2f} frames/s")
  print("resident memory (MB) at 25% / 50% / 75% / 100% of the run: "
        + " / ".join(f"{at(q):.0f}" for q in (0.25, 0.5, 0.75, 1.0))
        + f"; peak {max(mb for _, mb in samples):.0f}; growth from 25% to the end "
          f"{at(1.0) - at(0.25):+.0f} MB")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--startup", action="store_true",
                      help="instead: time to a result of one photo, compilation cache cold/warm")
  parser.add_argument("--workdir", default="", help="a training run (default: --model)")
  parser.add_argument("--checkpoint", default="latest")
  parser.add_argument("--model", default=release.DEFAULT_MODEL, help="a released model")
  parser.add_argument("--landmarks", default="face_alignment",
                      help="face_alignment (dlib when its weights are absent) or dlib")
  parser.add_argument("--detectors", default="blazeface,hog_up1",
                      help="detectors timed in the stage table (comma separated)")
  parser.add_argument("--detect_every", default="1,5",
                      help="end-to-end runs, one per value (comma separated)")
  parser.add_argument("--detector", default=detectors.DEFAULT, help="end-to-end detector")
  parser.add_argument("--flip", default="checkpoint",
                      help="end-to-end runs, one per value of predict.flip (comma separated): "
                           "checkpoint (its eval_flip), on, off")
  parser.add_argument("--frames", type=int, default=100, help="extra frames of the long video")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per stage")
  parser.add_argument("--startup_repeats", type=int, default=1,
                      help="after the rest, time to a first result cold and warm this many "
                           "times (0: skip)")
  parser.add_argument("--lecture", type=float, default=0.0,
                      help="instead: a lecture of this many minutes, memory over time")
  parser.add_argument("--video", type=int, default=0,
                      help="instead: main.py --mode=predict on a video of this many frames")
  parser.add_argument("--predict_flag", action="append", default=[],
                      help="--video: a flag for main.py, e.g. --config.predict.flip=off "
                           "(repeatable)")
  parser.add_argument("--lecture_fps", type=float, default=5.0,
                      help="--lecture: the video's frame rate (one frame a second processed)")
  args = parser.parse_args()
  if args.startup:
    return startup(args.repeats)
  if args.video:
    return video(args.video, args.predict_flag)

  workdir = args.workdir or str(release.model_dir(args.model))
  if args.lecture:
    return lecture(args, workdir)
  config, variables, step = predict.load_checkpoint(workdir, args.checkpoint)
  opts = defaults.get_config().predict
  source = landmarks.best_available(args.landmarks)
  m = config.model
  print(f"machine: {jax.default_backend()}, {os.cpu_count()} CPU cores")
  print(f"model: {workdir} step {step}: {m.backbone}-{m.depth} width {m.width}, "
        f"{len(config.data.crops.branches)} branches of {config.data.crops.size} px"
        + (f" (eyes, nose, mouth at {m.part_size} px)"
           if m.get("part_size") and len(config.data.crops.branches) > 1 else ""))
  print(f"landmarks: {source.name} (asked for {args.landmarks}); frames {WIDTH}x{HEIGHT} with "
        f"{ROWS * COLS} faces; model batch {opts.batch_size}")

  # Stages, per frame.
  frame = classroom_frame()
  rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
  print("\nstage (per frame)                        ms   faces")
  boxes = {}
  for name in args.detectors.split(","):
    chosen = ml_collections.ConfigDict(dict(opts.to_dict(), detector=name))
    detect = predict.make_detector(chosen, "video")
    sec, found = timed(lambda d=detect: d(rgb), args.repeats)
    boxes[name] = [b for b, _ in found
                   if min(b[2] - b[0], b[3] - b[1]) >= chosen.min_face_size]
    print(f"detect {name:<33} {1000 * sec:6.1f}   {len(boxes[name])} of {ROWS * COLS}")
  some = boxes.get(args.detector) or next(b for b in boxes.values() if b)
  fake = lambda _: [(b, 1.0) for b in some]
  kept = detectors.keep_face(args.detector, opts.min_face_size)
  sec, faces = timed(lambda: predict.find_faces(source, rgb, kept,
                                                int(opts.max_faces), detect=fake), args.repeats)
  print(f"fit {source.name} + align, {len(faces)} faces{'':<12} {1000 * sec:6.1f}   "
        f"({1000 * sec / len(faces):.2f} ms/face)")
  images = np.stack([f.aligned for f in faces])
  pts = np.stack([f.aligned_landmarks for f in faces])
  for flip in (bool(config.eval_flip), False)[:1 + bool(config.eval_flip)]:
    classify = predict.make_classifier(_with_flip(config, flip), variables, int(opts.batch_size))
    sec, (probs, mu) = timed(lambda c=classify: c(images, pts, np.arange(len(faces))),
                             args.repeats)
    print(f"model (crops + jitted forward), flip {'on ' if flip else 'off'} {1000 * sec:6.1f}   "
          f"({1000 * sec / len(faces):.2f} ms/face)")
  drawn = [dict(box=f.box, label_index=int(p.argmax()), prob=float(p.max()), weights=w,
                landmarks=f.landmarks, edge=f.edge) for f, p, w in zip(faces, probs, mu)]
  branches, classes = list(config.data.crops.branches), list(labels.CLASS_NAMES)
  sec, _ = timed(lambda: annotate.draw_faces(frame.copy(), drawn, branches, classes),
                 args.repeats)
  print(f"annotate{'':<31} {1000 * sec:6.1f}")

  # End to end.
  print(f"\nend to end: predict.predict, detector {args.detector}, {SHORT} and "
        f"{SHORT + args.frames} frames at 25 fps")
  print("detect_every   flip         frames/s   ms/frame   fixed s   end-to-end f/s   "
        "faces/frame   detections")
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    short = write_video(tmp / "short.mp4", SHORT)
    long = write_video(tmp / "long.mp4", SHORT + args.frames)
    for i, (every, flip) in enumerate(itertools.product(
        (int(v) for v in args.detect_every.split(",")), args.flip.split(","))):
      over = defaults.get_config()
      over.predict.update(landmarks=args.landmarks, detector=args.detector, detect_every=every,
                          flip=flip)
      run = lambda video, name: predict.predict(workdir, str(video), str(tmp / name),
                                                checkpoint=args.checkpoint, overrides=over)
      t = time.perf_counter()
      run(short, f"short_{i}")  # a value may repeat (--detect_every=5,5): runs apart
      t_short = time.perf_counter() - t
      t = time.perf_counter()
      summary = run(long, f"long_{i}")
      t_long = time.perf_counter() - t
      per_frame = (t_long - t_short) / args.frames
      fixed = t_short - SHORT * per_frame
      shown = f"{flip} ({'on' if summary['eval_flip'] else 'off'})"
      print(f"{every:>12}   {shown:<11}  {1 / per_frame:8.2f}   {1000 * per_frame:8.1f}   "
            f"{fixed:7.1f}   {(SHORT + args.frames) / t_long:14.2f}   "
            f"{summary['faces'] / summary['frames']:11.1f}   {summary['detections']:>10}")
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"\nframes/s: steady state (the long video's extra frames over their extra time); "
        f"end-to-end f/s: the long video's frames over its whole run, restoring and compiling "
        f"included. Peak resident memory of this process: {peak:.0f} MB (memory over a long "
        f"video: --lecture=10).\n")
  if args.startup_repeats:
    startup(args.startup_repeats)


if __name__ == "__main__":
  main()
