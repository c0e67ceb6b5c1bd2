"""Landmark sources on real faces: the template, dlib (offline), face-alignment (local weights)."""

import json
import pathlib

import cv2
import numpy as np
import pytest

from fer_jax.data import landmarks


def sample_faces(sample_dir, n=12):
  folder = sample_dir / "FER2013Train"
  names = sorted(p.name for p in folder.glob("*.png"))[:n]
  return [cv2.imread(str(folder / name), cv2.IMREAD_GRAYSCALE) for name in names]


def test_template_is_a_face_and_records_its_derivation():
  pts = landmarks.template_landmarks(48)
  assert pts.shape == (68, 2) and pts.min() > 0 and pts.max() < 48
  eyes_y = pts[36:48, 1].mean()
  assert eyes_y < pts[30, 1] < pts[48:68, 1].mean()  # eyes, nose tip, mouth, top to bottom
  assert pts[36:42, 0].mean() < pts[42:48, 0].mean()  # image-left eye is on the left
  meta = json.loads(landmarks.TEMPLATE_PATH.read_text())
  assert meta["kept"] > 1000 and "dlib" in meta["source"]
  np.testing.assert_allclose(landmarks.template_landmarks(96), (pts + 0.5) * 2 - 0.5, atol=1e-4)


def test_dlib_fits_real_faces_near_the_template(sample_dir):
  source = landmarks.DlibSource()
  fitter = landmarks.AlignedFitter(source)
  devs = []
  for img in sample_faces(sample_dir):
    pts, fitted = fitter(img)
    assert pts.shape == (68, 2)
    if fitted:
      devs.append(landmarks.landmark_deviation(pts, 48))
      assert landmarks.plausible(pts, 48)
  assert len(devs) >= 10
  assert np.median(devs) < 0.12  # ~5 px at 48 px: the faces are aligned, but each differs
  assert max(devs) > 0.01  # per-image fits, not the template


def test_dlib_fit_upscales_only_the_box_and_its_margin_and_gives_the_whole_frame_fit(sample_dir):
  """A 48 px face is fitted at 4x. Upscaling only its box and a margin of half a side gives
  the landmarks that upscaling the whole 1280x720 frame gives (what `fit` did before, at 16x
  the pixels per face), and the face alone (the prepared data's fit) is unchanged."""
  source = landmarks.DlibSource()

  def whole_frame_fit(gray, box, s=4):
    big = cv2.resize(gray, (gray.shape[1] * s, gray.shape[0] * s), interpolation=cv2.INTER_CUBIC)
    return (source._predict(big, [(v + 0.5) * s - 0.5 for v in box]) + 0.5) / s - 0.5

  for k, img in enumerate(sample_faces(sample_dir, n=3)):
    np.testing.assert_array_equal(source.fit(img), whole_frame_fit(img, (0, 0, 47, 47)))
    frame = np.full((720, 1280), 128, np.uint8)
    x, y = 300 + 200 * k, 200 + 150 * k
    frame[y:y + 48, x:x + 48] = img
    box = (x, y, x + 47, y + 47)
    np.testing.assert_allclose(source.fit(cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB), box),
                               whole_frame_fit(frame, box), atol=1e-4)


def test_implausible_fits_fall_back_to_the_template():
  class Lost:
    name = "lost"

    def fit(self, image, box=None):
      return np.full((68, 2), 200.0, np.float32)  # far outside the frame

  pts, fitted = landmarks.AlignedFitter(Lost())(np.zeros((48, 48), np.uint8))
  assert not fitted
  np.testing.assert_array_equal(pts, landmarks.template_landmarks(48))


def test_align_face_brings_landmarks_onto_the_template(sample_dir):
  img = sample_faces(sample_dir, 1)[0]
  pts = landmarks.DlibSource().fit(img)
  # A bigger frame with the face moved and scaled: alignment must undo it.
  m = np.array([[2.0, 0.0, 30.0], [0.0, 2.0, 10.0]], np.float32)
  big = cv2.warpAffine(img, m, (200, 160))
  moved = pts @ m[:, :2].T + m[:, 2]
  aligned, aligned_pts, _ = landmarks.align_face(big, moved, 48)
  direct, direct_pts, _ = landmarks.align_face(img, pts, 48)
  assert aligned.shape == (48, 48, 1)
  # The same face, wherever and however large it was: the same aligned face and points.
  np.testing.assert_allclose(aligned_pts, direct_pts, atol=0.05)
  inner = np.s_[10:38, 10:38]  # away from the borders, which the two frames fill differently
  assert np.abs(aligned[inner].astype(float) - direct[inner].astype(float)).mean() < 3
  # And it sits on the template at least as well as the unaligned face did.
  assert landmarks.landmark_deviation(aligned_pts, 48) <= landmarks.landmark_deviation(pts, 48) + 1e-3


def test_face_alignment_without_weights_names_the_files(tmp_path, monkeypatch):
  torch = pytest.importorskip("torch")
  pytest.importorskip("face_alignment")
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
  monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch" / "hub"))
  # The torch hub folder found without importing torch is torch's own.
  assert landmarks.hub_checkpoints() == pathlib.Path(torch.hub.get_dir()) / "checkpoints"
  with pytest.raises(landmarks.LandmarksUnavailable) as e:
    landmarks.FaceAlignmentSource(weights_dir=str(tmp_path / "mine"))
  msg = str(e.value)
  assert landmarks.FAN_WEIGHTS in msg and landmarks.S3FD_WEIGHTS in msg
  assert str(tmp_path / "mine") in msg and str(tmp_path / "torch" / "hub") in msg
  # best_available falls back to dlib, which works offline.
  assert landmarks.best_available("face_alignment", weights_dir=str(tmp_path)).name == "dlib"


def test_unknown_source_is_named():
  with pytest.raises(ValueError, match="landmark source must be one of"):
    landmarks.make_source("mediapipe")
