"""Image -> faces, each a box and 68 iBUG landmarks, from one of three sources.

- `template`: the canonical mean shape of FERPlus faces (`assets/ferplus_template.json`,
  derived from real faces by `scripts/derive_template.py`), for data that is already aligned.
- `dlib`: dlib's HOG face detector and the 68-point shape predictor that the
  `face_recognition_models` package ships; works offline.
- `face_alignment`: the face-alignment package (2D FAN), with its weights read from a local
  folder or the torch hub cache, never downloaded.

Every source answers `detect(image) -> list[Face]` and `fit(image, box) -> [68, 2]`. Points are
(x, y) in pixel-index coordinates (the centre of pixel (row i, column j) is (x=j, y=i)).

Also here: `align_face`, the similarity warp that brings a detected face onto the template at
the training face size, so that photos and video frames look like the aligned training data.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import os
import pathlib
import tempfile
from typing import Any, Callable

import cv2
import numpy as np

# dlib fits: a face box is upscaled to about this side (px) or by `fit_upscale`, whichever is
# less (a 48 px FERPlus face: 4x, as the prepared data was fitted).
FIT_SIDE = 192
ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
TEMPLATE_PATH = ASSETS / "ferplus_template.json"

# face-alignment's weight files, as its own code names them (api.py, detection/sfd).
FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
S3FD_WEIGHTS = "s3fd-619a316812.pth"


@dataclasses.dataclass
class Face:
  """One face: box (x0, y0, x1, y1), landmarks [68, 2] and a detector score."""
  box: np.ndarray
  landmarks: np.ndarray
  score: float = 1.0


class LandmarksUnavailable(RuntimeError):
  """A landmark source cannot run here (missing package or weights); the message says why."""


# --------------------------------------------------------------------------------------------
# The template.

@functools.lru_cache(maxsize=1)
def _template_unit() -> np.ndarray:
  if not TEMPLATE_PATH.exists():
    raise FileNotFoundError(f"landmark template {TEMPLATE_PATH} is missing; "
                            "rebuild it with `python scripts/derive_template.py`")
  data = json.loads(TEMPLATE_PATH.read_text())
  pts = np.asarray(data["points"], np.float64)
  if pts.shape != (68, 2):
    raise ValueError(f"{TEMPLATE_PATH}: 'points' must be 68 (x, y) pairs, got {pts.shape}")
  return pts


def template_landmarks(size: int) -> np.ndarray:
  """The mean FERPlus shape for a size x size aligned face, float32 [68, 2].

  The template is stored in unit coordinates (x + 0.5) / size, so it scales to any face size.
  """
  return (_template_unit() * size - 0.5).astype(np.float32)


def landmark_deviation(landmarks: np.ndarray, size: int) -> float:
  """Mean distance, as a fraction of the face size, between `landmarks` and the template."""
  d = np.linalg.norm(np.asarray(landmarks, np.float64) - template_landmarks(size), axis=-1)
  return float(d.mean() / size)


# --------------------------------------------------------------------------------------------
# Sources.

def to_gray_u8(image: np.ndarray) -> np.ndarray:
  """An image as grey uint8 [H, W] (floats in [0, 1] or [0, 255] scaled; RGB converted)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
  if image.ndim == 3 and image.shape[2] == 1:
    return image[..., 0]
  if image.ndim == 3:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  return image


def _to_rgb_u8(image: np.ndarray) -> np.ndarray:
  gray_or_rgb = np.asarray(image)
  if gray_or_rgb.ndim == 2 or gray_or_rgb.shape[2] == 1:
    g = to_gray_u8(gray_or_rgb)
    return np.repeat(g[..., None], 3, axis=2)
  return gray_or_rgb.astype(np.uint8)


