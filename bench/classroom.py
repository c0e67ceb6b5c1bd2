"""Synthetic classroom: what `--mode=predict` finds and reads in lecture-room frames (issue 30).

    python3 bench/classroom.py [--frames=80] [--seed=0] [--sizes=1280x720,1920x1080] \
        [--ferplus_dir=../shared/data/ferplus] [--json=PATH] [--truth=dlib|fixed] \
        [--config.predict.KEY=VALUE ...] [--detector_option=KEY=VALUE ...]

Settings. Prediction runs at predict's defaults unless `--config.predict.KEY=VALUE` flags
(main.py's syntax, parsed by `fer_jax.overrides.apply_flags` onto `defaults.get_config()`) set
other `predict.*` values, e.g. `--config.predict.min_face_size=16`; `--detector_option=KEY=VALUE`
(repeatable; the value a Python literal) passes a constructor option of the detector that
runs (frames are photos: `auto` is MTCNN, e.g. `thresholds=(0.8,0.6,0.6)`; `min_score=0.4` with
`--config.predict.detector=blazeface`) that predict does not expose, on top of
`predict.detector_options`. The header names every setting that differs from the defaults.

Scenes. Each frame (one per scene size and index) is built by `make_scene` from FERPlus
validation faces whose labels are known (no not-a-face vote, and a majority label under the
evaluation protocol, `fer_jax.data.labels.majority_label`): bench/detect.py's face-free
background (made at 1280x720 and resized to the scene's size), then 20-40 faces, each at a face
width drawn from one of the bands `BANDS` (band first, uniformly, then a width within it),
placed so that no two faces' pasted squares meet, pasted by bench/detect.py's `paste` (a skin
tone, the crop's border faded into the background). A share `OCCLUDED` of the faces then gets
a partial occluder (`occlude`: a flat-coloured shape, a hand, a book or a neighbour's head,
covering 15-40% of the crop's side from one of its edges), and the whole frame is degraded as
a camera would: optical blur (`blur`, Gaussian), dimming (`dim`, a gain) and sensor noise
(`add_noise`, Gaussian, after the dimming). Every random choice comes from
`np.random.default_rng([seed, width, height, index])`. The face width is the side of the pasted
48 px FERPlus crop (bench/detect.py's convention).

Truth. The true face box of each pasted face, against which boxes are matched, is in dlib's
convention (the box predict's boxes follow) and is set by `--truth`:
- `dlib` (the default): the face's own box, `DlibTruth`: dlib's HOG frontal detector run on
  the 48 px face alone (its border replicated by `DLIB_PAD` of its side, upscaled by each of
  `DLIB_SCALES`, three scales a third of dlib's pyramid step apart so that the box's side is
  not quantised to that step), the best-scored box centred inside the crop at each scale,
  averaged over the scales where one was found, then moved and scaled with the crop. Where
  the detector finds none at any scale, the face falls back to the fixed rule; the header and
  the JSON count the fallbacks. Computed once per face (by file name) per run; deterministic.
- `fixed`: the crop box moved and shrunk by one rule for every face (`detect.face_boxes`:
  its side 0.89 of the crop's, the medians of dlib HOG's boxes on pasted faces).

Prediction. Each frame goes through predict's own pieces at their defaults
(`fer_jax.defaults.get_config().predict`): the detector `predict.detector` made as for a
photo (`predict.make_detector`: `auto` is MTCNN, brightened, keeping 16 px boxes), `FaceFinder`
(boxes under `min_face_size` dropped, the `max_faces` largest kept, 68 landmarks fitted by the
best landmark source available here, faces aligned), and the released model
(`release.DEFAULT_MODEL`) through
`make_classifier` and `classify_frames` in batches of `predict.batch_size`. Frames are
independent pictures, so detection runs on every frame (`detect_every=1`, as for a folder of
photos).

Measured, per scene size and face-width band and overall:
- recall at IoU 0.5: the faces predict returns, matched to true boxes greedily, highest
  detector score first (`assign`, the rule of detect.match);
- detector recall: the same for the detector's raw boxes, before predict's size filter, the
  `max_faces` limit and the landmark fit (where the two differ, predict drops found faces);
- expression accuracy on the found faces: the argmax of the model's probabilities against
  the face's FERPlus majority label;
- false positives per frame: predict's faces matched to no true face; a false box is given to
  the band of the face width its side implies (side / 0.89), clipped into 20-110 px, so the
  bands' figures add up to the scene's;
- frames/s of the prediction alone (scene synthesis not counted; the model compiled before
  timing), with the detector's and the landmark fits' milliseconds per frame.

Progress goes to stderr, the table to stdout, and everything (per frame too) to `--json`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import cv2  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

import detect  # pylint: disable=g-import-not-at-top  (bench/detect.py)
from fer_jax.data import labels as labels_lib  # pylint: disable=g-import-not-at-top

BANDS = ((20, 30), (30, 45), (45, 70), (70, 110))  # face width, px: [lo, hi), the last [lo, hi]
FACES = (20, 40)  # faces per frame, both ends included
SIZES = "1280x720,1920x1080"
GAIN = (0.25, 1.0)  # dimming: the frame's brightness times this
NOISE = (2.0, 10.0)  # sensor noise: Gaussian standard deviation in grey levels, after dimming
BLUR = (0.0, 1.2)  # optical blur: Gaussian standard deviation in px
OCCLUDED = 0.3  # the share of faces that get an occluder
OCCLUDER_DEPTH = (0.15, 0.4)  # how far an occluder reaches into the crop, times its side
IOU = 0.5
DEFAULT_FERPLUS = ROOT.parent / "shared" / "data" / "ferplus"
TRUTHS = ("dlib", "fixed")
DLIB_PAD = 0.25  # DlibTruth: the face's border replicated by this times its side, each side
DLIB_SCALES = tuple(4 * 1.2 ** (j / 3) for j in range(3))  # ... then upscaled by each of these
DRIFT = 0.2  # video: the most a face sways from its place, per axis, times its width
PERIOD = (40.0, 160.0)  # video: frames per sway (1.6-6.4 s at 25 frames/s)
CLIP_FRAMES = 40  # video: frames per clip (one held shot; predict.detect_every is 10)
CLIPS = 10  # video: clips per scene size by default


# --------------------------------------------------------------------------------------------
# Faces and scenes (pure: a scene is a function of the pool, the seed, the size and the index).

@dataclasses.dataclass
class Pool:
  """Labelled FERPlus faces: images uint8 [n, 48, 48], majority labels int [n], file names."""
  images: np.ndarray
  labels: np.ndarray
  names: list[str]


@dataclasses.dataclass
class Scene:
  """A synthetic classroom frame and its truth."""
  image: np.ndarray  # RGB uint8 [height, width, 3]
  crops: np.ndarray  # float32 [n, 4]: the pasted 48 px crops' boxes x0, y0, x1, y1
  boxes: np.ndarray  # float32 [n, 4]: the true face boxes, dlib's convention (detect.face_boxes)
  labels: np.ndarray  # int64 [n]: FERPlus majority labels (labels_lib.CLASS_NAMES)
  faces: np.ndarray  # int64 [n]: indices into the pool
  occluded: np.ndarray  # float32 [n]: the share of each crop's box an occluder covers
  gain: float
  noise: float
  blur: float

  @property
  def widths(self) -> np.ndarray:
    return self.crops[:, 2] - self.crops[:, 0]


def load_pool(ferplus_dir: pathlib.Path) -> Pool:
  """FER2013Valid faces that no annotator called not-a-face (detect.ferplus_faces) and that
  have a majority label. FileNotFoundError when the folder has no FER2013Valid/label.csv."""
  paths = detect.ferplus_faces(pathlib.Path(ferplus_dir))
  votes = {}
  with open(pathlib.Path(ferplus_dir) / "FER2013Valid" / "label.csv", newline="") as f:
    for row in csv.reader(f):
      if row:
        votes[row[0]] = [float(v) for v in row[2:]]
  images, labels, names = [], [], []
  for path in paths:
    label = labels_lib.majority_label(votes[path.name])
    if label is None:
      continue
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
      raise FileNotFoundError(f"cannot read {path}")
    images.append(image)
    labels.append(label)
    names.append(path.name)
  if not images:
    raise FileNotFoundError(f"no labelled faces in {pathlib.Path(ferplus_dir) / 'FER2013Valid'}")
  return Pool(np.stack(images), np.array(labels, np.int64), names)


def parse_sizes(text: str) -> list[tuple[int, int]]:
  """"1280x720,1920x1080" -> [(1280, 720), (1920, 1080)]."""
  out = []
  for part in text.split(","):
    try:
      w, h = (int(v) for v in part.lower().split("x"))
    except ValueError:
      raise ValueError(f"a scene size is WIDTHxHEIGHT, got {part!r}") from None
    if w < 320 or h < 240:
      raise ValueError(f"a scene is at least 320x240, got {part!r}")
    out.append((w, h))
  return out


def band_of(widths) -> np.ndarray:
  """The index into BANDS of each face width, widths outside 20-110 clipped to the end bands."""
  return np.searchsorted([b[0] for b in BANDS[1:]], np.asarray(widths, np.float64),
                         side="right")


def draw_widths(rng: np.random.Generator, n: int) -> np.ndarray:
  """n face widths: a band of BANDS uniformly, then an integer width within it."""
  out = []
  for b in rng.integers(len(BANDS), size=n):
    lo, hi = BANDS[b]
    out.append(int(rng.integers(lo, hi + (b == len(BANDS) - 1))))
  return np.array(out, np.int64)


def place(rng: np.random.Generator, widths, width: int, height: int, tries: int = 100,
          reach=None) -> list[tuple[int, int, int] | None]:
  """(x, y, face width) of each face's crop, or None where no free place was found in `tries`:
  each face's pasted square (its crop with detect.MARGIN and 2 px around, and `reach[i]` px
  more on every side where given: how far the face sways in a clip) meets no other's and lies
  inside the frame."""
  taken, out = [], []
  reach = np.zeros(len(widths), np.int64) if reach is None else np.asarray(reach, np.int64)
  for w, r in zip(widths, reach):
    w = int(w)
    o = int(np.ceil(w * detect.MARGIN)) + 2 + int(r)
    spot = None
    for _ in range(tries):
      x = int(rng.integers(o, width - w - o))
      y = int(rng.integers(o, height - w - o))
      sq = (x - o, y - o, x + w + o, y + w + o)
      if all(sq[2] <= t[0] or t[2] <= sq[0] or sq[3] <= t[1] or t[3] <= sq[1] for t in taken):
        taken.append(sq)
        spot = (x, y, w)
        break
    out.append(spot)
  return out


def scene_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
  """bench/detect.py's face-free 1280x720 background, resized to width x height."""
  frame = detect.background(rng)
  if frame.shape[:2] != (height, width):
    frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
  return frame


