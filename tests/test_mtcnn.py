"""MTCNN's pure parts against hand-computed values: the pyramid, suppression, box arithmetic and
crops. (That the detector finds the committed photo's face: test_detectors.py.)"""

import pathlib

import numpy as np
import pytest

from fer_jax.predict import detectors
from fer_jax.predict import mtcnn

# MTCNN's box (its own convention) of the astronaut's face in the 200 px crop below, 2026-12-07.
GOLDEN = [74.94, 27.83, 139.70, 110.18]


def test_the_pyramid_maps_the_smallest_face_onto_the_window_and_stops_at_it():
  s = mtcnn.scales(720, 1280, 20)
  assert s[0] == pytest.approx(12 / 20)
  np.testing.assert_allclose(np.array(s[1:]) / np.array(s[:-1]), 0.709)
  assert len(s) == 11  # 720 * 0.6 * 0.709^10 = 13.9 px holds the 12 px window; ^11: 9.8 does not
  assert mtcnn.scales(11, 1000, 12) == []


def test_suppression_by_union_and_by_the_smaller_box():
  boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [2, 2, 5, 5]], np.float64)
  scores = np.array([0.9, 0.8, 0.7, 0.6])
  # box 1 overlaps box 0 by 81 / 119 = 0.68; box 3 lies inside box 0: 16 / 100 by union,
  # 16 / 16 by the smaller box
  assert mtcnn.nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
  assert mtcnn.nms(boxes, scores, 0.5, "min").tolist() == [0, 2]
  assert mtcnn.nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("threshold", [0.5, 0.7])
@pytest.mark.parametrize("whole", [True, False])
def test_opencvs_suppression_keeps_the_same_boxes_as_numpys(threshold, whole):
  rng = np.random.default_rng(0)
  xy = rng.uniform(0, 500, (1000, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(10, 60, (1000, 1))], 1)
  boxes = np.floor(boxes) if whole else boxes
  scores = rng.uniform(0.01, 1, 1000)
  fast = mtcnn.nms(boxes, scores, threshold)
  assert 600 < len(fast) < 1000  # overlaps to decide
  assert fast.tolist() == mtcnn.greedy_nms(boxes, scores, threshold).tolist()
  scores[:70] = 0.0  # OpenCV would drop these: NumPy's suppression takes them
  assert mtcnn.nms(boxes, scores, threshold).tolist() == mtcnn.greedy_nms(
      boxes, scores, threshold).tolist()


def test_box_arithmetic():
  np.testing.assert_allclose(mtcnn.square(np.array([[0.0, 0, 10, 4]])), [[0, -3, 10, 7]])
  np.testing.assert_allclose(  # offsets are fractions of the inclusive width and height (10)
      mtcnn.regress(np.array([[0.0, 0, 9, 9]]), np.array([[0.1, 0, -0.1, 0.2]])), [[1, 0, 8, 11]])
  np.testing.assert_allclose(
      mtcnn.regress(np.array([[0.0, 0, 10, 10]]), np.array([[0.1, 0, -0.1, 0.2]]),
                    inclusive=False), [[1, 0, 9, 12]])


def test_crops_take_mtcnns_pixels_and_zero_outside_the_frame():
  image = np.arange(100, dtype=np.float32).reshape(10, 10, 1)
  # (1, 1, 4, 4) is columns and rows 0..3 (MTCNN's indexing); at its own size, the pixels
  out = mtcnn.crops(image, np.array([[1.0, 1, 4, 4]]), 4)
  np.testing.assert_array_equal(out[0, :, :, 0], image[:4, :4, 0])
  # half outside on the left and top: zeros there, the frame's corner at the bottom right
  out = mtcnn.crops(image, np.array([[-1.0, -1, 2, 2]]), 4)
  np.testing.assert_array_equal(out[0, :2, :, 0], 0)
  np.testing.assert_array_equal(out[0, :, :2, 0], 0)
  np.testing.assert_array_equal(out[0, 2:, 2:, 0], image[:2, :2, 0])


def test_missing_weights_are_named(tmp_path):
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pytest.skip("torch is not installed")
  with pytest.raises(detectors.DetectorUnavailable, match="pnet.pt, rnet.pt, onet.pt missing"):
    detectors.make_detector("mtcnn", weights_dir=str(tmp_path))