class TemplateSource:
  """Aligned faces: the whole image is the face, and its landmarks are the template."""
  name = "template"
  fits_gray = True  # `fit` gives the same landmarks on the grey image (it reads no pixels)

  def fit(self, image: np.ndarray, box=None) -> np.ndarray:
    h, w = np.asarray(image).shape[:2]
    pts = template_landmarks(1) + 0.5  # unit coordinates
    x0, y0, x1, y1 = box if box is not None else (-0.5, -0.5, w - 0.5, h - 0.5)
    return (np.stack([x0 + pts[:, 0] * (x1 - x0), y0 + pts[:, 1] * (y1 - y0)], -1)
            ).astype(np.float32)

  def detect(self, image: np.ndarray) -> list[Face]:
    h, w = np.asarray(image).shape[:2]
    box = np.array([-0.5, -0.5, w - 0.5, h - 0.5], np.float32)
    return [Face(box, self.fit(image, box), 1.0)]


def dlib_model_dir() -> pathlib.Path:
  """The folder of `face_recognition_models`' model files, found without importing it.

  Importing the package runs `pkg_resources`, which recent setuptools no longer ship.
  """
  spec = importlib.util.find_spec("face_recognition_models")
  if spec is None or not spec.submodule_search_locations:
    raise LandmarksUnavailable(
        "the dlib landmark source needs the face_recognition_models package "
        "(pip install face_recognition_models dlib-bin)")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "models"


@functools.lru_cache(maxsize=2)
def _shape_predictor(path: str):
  """dlib's shape predictor read from `path` once per process (0.4 s a read); dlib documents one
  instance as safe to use from several threads at once."""
  import dlib  # pylint: disable=g-import-not-at-top
  return dlib.shape_predictor(path)