def occlude(image: np.ndarray, crop, rng: np.random.Generator) -> tuple[np.ndarray, float]:
  """A copy of `image` with a flat-coloured occluder over one edge of the crop box `crop`
  (x0, y0, x1, y1): from below (a hand, a book), the left or the right (a neighbour's head)
  or above (a raised hand), reaching OCCLUDER_DEPTH of the side in, its inner edge slanted,
  its colour flat with a little texture. Returns (the image, the share of the crop's box it
  covers)."""
  x0, y0, x1, y1 = (int(round(v)) for v in crop)
  side = x1 - x0
  depth = rng.uniform(*OCCLUDER_DEPTH) * side
  slant = rng.uniform(-0.15, 0.15) * side
  edge = int(rng.integers(4))  # 0 below, 1 left, 2 right, 3 above
  colour = rng.uniform(20, 230, 3)
  # The shape in the crop's own frame (u across the edge, v into the crop), then turned.
  u = np.arange(side) + 0.5
  reach = depth + slant * (u / side - 0.5) * 2  # the inner edge, slanted
  v = np.arange(side)[:, None] + 0.5
  mask = (v < reach[None, :]).astype(np.float32)  # [v, u]: covered
  if edge == 0:
    local = mask[::-1]  # v from the bottom up
  elif edge == 1:
    local = mask.T  # v from the left
  elif edge == 2:
    local = mask.T[:, ::-1]
  else:
    local = mask
  out = image.copy()
  h, w = out.shape[:2]
  ya, yb, xa, xb = max(y0, 0), min(y0 + side, h), max(x0, 0), min(x0 + side, w)
  m = local[ya - y0:yb - y0, xa - x0:xb - x0, None]
  region = out[ya:yb, xa:xb].astype(np.float32)
  texture = rng.normal(0, 6, region.shape)
  out[ya:yb, xa:xb] = np.clip(m * (colour + texture) + (1 - m) * region, 0, 255).astype(np.uint8)
  return out, float(local.mean())


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of standard deviation `sigma` px (a copy; none at sigma <= 0)."""
  if sigma <= 0:
    return image.copy()
  return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def dim(image: np.ndarray, gain: float) -> np.ndarray:
  """Brightness times `gain` (a dim room, an underexposed camera)."""
  return np.clip(image.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
  """Gaussian noise of `sigma` grey levels, independent per pixel and channel."""
  noisy = image.astype(np.float32) + rng.normal(0, sigma, image.shape).astype(np.float32)
  return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def make_scene(pool: Pool, seed: int, index: int, width: int = 1280, height: int = 720,
               truth=None) -> Scene:
  """Frame `index` of seed `seed` at width x height (see the module docstring). `truth`: a
  `DlibTruth` for the faces' own boxes; None: the fixed rule (`detect.face_boxes`). The truth
  does not change the frame."""
  rng = np.random.default_rng([seed, width, height, index])
  frame = scene_background(rng, width, height)
  n = int(rng.integers(FACES[0], FACES[1] + 1))
  chosen = rng.choice(len(pool.images), min(n, len(pool.images)), replace=False)
  spots = place(rng, draw_widths(rng, len(chosen)), width, height)
  crops, faces, occluded = [], [], []
  for face, spot in zip(chosen, spots):
    if spot is None:
      continue
    x, y, w = spot
    detect.paste(frame, pool.images[face], x, y, w, rng)
    crops.append((x, y, x + w, y + w))
    faces.append(int(face))
  for crop in crops:  # after all faces: an occluder lies over its own face only
    covered = 0.0
    if rng.random() < OCCLUDED:
      frame, covered = occlude(frame, crop, rng)
    occluded.append(covered)
  sigma, gain, noise = rng.uniform(*BLUR), rng.uniform(*GAIN), rng.uniform(*NOISE)
  frame = add_noise(dim(blur(frame, sigma), gain), noise, rng)
  crops = np.array(crops, np.float32).reshape(-1, 4)
  faces = np.array(faces, np.int64)
  boxes = detect.face_boxes(crops) if truth is None else truth.boxes(pool, faces, crops)
  return Scene(frame, crops, boxes, pool.labels[faces], faces,
               np.array(occluded, np.float32), float(gain), float(noise), float(sigma))


@dataclasses.dataclass
class Clip:
  """A held classroom shot (`--video`): the scene of `make_clip`, fixed but for each face's
  sway and the sensor noise, which `clip_frame` adds per frame."""
  seed: int
  index: int
  width: int
  height: int
  background: np.ndarray  # RGB uint8 [height, width, 3]: the room before the faces
  faces: np.ndarray  # int64 [n]: indices into the pool
  places: np.ndarray  # int64 [n, 3]: each crop's x, y and side at rest
  sway: np.ndarray  # float64 [n, 2, 3]: per face and axis (x, y), amplitude px, period, phase
  occluded: np.ndarray  # bool [n]: whether the face has an occluder (it moves with the face)
  gain: float
  noise: float
  blur: float

  def key(self, *more: int) -> list[int]:
    """The seed sequence of one of the clip's random streams."""
    return [self.seed, self.width, self.height, self.index, *more]