@pytest.fixture(scope="module")
def cascade():
  try:
    detectors.make_detector("mtcnn")
  except detectors.DetectorUnavailable as e:
    pytest.skip(str(e))
  return mtcnn.Cascade(detectors.mtcnn_weights_dir(), thresholds=detectors.MTCNN_THRESHOLDS)


def _astronaut():
  import cv2  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parent / "data" / "photos" / "astronaut.png"
  return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_brighten_scales_a_dim_frame_up_to_its_cap_and_leaves_a_bright_one():
  ramp = np.broadcast_to(np.arange(100, dtype=np.uint8)[:, None, None], (100, 40, 3))
  # the grey 99th percentile of rows 0, 4, ..., 96, 10 columns each (250 values; the top 10 are
  # 96): 96, so the gain is 255 / 96 = 2.656, saturating at 255 from row 96 on
  out = detectors.brighten(ramp, max_gain=3.0)
  np.testing.assert_array_equal(out[:, 0, 0],
                                np.minimum(np.round(np.arange(100) * 255 / 96), 255))
  assert out[50, 0, 0] == 133 and out[95, 0, 0] == 252 and out[96, 0, 0] == 255
  dark = ramp // 4  # percentile 24: the gain 10.6 is capped at 3
  np.testing.assert_array_equal(detectors.brighten(dark, 3.0)[:, 0, 0], dark[:, 0, 0] * 3)
  bright = (ramp.astype(np.int32) * 2 + 45).astype(np.uint8)  # percentile 237: gain 1.076 < 1.1
  assert detectors.brighten(bright, 3.0) is bright
  brighter = bright - np.uint8(6)  # percentile 231: gain 1.104
  assert detectors.brighten(brighter, 3.0).max() == 255
  assert detectors.brighten(dark, 1.0) is dark
  empty = np.zeros((0, 0, 3), np.uint8)
  assert detectors.brighten(empty, 3.0) is empty


def test_mtcnn_finds_a_dim_face_only_brightened(cascade):
  """The astronaut at a tenth of its light, 96 px: the cascade alone finds nothing."""
  import cv2  # pylint: disable=g-import-not-at-top
  small = cv2.resize(_astronaut(), (96, 96), interpolation=cv2.INTER_AREA)
  dim = (small * 0.1).astype(np.uint8)
  assert detectors.make_detector("mtcnn", min_face=12, max_gain=1.0)(dim) == []
  (box, score), = detectors.make_detector("mtcnn", min_face=12)(dim)
  (bright_box, _), = detectors.make_detector("mtcnn", min_face=12)(small)
  assert score > 0.9
  np.testing.assert_allclose(box, bright_box, atol=2.0)


def test_a_torch_that_cannot_run_makes_mtcnn_unavailable_and_auto_falls_back(cascade,
                                                                             monkeypatch):
  from fer_jax.modes import predict  # pylint: disable=g-import-not-at-top

  def broken(*args, **kwargs):
    raise ImportError("numpy.core.multiarray failed to import")
  monkeypatch.setattr(mtcnn, "Cascade", broken)
  with pytest.raises(detectors.DetectorUnavailable,
                     match=r"'mtcnn': torch cannot run here \(numpy.core.multiarray failed"):
    detectors.make_detector("mtcnn")
  opts = predict.options({"predict": {"detector": "auto"}})
  predict.make_detector(opts, "image")  # BlazeFace, or dlib's HOG where it cannot run either
  assert opts.detector in ("blazeface", "hog_up1") and opts.min_face_size == 20


def test_the_cascade_gives_the_same_box_on_the_committed_photo(cascade):
  """A golden box: a change to the resizing, the suppression or the regressions moves it."""
  boxes, scores = cascade(_astronaut()[20:220, 60:260])
  assert len(boxes) == 1 and scores[0] > 0.99
  np.testing.assert_allclose(boxes[0], GOLDEN, atol=0.05)


def test_the_cascade_on_frames_without_room_for_a_face(cascade):
  for shape in ((0, 0, 3), (11, 11, 3), (11, 400, 3)):
    boxes, scores = cascade(np.zeros(shape, np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,)
  with pytest.raises(ValueError, match=r"H x W x 3 RGB frame, got an array of shape \(50, 50\)"):
    cascade(np.zeros((50, 50), np.uint8))
  with pytest.raises(ValueError, match="min_face must be > 0 px, got 0.0"):
    cascade(np.zeros((50, 50, 3), np.uint8), min_face=0)