class DlibSource:
  """dlib's HOG detector and 68-point shape predictor.

  Args:
    upsample: how many times the detector doubles the image to find small faces.
    fit_upscale: `fit` runs the predictor on the face box resized by this factor (FERPlus
      faces are 48 px; the predictor is far more reliable on them at 4x).
  """
  name = "dlib"
  fits_gray = True  # `fit` gives the same landmarks on the grey image (it converts to grey)

  def __init__(self, upsample: int = 1, fit_upscale: int = 4, model_dir: str | None = None):
    try:
      import dlib  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise LandmarksUnavailable("the dlib landmark source needs dlib (pip install dlib-bin)") from e
    path = pathlib.Path(model_dir) if model_dir else dlib_model_dir()
    predictor = path / "shape_predictor_68_face_landmarks.dat"
    if not predictor.exists():
      raise LandmarksUnavailable(f"dlib's 68-point model is missing: expected {predictor}")
    self._dlib = dlib
    self._detector = None  # made on first use: prediction fits inside boxes and never needs it
    self._predictor = _shape_predictor(str(predictor))
    self.upsample = upsample
    self.fit_upscale = fit_upscale

  def _predict(self, gray: np.ndarray, box) -> np.ndarray:
    rect = self._dlib.rectangle(*[int(round(v)) for v in box])
    shape = self._predictor(gray, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

  def fit(self, image: np.ndarray, box=None) -> np.ndarray:
    """68 landmarks [68, 2] (x, y) fitted inside `box` (x0, y0, x1, y1; default: the image).

    Only the box and a margin of half its side around it are upscaled, by `fit_upscale` for a
    face up to `FIT_SIDE / fit_upscale` px and less for larger ones (at least to `FIT_SIDE`
    px), so that a face of a 720p frame costs what a FERPlus face does.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
      image = to_gray_u8(image)  # scaled by the whole image's range, as before cropping
    h, w = image.shape[:2]
    if box is None:
      box = (0, 0, w - 1, h - 1)
    box = [float(v) for v in box]
    side = max(min(box[2] - box[0], box[3] - box[1]), 1.0)
    s = int(max(1, min(self.fit_upscale, math.ceil(FIT_SIDE / side))))
    m = 0.5 * side
    x0, y0 = max(int(math.floor(box[0] - m)), 0), max(int(math.floor(box[1] - m)), 0)
    x1, y1 = min(int(math.ceil(box[2] + m)) + 1, w), min(int(math.ceil(box[3] + m)) + 1, h)
    if x1 <= x0 or y1 <= y0:  # the box lies outside the image: fit on the nearest pixels
      x0, y0, x1, y1 = 0, 0, w, h
    region = to_gray_u8(image[y0:y1, x0:x1])  # only the region: a 720p frame costs a face
    local = [box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]
    if s == 1:
      pts = self._predict(np.ascontiguousarray(region), local)
    else:
      big = cv2.resize(region, (region.shape[1] * s, region.shape[0] * s),
                       interpolation=cv2.INTER_CUBIC)
      pts = (self._predict(big, [(v + 0.5) * s - 0.5 for v in local]) + 0.5) / s - 0.5
    return (pts + np.float32([x0, y0])).astype(np.float32)

  def detect(self, image: np.ndarray) -> list[Face]:
    gray = to_gray_u8(image)
    if self._detector is None:
      self._detector = self._dlib.get_frontal_face_detector()
    rects, scores, _ = self._detector.run(gray, self.upsample, 0.0)
    faces = []
    for rect, score in zip(rects, scores):
      box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float32)
      faces.append(Face(box, self._predict(gray, box), float(score)))
    return faces


def hub_checkpoints() -> pathlib.Path:
  """`torch.hub.get_dir()/checkpoints` as torch computes it by default ($TORCH_HOME/hub, else
  $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub), without importing torch."""
  home = os.getenv("TORCH_HOME") or os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
  return pathlib.Path(os.path.expanduser(home)) / "hub" / "checkpoints"


class FaceAlignmentSource:
  """face-alignment's 2D FAN, weights from `weights_dir` or the torch hub cache.

  The face boxes come from face-alignment's S3FD detector when its weights are present, else
  from dlib's HOG detector.
  """
  name = "face_alignment"

  def __init__(self, weights_dir: str | None = None, device: str = "cpu"):
    # The weights are looked for before face-alignment (and torch, 1.4 s of imports) is
    # imported: where they are absent, as here, predict falls back to dlib at once.
    places = ([pathlib.Path(weights_dir)] if weights_dir else []) + [hub_checkpoints()]
    find = lambda name: next((p / name for p in places if (p / name).exists()), None)
    fan, s3fd = find(FAN_WEIGHTS), find(S3FD_WEIGHTS)
    if fan is None:
      raise LandmarksUnavailable(
          f"face-alignment's weights are not on this machine and are never downloaded at run "
          f"time. Put {FAN_WEIGHTS} (landmarks; and optionally {S3FD_WEIGHTS}, the face "
          f"detector) in one of: " + ", ".join(str(p) for p in places) +
          " (the folder given as config.predict.face_alignment_dir, or the torch hub cache).")
    try:
      import face_alignment  # pylint: disable=g-import-not-at-top
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise LandmarksUnavailable(
          "the face_alignment landmark source needs the face-alignment package and torch") from e
    # face-alignment looks for its weights in <hub dir>/checkpoints; point it at a folder that
    # links to the files we found, and put the hub dir back afterwards.
    old_hub = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as tmp:
      (pathlib.Path(tmp) / "checkpoints").mkdir()
      os.symlink(fan, pathlib.Path(tmp) / "checkpoints" / FAN_WEIGHTS)
      torch.hub.set_dir(tmp)
      try:
        kwargs = dict(face_detector="sfd", face_detector_kwargs={"path_to_detector": str(s3fd)}) \
            if s3fd else dict(face_detector="dlib")
        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D,
                                                device=device, compile=False, **kwargs)
      finally:
        torch.hub.set_dir(old_hub)
    self._dlib_boxes = None if s3fd else DlibSource(upsample=1)

  def fit(self, image: np.ndarray, box=None) -> np.ndarray:
    rgb = _to_rgb_u8(image)
    h, w = rgb.shape[:2]
    box = box if box is not None else (0, 0, w - 1, h - 1)
    pts = self._fa.get_landmarks_from_image(rgb, detected_faces=[np.asarray(box, np.float32)])
    return np.asarray(pts[0][:, :2], np.float32)

  def detect(self, image: np.ndarray) -> list[Face]:
    rgb = _to_rgb_u8(image)
    boxes = None
    if self._dlib_boxes is not None:
      boxes = [f.box for f in self._dlib_boxes.detect(rgb)]
      if not boxes:
        return []
    pts, _, found = self._fa.get_landmarks_from_image(rgb, detected_faces=boxes,
                                                      return_bboxes=True)
    if pts is None:
      return []
    faces = []
    for p, b in zip(pts, found):
      score = float(b[4]) if len(b) > 4 else 1.0
      faces.append(Face(np.asarray(b[:4], np.float32), np.asarray(p[:, :2], np.float32), score))
    return faces


# The landmark sources by name: name -> (constructor, the keyword options it takes).
SOURCES: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "template": (TemplateSource, ()),
    "dlib": (DlibSource, ("upsample", "fit_upscale", "model_dir")),
    "face_alignment": (FaceAlignmentSource, ("weights_dir", "device")),
}


def make_source(name: str, **kwargs):
  """A landmark source by name (`SOURCES`); the kwargs its constructor takes go to it."""
  if name not in SOURCES:
    raise ValueError(f"landmark source must be one of {tuple(SOURCES)}, got {name!r}")
  make, takes = SOURCES[name]
  return make(**{k: v for k, v in kwargs.items() if k in takes})


def best_available(preferred: str = "face_alignment", **kwargs):
  """The preferred source if it can run here, else dlib (the offline fallback)."""
  try:
    return make_source(preferred, **kwargs)
  except LandmarksUnavailable:
    if preferred == "dlib":
      raise
    return make_source("dlib", **kwargs)


# --------------------------------------------------------------------------------------------
# Aligned data and alignment.

def plausible(landmarks: np.ndarray, size: int, max_deviation: float = 0.25) -> bool:
  """Whether fitted landmarks look like a face in an aligned frame of side `size`.

  On FERPlus, dlib's fits stay within 0.16 of the template (mean point distance over face
  size) for 95% of faces, pose and zoom included; beyond `max_deviation`, points outside the
  frame, eyes closer than 15% of the frame or a mouth above the eyes mean the fit lost the face.
  """
  pts = np.asarray(landmarks, np.float64)
  if pts.shape != (68, 2) or not np.all(np.isfinite(pts)):
    return False
  if np.any(pts < -0.2 * size) or np.any(pts > 1.2 * size):
    return False
  left, right = pts[36:42].mean(0), pts[42:48].mean(0)
  if np.linalg.norm(right - left) < 0.15 * size:
    return False
  if pts[48:68, 1].mean() <= (left[1] + right[1]) / 2:
    return False
  return landmark_deviation(pts, size) <= max_deviation


class AlignedFitter:
  """Per-image landmarks for an aligned dataset: a source fitted on the whole frame, falling
  back to the template when the fit is implausible (see `plausible`), which is where a
  predictor has lost the face."""

  def __init__(self, source, max_deviation: float = 0.25):
    self.source = source
    self.max_deviation = max_deviation

  def __call__(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Returns (landmarks [68, 2], fitted) where `fitted` is False for the template fallback."""
    size = np.asarray(image).shape[0]
    if self.source.name != "template":
      pts = self.source.fit(image)
      if plausible(pts, size, self.max_deviation):
        return pts.astype(np.float32), True
    return template_landmarks(size), False


def similarity_to_template(landmarks: np.ndarray, face_size: int) -> np.ndarray:
  """The [2, 3] similarity transform that best maps `landmarks` onto the template."""
  src = np.asarray(landmarks, np.float32)
  dst = template_landmarks(face_size)
  m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
  if m is None:  # degenerate points (all equal, or collinear): no similarity fits them
    raise ValueError("cannot align a face whose landmarks are degenerate")
  return m.astype(np.float32)


def align_face(image: np.ndarray, landmarks: np.ndarray, face_size: int,
               gray: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Warp a face onto the template at `face_size`.

  Returns:
    (aligned image [F, F, C] uint8, landmarks in the aligned image [68, 2], the [2, 3] matrix).
  """
  m = similarity_to_template(landmarks, face_size)
  img = to_gray_u8(image)[..., None] if gray else _to_rgb_u8(image)
  warped = cv2.warpAffine(img, m, (face_size, face_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
  if warped.ndim == 2:
    warped = warped[..., None]
  pts = np.asarray(landmarks, np.float32) @ m[:, :2].T + m[:, 2]
  return warped, pts.astype(np.float32), m