def make_clip(pool: Pool, seed: int, index: int, width: int = 1280, height: int = 720
              ) -> Clip:
  """Clip `index` of seed `seed` at width x height: a scene drawn as `make_scene` draws one
  (20-40 faces, widths by band, `OCCLUDED` of them occluded, one blur, gain and noise level),
  each face's place leaving room for its sway: per axis a sine of amplitude up to `DRIFT`
  times its width, a period in `PERIOD` frames and a random phase (a student shifting in a
  seat). Its random choices come from `np.random.default_rng([seed, width, height, index, 1])`
  (a scene's are 4 numbers long, so no clip repeats a scene)."""
  rng = np.random.default_rng([seed, width, height, index, 1])
  background = scene_background(rng, width, height)
  n = int(rng.integers(FACES[0], FACES[1] + 1))
  chosen = rng.choice(len(pool.images), min(n, len(pool.images)), replace=False)
  widths = draw_widths(rng, len(chosen))
  amplitude = rng.uniform(0, DRIFT, (len(chosen), 2)) * widths[:, None]
  spots = place(rng, widths, width, height, reach=np.ceil(amplitude.max(1)))
  period = rng.uniform(*PERIOD, (len(chosen), 2))
  phase = rng.uniform(0, 2 * np.pi, (len(chosen), 2))
  occluded = rng.random(len(chosen)) < OCCLUDED
  keep = np.array([spot is not None for spot in spots], bool)
  places = np.array([spot for spot in spots if spot is not None], np.int64).reshape(-1, 3)
  sway = np.stack([amplitude, period, phase], -1)[keep]
  sigma, gain, noise = rng.uniform(*BLUR), rng.uniform(*GAIN), rng.uniform(*NOISE)
  return Clip(seed, index, width, height, background, chosen[keep].astype(np.int64), places,
              sway, occluded[keep], float(gain), float(noise), float(sigma))


def clip_crops(clip: Clip, t: int) -> np.ndarray:
  """float32 [n, 4]: the crops of frame `t` of `clip` (x0, y0, x1, y1), each face moved by its
  sway rounded to whole pixels."""
  amplitude, period, phase = np.moveaxis(clip.sway, -1, 0)  # each [n, 2]
  shift = np.rint(amplitude * np.sin(2 * np.pi * t / period + phase)).astype(np.int64)
  x0y0 = clip.places[:, :2] + shift
  return np.concatenate([x0y0, x0y0 + clip.places[:, 2:]], 1).astype(np.float32)


def clip_frame(pool: Pool, clip: Clip, t: int, truth=None) -> Scene:
  """Frame `t` of `clip`: its faces pasted where their sway puts them (each face's skin tone
  and occluder drawn from its own stream, `clip.key(2, i)`, so they stay the same from frame to
  frame), the clip's blur and dimming, and sensor noise drawn for this frame
  (`clip.key(3, t)`). `truth` as for `make_scene`."""
  frame = clip.background.copy()
  crops = clip_crops(clip, t)
  streams = [np.random.default_rng(clip.key(2, i)) for i in range(len(crops))]
  for crop, face, rng in zip(crops.astype(np.int64), clip.faces, streams):
    detect.paste(frame, pool.images[face], int(crop[0]), int(crop[1]),
                 int(crop[2] - crop[0]), rng)
  occluded = np.zeros(len(crops), np.float32)
  for i in np.flatnonzero(clip.occluded):  # after all faces, as in make_scene
    frame, occluded[i] = occlude(frame, crops[i], streams[i])
  frame = add_noise(dim(blur(frame, clip.blur), clip.gain), clip.noise,
                    np.random.default_rng(clip.key(3, t)))
  boxes = detect.face_boxes(crops) if truth is None else truth.boxes(pool, clip.faces, crops)
  return Scene(frame, crops, boxes, pool.labels[clip.faces], clip.faces, occluded, clip.gain,
               clip.noise, clip.blur)


class DlibTruth:
  """Each FERPlus face's own true box, from dlib's HOG frontal detector on the face alone (see
  the module docstring), cached by file name; faces it finds no box on fall back to the fixed
  rule (`detect.FACE_IN_CROP`).

  `in_crop(image)` is the box in the crop's units: (x0, y0, x1, y1) / the crop's side, dlib's
  pixel-index convention (a box of a frame's pixels i..j is [i, j]), or None where the
  detector finds none. `boxes(pool, faces, crops)` places those of pool faces `faces` on
  crops [n, 4]; `fallbacks` and `faces_seen` count the distinct faces it was asked for.
  """

  def __init__(self):
    import dlib  # pylint: disable=g-import-not-at-top
    self._detector = dlib.get_frontal_face_detector()
    self._cache: dict[str, np.ndarray | None] = {}

  @property
  def faces_seen(self) -> int:
    return len(self._cache)

  @property
  def fallbacks(self) -> int:
    return sum(v is None for v in self._cache.values())

  def in_crop(self, image: np.ndarray) -> np.ndarray | None:
    image = np.asarray(image, np.uint8)
    side = image.shape[0]
    pad = int(round(side * DLIB_PAD))
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    n = padded.shape[0]
    found = []
    for scale in DLIB_SCALES:
      big_side = int(round(n * scale))
      big = cv2.resize(padded, (big_side, big_side), interpolation=cv2.INTER_CUBIC)
      rects, scores, _ = self._detector.run(big, 0, 0.0)
      s = big_side / n
      best = None
      for r, score in zip(rects, scores):
        # upscaled pixel index -> the 48 px face's pixel index (centres line up)
        b = (np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) + 0.5) / s - 0.5
        b -= pad
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if 0 <= cx < side and 0 <= cy < side and (best is None or score > best[1]):
          best = (b, score)
      if best is not None:
        found.append(best[0])
    if not found:
      return None
    # In the crop's units, as pixel centres: pixel u's centre sits at (u + 0.5) / side.
    return ((np.mean(found, 0) + 0.5) / side).astype(np.float64)

  def face(self, pool: Pool, face: int) -> np.ndarray | None:
    name = pool.names[face]
    if name not in self._cache:
      self._cache[name] = self.in_crop(pool.images[face])
    return self._cache[name]

  def boxes(self, pool: Pool, faces, crops: np.ndarray) -> np.ndarray:
    crops = np.asarray(crops, np.float32).reshape(-1, 4)
    out = detect.face_boxes(crops).astype(np.float64)
    for i, face in enumerate(np.asarray(faces, np.int64)):
      rel = self.face(pool, int(face))
      if rel is not None:
        side = float(crops[i, 2] - crops[i, 0])
        # crop unit -> frame pixel index: the pixel whose centre it is (hence the -0.5)
        out[i] = np.tile(crops[i, :2], 2) + rel * side - 0.5
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Matching and counting (pure).

def assign(boxes, scores, truth: np.ndarray, threshold: float = IOU) -> np.ndarray:
  """int [n boxes]: the true box each box is matched to, or -1 (a false positive). Greedy,
  highest score first, each true box taken once: bench/detect.py's `match` rule."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  out = np.full(len(boxes), -1, np.int64)
  if not len(boxes) or not len(truth):
    return out
  iou = detect.iou_matrix(boxes, np.asarray(truth, np.float32))
  taken = np.zeros(len(truth), bool)
  for i in np.argsort(-np.asarray(scores, np.float64), kind="stable"):
    cand = np.where(~taken, iou[i], -1)
    j = int(cand.argmax())
    if cand[j] >= threshold:
      taken[j] = True
      out[i] = j
  return out


def on_background(boxes, truth: np.ndarray) -> np.ndarray:
  """bool [n boxes]: whether each box overlaps no true box at IoU 0.1 or more (a false box on
  the background, not a face boxed loosely or twice: detect.match's fp_bg)."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if not len(truth):
    return np.ones(len(boxes), bool)
  if not len(boxes):
    return np.zeros(0, bool)
  return detect.iou_matrix(boxes, np.asarray(truth, np.float32)).max(1) < 0.1


def count(truth_widths, truth_labels, matched: np.ndarray, predicted, box_sides,
          detector_matched: np.ndarray | None = None, background=None
          ) -> dict[str, np.ndarray]:
  """Per band of BANDS: faces, hits (found at IoU 0.5), correct (found and the predicted label
  is the true one), false (unmatched boxes, by the face width their side implies), false_bg
  (those of them on the background, `on_background`; with `background` only) and
  detector_hits (true faces the raw detector's boxes found; with `detector_matched` only).

  Args:
    truth_widths: [n] true face widths (crop sides).
    truth_labels: [n] their labels.
    matched: [m] per found box, its true face or -1 (`assign`).
    predicted: [m] per found box, the predicted label.
    box_sides: [m] per found box, its side (px, dlib's convention).
    detector_matched: per raw detector box, its true face or -1 (None: not counted).
    background: [m] per found box, whether it is on the background (None: not counted).
  """
  k = len(BANDS)
  bands = band_of(truth_widths)
  matched = np.asarray(matched, np.int64)
  hit = matched >= 0
  truth_labels = np.asarray(truth_labels, np.int64)
  right = hit.copy()
  right[hit] = np.asarray(predicted, np.int64)[hit] == truth_labels[matched[hit]]
  false_bands = band_of(np.asarray(box_sides, np.float64)[~hit] / detect.FACE_IN_CROP["side"])
  out = dict(faces=np.bincount(bands, minlength=k),
             hits=np.bincount(bands[matched[hit]], minlength=k),
             correct=np.bincount(bands[matched[right]], minlength=k),
             false=np.bincount(false_bands, minlength=k))
  if background is not None:
    bg = np.asarray(background, bool)[~hit]
    out["false_bg"] = np.bincount(false_bands[bg], minlength=k)
  if detector_matched is not None:
    found = np.unique(np.asarray(detector_matched, np.int64))
    found = found[found >= 0]
    out["detector_hits"] = np.bincount(bands[found], minlength=k)
  return out


def band_names() -> list[str]:
  return [f"{lo}-{hi}" for lo, hi in BANDS]


def ratio(a: float, b: float) -> float:
  return float(a) / float(b) if b else float("nan")


def table(results: dict, sizes: list[str]) -> str:
  """The markdown table of `results` (per scene size: summed counts and frames). Video counts
  (with `detect_faces`) add recall on the detection frames and on the followed frames, and
  their detector recall is on the detection frames."""
  video = "detect_faces" in results[sizes[0]]["counts"]
  extra = " recall, detection frames | recall, followed frames |" if video else ""
  lines = ["| scene | face width px | faces | detector recall | recall |" + extra +
           " accuracy (found) | FP/frame (on background) |",
           "|---|---|---|---|---|" + "---|---|" * video + "---|---|"]

  def row(scene, band, c, i, frames):
    pick = (lambda key: c[key][i]) if i is not None else (lambda key: c[key].sum())
    faces = pick("faces")
    cells = [scene, band, f"{faces}",
             f"{ratio(pick('detector_hits'), pick('detect_faces') if video else faces):.3f}",
             f"{ratio(pick('hits'), faces):.3f}"]
    if video:
      cells += [f"{ratio(pick('detect_hits'), pick('detect_faces')):.3f}",
                f"{ratio(pick('hits') - pick('detect_hits'), faces - pick('detect_faces')):.3f}"]
    cells += [f"{ratio(pick('correct'), pick('hits')):.3f}",
              f"{ratio(pick('false'), frames):.2f} ({ratio(pick('false_bg'), frames):.2f})"]
    lines.append("| " + " | ".join(cells) + " |")

  total = None
  for size in sizes:
    c = {k: np.asarray(v) for k, v in results[size]["counts"].items()}
    for i, name in enumerate(band_names()):
      row(size, name, c, i, results[size]["frames"])
    row(size, f"**{BANDS[0][0]}-{BANDS[-1][1]}**", c, None, results[size]["frames"])
    total = c if total is None else {k: total[k] + c[k] for k in c}
  frames = sum(results[s]["frames"] for s in sizes)
  if len(sizes) > 1:
    for i, name in enumerate(band_names()):
      row("all", name, total, i, frames)
    row("**all**", f"**{BANDS[0][0]}-{BANDS[-1][1]}**", total, None, frames)
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The run.

def fail(message: str) -> None:
  print(f"classroom.py: error: {message}", file=sys.stderr)
  sys.exit(2)


def settings(config_flags=(), detector_flags=()):
  """(predict's options, extra detector options, the settings that differ from the defaults as
  text): `--config.predict.KEY=VALUE` flags applied onto `defaults.get_config()` (by
  `fer_jax.overrides.apply_flags`, then checked by `predict.options`) and
  `--detector_option=KEY=VALUE` flags (values Python literals, else strings).

  Raises:
    ValueError: a flag that is not of these forms, or a value that does not fit its key.
  """
  import ast  # pylint: disable=g-import-not-at-top
  from fer_jax import defaults, errors, overrides  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import predict  # pylint: disable=g-import-not-at-top
  for flag in config_flags:
    if not flag.startswith("--config.predict.") or "=" not in flag:
      raise ValueError(f"{flag!r}: only --config.predict.KEY=VALUE flags are taken")
  config = defaults.get_config()
  try:
    overrides.apply_flags(config, list(config_flags))
    opts = predict.options(config)
  except (errors.ConfigError, errors.UsageError, KeyError, TypeError) as e:
    raise ValueError(str(e)) from None
  extra = {}
  for text in detector_flags:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
      raise ValueError(f"--detector_option={text!r} is not KEY=VALUE")
    try:
      extra[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      extra[key] = value
  base = defaults.get_config().predict
  changed = [f"predict.{k}={opts[k]!r}" for k in opts.keys() if opts[k] != base[k]]
  changed += [f"detector {k}={v!r}" for k, v in extra.items()]
  return opts, extra, ", ".join(changed) if changed else "predict's defaults"


def predictor(opts=None, extra=None, kind: str = "image"):
  """(detect, its name, the landmark source, the options, classify, model name, step): predict's
  pieces (at `opts`, default: predict's defaults; the detector with `extra` constructor options
  on top of `predict.detector_options`) and the released model, as
  `fer_jax.modes.predict.predict` makes them for an input of `kind` (image: a class photo per
  frame; video)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from fer_jax import cli, release  # pylint: disable=g-import-not-at-top
  from fer_jax.data import landmarks as landmarks_lib  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import predict  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  cli.setup_compile_cache()  # as main.py does
  opts = predict.options() if opts is None else opts
  config, variables, step = predict.load_checkpoint(
      str(release.model_dir(release.DEFAULT_MODEL)), "latest")
  source = landmarks_lib.best_available(opts.landmarks,
                                        weights_dir=opts.face_alignment_dir or None)
  detector = predict.make_detector(opts, kind, extra)
  name = opts.detector
  config.eval_flip = predict.mirror_average(opts.flip, bool(config.eval_flip), kind)
  classify = predict.make_classifier(config, variables, int(opts.batch_size))
  return detector, name, source, opts, classify, release.DEFAULT_MODEL, step


def warm_up(classify, batch_size: int) -> float:
  """Compiles the model at every padded batch size predict uses (8, 16, ... batch_size);
  returns the seconds it took."""
  from fer_jax.predict import faces as faces_lib  # pylint: disable=g-import-not-at-top
  start, n = time.perf_counter(), 8
  f = faces_lib.FACE_SIZE
  while True:
    n = min(n, batch_size)
    classify(np.zeros((n, f, f, 1), np.uint8), np.zeros((n, 68, 2), np.float32),
             np.arange(n, dtype=np.int32))
    if n >= batch_size:
      return time.perf_counter() - start
    n *= 2


def run_size(pool: Pool, args, width: int, height: int, parts, truth=None) -> dict:
  """The frames of one scene size through predict; their counts, timings and per-frame rows.
  `truth`: make_scene's (None: the fixed rule)."""
  from fer_jax.modes import predict  # pylint: disable=g-import-not-at-top
  detector, _, source, opts, classify, _, _ = parts
  timing = dict(detector=0.0, find=0.0, synth=0.0)
  last = {}

  def timed_detector(rgb):
    t = time.perf_counter()
    dets = detector(rgb)
    timing["detector"] += time.perf_counter() - t
    last[id(rgb)] = dets  # by frame: in video the detector runs ahead, in a thread
    return dets

  def finder(detect_every):
    return predict.FaceFinder(source, timed_detector, int(opts.min_face_size),
                              int(opts.max_faces), detect_every,
                              min_face_fraction=float(opts.min_face_fraction),
                              follow_weight=float(opts.follow_weight))

  every_frame = finder(1)  # photos; its `smallest` is the size kept in either mode

  def found():  # photos: each frame a scene of its own, the detector on every one
    for k in range(args.frames):
      t = time.perf_counter()
      scene = make_scene(pool, args.seed, k, width, height, truth)
      timing["synth"] += time.perf_counter() - t
      t = time.perf_counter()
      faces = every_frame(scene.image)
      timing["find"] += time.perf_counter() - t
      yield (k, scene, last.pop(id(scene.image))), faces

  def followed():  # video: clips, each rendered first, then through predict's video finder
    for c in range(-(-args.frames // args.clip_frames)):
      t = time.perf_counter()
      clip = make_clip(pool, args.seed, c, width, height)
      first = c * args.clip_frames
      scenes = [clip_frame(pool, clip, k - first, truth)
                for k in range(first, min(first + args.clip_frames, args.frames))]
      timing["synth"] += time.perf_counter() - t
      t = time.perf_counter()
      for (k, scene), faces in finder(int(opts.detect_every)).frames(
          ((first + i, scene), scene.image) for i, scene in enumerate(scenes)):
        timing["find"] += time.perf_counter() - t
        yield (k, scene, last.pop(id(scene.image), None)), faces
        t = time.perf_counter()

  counts = {key: np.zeros(len(BANDS), np.int64) for key in
            ("faces", "hits", "correct", "false", "false_bg", "detector_hits")}
  if args.video:  # the same counts on the frames the detector ran on
    counts.update({key: np.zeros(len(BANDS), np.int64) for key in
                   ("detect_faces", "detect_hits", "detect_false")})
  frames, start = [], time.perf_counter()
  used, fell = set(), 0  # the pool faces pasted; pasted faces whose truth fell back
  frames_in = followed() if args.video else found()
  smallest = every_frame.smallest
  for group in predict.classify_frames(frames_in, classify, int(opts.batch_size)):
    for (k, scene, dets), faces, probs, _ in group:
      detected = dets is not None  # video: whether the detector ran on this frame
      dets = dets or []
      boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
      scores = [f.score for f in faces]
      matched = assign(boxes, scores, scene.boxes)
      raw = assign([d[0] for d in dets], [d[1] for d in dets], scene.boxes)
      predicted = np.asarray(probs).argmax(-1) if len(faces) else np.zeros(0, np.int64)
      sides = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], -1))
      c = count(scene.widths, scene.labels, matched, predicted, sides, raw,
                on_background(boxes, scene.boxes))
      if args.video:
        c["detect_faces"] = c["faces"] * detected
        c["detect_hits"] = c["hits"] * detected
        c["detect_false"] = c["false"] * detected
      raw_sides = np.array([min(d[0][2] - d[0][0], d[0][3] - d[0][1]) for d in dets])
      small = (raw >= 0) & (raw_sides < smallest(scene.image)) if len(dets) else raw >= 0
      for key in counts:
        counts[key] += c[key]
      used.update(scene.faces.tolist())
      if truth is not None:
        fell += sum(truth.face(pool, int(f)) is None for f in scene.faces)
      occ = scene.occluded > 0
      hit = np.zeros(len(scene.boxes), bool)
      hit[matched[matched >= 0]] = True
      false_occ = 0  # false boxes that overlap an occluded face most
      if len(scene.boxes) and (matched < 0).any():
        nearest = detect.iou_matrix(boxes[matched < 0], scene.boxes).argmax(1)
        false_occ = int(occ[nearest].sum())
      frames.append(dict(index=k, detected=detected, faces=int(len(scene.boxes)),
                         found=int(c["hits"].sum()),
                         detector_found=int(c["detector_hits"].sum()),
                         correct=int(c["correct"].sum()), false=int(c["false"].sum()),
                         kept=len(faces), raw=len(dets),
                         detector_found_under_min=int(small.sum()), gain=round(scene.gain, 3),
                         noise=round(scene.noise, 2), blur=round(scene.blur, 2),
                         occluded=int(occ.sum()), occluded_found=int(hit[occ].sum()),
                         false_near_occluded=false_occ))
      print(f"{width}x{height} frame {k + 1}/{args.frames}: {len(scene.boxes)} faces, found "
            f"{c['hits'].sum()} (detector {c['detector_hits'].sum()}), {c['correct'].sum()} "
            f"read right, {c['false'].sum()} false; gain {scene.gain:.2f} noise "
            f"{scene.noise:.1f} blur {scene.blur:.2f}; {time.perf_counter() - start:.0f}s",
            file=sys.stderr, flush=True)
  wall = time.perf_counter() - start - timing["synth"]
  n = max(len(frames), 1)
  detections = sum(f["detected"] for f in frames)
  return dict(frames=len(frames), detections=detections,
              counts={k: v.tolist() for k, v in counts.items()},
              seconds=round(wall, 2), frames_per_s=round(len(frames) / wall, 3),
              detector_ms=round(1000 * timing["detector"] / max(detections, 1), 1),
              # photos: the fits and alignment; video: the finder's time in the caller (the
              # fits, the alignment, and waiting for the detector, which runs in a thread)
              landmarks_ms=round(1000 * (timing["find"] - timing["detector"] * (
                  not args.video)) / n, 1),
              synth_ms=round(1000 * timing["synth"] / n, 1),
              detector_found_under_min=sum(f["detector_found_under_min"] for f in frames),
              occluded=sum(f["occluded"] for f in frames),
              occluded_found=sum(f["occluded_found"] for f in frames),
              false_near_occluded=sum(f["false_near_occluded"] for f in frames),
              faces_used=sorted(used), truth_instances=int(counts["faces"].sum()),
              truth_fallbacks=int(fell), per_frame=frames)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--frames", type=int, default=None,
                      help="frames per scene size (default 80 photos: about 2.5 minutes on "
                      f"two busy cores; with --video, {CLIPS * CLIP_FRAMES}: {CLIPS} clips)")
  parser.add_argument("--video", action="store_true",
                      help="clips instead of photos: held shots whose faces sway, run as "
                      "predict runs a video (its detector, detection every "
                      "predict.detect_every frames, faces followed between)")
  parser.add_argument("--clip_frames", type=int, default=CLIP_FRAMES,
                      help="with --video: frames per clip")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--sizes", default=SIZES, help="scene sizes, WIDTHxHEIGHT,...")
  parser.add_argument("--ferplus_dir", default=str(DEFAULT_FERPLUS),
                      help="FERPlus as Microsoft's script writes it (FER2013Valid/label.csv); "
                      "default: ../shared/data/ferplus beside the repository")
  parser.add_argument("--json", default="", help="also write the results to this file")
  parser.add_argument("--truth", default="dlib", choices=TRUTHS,
                      help="the true face boxes: dlib (each face's own, dlib HOG's box on the "
                      "face alone; the fixed rule where it finds none) or fixed (one rule, "
                      "0.89 of the crop's side, for every face)")
  parser.add_argument("--detector_option", action="append", default=[], metavar="KEY=VALUE",
                      help="a detector constructor option on top of predict's (repeatable), "
                      "e.g. min_score=0.4")
  parser.epilog = ("--config.predict.KEY=VALUE (repeatable): a predict option other than its "
                   "default, e.g. --config.predict.min_face_size=16")
  args, rest = parser.parse_known_args(argv)
  config_flags = [a for a in rest if a.startswith("--config.")]
  if len(config_flags) < len(rest):
    fail(f"unrecognized arguments: {' '.join(a for a in rest if a not in config_flags)}")
  try:
    opts, extra, changed = settings(config_flags, args.detector_option)
  except ValueError as e:
    fail(str(e))
  if args.frames is None:
    args.frames = CLIPS * CLIP_FRAMES if args.video else 80
  if args.frames < 1:
    fail(f"--frames must be at least 1, got {args.frames}")
  if args.clip_frames < 1:
    fail(f"--clip_frames must be at least 1, got {args.clip_frames}")
  if args.seed < 0:
    fail(f"--seed must be >= 0, got {args.seed}")
  try:
    sizes = parse_sizes(args.sizes)
  except ValueError as e:
    fail(str(e))
  try:
    pool = load_pool(pathlib.Path(args.ferplus_dir).expanduser())
  except FileNotFoundError as e:
    fail(str(e))

  truth = DlibTruth() if args.truth == "dlib" else None
  start = time.perf_counter()
  try:
    parts = predictor(opts, extra, "video" if args.video else "image")
  except TypeError as e:  # an option the detector that runs does not take
    fail(f"--detector_option: {e}")
  detector, name, source, opts, classify, model, step = parts
  load_s = time.perf_counter() - start
  compile_s = warm_up(classify, int(opts.batch_size))
  names = [f"{w}x{h}" for w, h in sizes]
  from fer_jax.modes import predict  # pylint: disable=g-import-not-at-top
  used = {**predict.detector_options(opts), **extra}
  truth_text = ("truth dlib (each face's dlib HOG box; the fixed rule where none)"
                if truth is not None else "truth fixed (0.89 of the crop's side)")
  header = (f"{len(pool.images)} labelled FERPlus validation faces; {truth_text}; "
            f"seed {args.seed}, "
            + (f"video: clips of {args.clip_frames} frames, detection every "
               f"{opts.detect_every}, " if args.video else "photos, ") +
            f"{args.frames} frames per size; settings: {changed}; "
            f"model {model} (step {step}); detector {name} {used}, "
            f"landmarks {source.name}, min_face_size {opts.min_face_size}, max_faces "
            f"{opts.max_faces}, batch {opts.batch_size}; {os.cpu_count()} CPU cores, niceness "
            f"{os.nice(0)}; model loaded in {load_s:.1f}s, compiled in {compile_s:.1f}s")
  print(header, file=sys.stderr, flush=True)
  results = {}
  for (w, h), size in zip(sizes, names):
    results[size] = run_size(pool, args, w, h, parts, truth)
  fallback = None
  if truth is not None:
    used = {f for size in names for f in results[size].pop("faces_used")}
    fell = sum(truth.face(pool, f) is None for f in used)
    fallback = dict(faces=len(used), fallbacks=fell,
                    instances=sum(results[s]["truth_instances"] for s in names),
                    instance_fallbacks=sum(results[s]["truth_fallbacks"] for s in names))
  else:
    for size in names:
      results[size].pop("faces_used")

  print(header)
  if fallback is not None:
    print(f"truth: dlib found no box on {fallback['fallbacks']} of the {fallback['faces']} "
          f"distinct faces used ({ratio(fallback['fallbacks'], fallback['faces']):.1%}; "
          f"{fallback['instance_fallbacks']} of {fallback['instances']} pasted faces, "
          f"{ratio(fallback['instance_fallbacks'], fallback['instances']):.1%}): the fixed rule "
          "there")
  print(f"\nrecall at IoU {IOU} (predict's faces; detector recall: its raw boxes), expression "
        "accuracy on the found faces (argmax vs FERPlus majority label), false positives per "
        "frame, by face width (the 48 px crop's side)\n")
  print(table(results, names))
  print()
  for size in names:
    r = results[size]
    finder = ("finder in the caller (fits, alignment, waiting for the detector's thread)"
              if args.video else "landmarks and alignment")
    print(f"{size}: {r['frames']} frames in {r['seconds']:.1f}s = {r['frames_per_s']:.2f} "
          f"frames/s (detector {r['detector_ms']:.0f} ms a detection on "
          f"{r['detections']} frames, {finder} "
          f"{r['landmarks_ms']:.0f} ms/frame; scene synthesis {r['synth_ms']:.0f} ms/frame, "
          f"not counted); occluded faces found {r['occluded_found']}/{r['occluded']}, false "
          f"boxes nearest an occluded face {r['false_near_occluded']}; faces the detector found "
          f"with a box under min_face_size {r['detector_found_under_min']}")
    if args.video:
      c = r["counts"]
      print(f"{size}: false boxes a frame on the detection frames "
            f"{ratio(sum(c['detect_false']), r['detections']):.2f}, on the followed frames "
            f"{ratio(sum(c['false']) - sum(c['detect_false']), r['frames'] - r['detections']):.2f}")
  if args.json:
    out = dict(command=" ".join(["python3", "bench/classroom.py"] + list(
        argv if argv is not None else sys.argv[1:])), date=datetime.date.today().isoformat(),
               machine=dict(processor=platform.processor(), cpus=os.cpu_count(),
                            niceness=os.nice(0)),
               seed=args.seed, frames=args.frames, video=args.video,
               clip_frames=args.clip_frames if args.video else None, sizes=names,
               bands=band_names(),
               faces_in_pool=len(pool.images), model=model, step=int(step), detector=name,
               landmarks=source.name, options=opts.to_dict(), detector_options=extra,
               settings=changed, truth=args.truth, truth_fallbacks=fallback,
               load_s=round(load_s, 2),
               compile_s=round(compile_s, 2), results=results)
    pathlib.Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
  main()
