"""`--mode=predict` on real faces: photos, a video made of them, the tracker, the class
timeline, the privacy modes and bad inputs; and the model a checkpoint's own config describes,
as predict and eval rebuild it."""

import csv
import functools
import json
import logging
import os
import pathlib
import shutil
import threading
import types

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import runs
from fer_jax.data import crops, labels
from fer_jax.data import landmarks as landmarks_lib
from fer_jax.modes import predict, train
from fer_jax.predict import detectors, inputs, recorder, tracking
from fer_jax.predict import model as predict_model
from fer_jax import defaults
from fer_jax import errors
from fer_jax import state as state_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "photos"
# dlib's boxes of the two faces (x0, y0, x1, y1), used to cut head patches for the video.
FACE_BOXES = {"astronaut.png": (129, 55, 204, 130), "grace_hopper.jpg": (180, 139, 366, 325)}
BRANCHES = ("face", "eyes", "nose", "mouth", "occluded")
REAL_CAPTURE = cv2.VideoCapture


@pytest.fixture(scope="module")
def run_dir(prepared, tmp_path_factory):
  """The tiny test config trained for a few steps: a checkpoint to predict with."""
  from configs import test as test_config_module  # pylint: disable=g-import-not-at-top
  config = test_config_module.get_config()
  config.data.manual_dir = str(runs.SAMPLE)
  config.data.tfds_dir = prepared[0]
  config.num_train_steps = 3
  config.eval_at_end = False
  workdir = tmp_path_factory.mktemp("predict") / "run"
  train.train_and_evaluate(config, str(workdir))
  return workdir


def overrides(**kw):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.predict.landmarks = "dlib"
  config.predict.detector = "hog_up1"  # dlib's HOG: fast on these large faces
  config.predict.update(kw)
  return config


def read_rows(out):
  rows = [json.loads(l) for l in (out / "faces.jsonl").read_text().splitlines()]
  with open(out / "faces.csv", newline="") as f:
    assert len(list(csv.DictReader(f))) == len(rows)
  return rows


def head(name, size):
  """A size x size patch around the face of a test photo (the face about 60% of it)."""
  img = cv2.imread(str(PHOTOS / name))
  x0, y0, x1, y1 = FACE_BOXES[name]
  cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * (x1 - x0)
  s = size / (2 * half)
  m = np.float32([[s, 0, -(cx - half) * s], [0, s, -(cy - half) * s]])
  return cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REPLICATE)


def check_face_row(row):
  probs = np.array([row[c] for c in labels.CLASS_NAMES])
  assert abs(probs.sum() - 1) < 1e-4 and np.all(probs >= 0)
  assert row["label"] == labels.CLASS_NAMES[int(probs.argmax())]
  assert row["label_prob"] == pytest.approx(probs.max())
  mu = np.array([row[f"mu_{b}"] for b in BRANCHES])
  assert np.all((mu > 0) & (mu < 1)), mu
  assert row["landmark_source"] == "dlib" and not row["no_face"]


# --------------------------------------------------------------------------------------------
# The tracker, alone.

def test_tracker_matches_greedily_and_ends_tracks_after_the_gap():
  s = tracking.TrackerState()
  s, ids = tracking.update(s, [[0, 0, 10, 10], [100, 0, 110, 10]], 0)
  assert ids == [0, 1]
  # Moved a little, listed in the other order: each keeps its id.
  s, ids = tracking.update(s, [[102, 0, 112, 10], [1, 0, 11, 10]], 1)
  assert ids == [1, 0]
  # Two boxes overlap track 0; the better overlap wins, the other starts a track.
  s, ids = tracking.update(s, [[4, 0, 14, 10], [1, 1, 11, 11]], 2)
  assert ids == [2, 0]
  # Track 1 unseen for frames 2..4 (3 frames): with max_gap=2 it has ended at frame 5.
  s, ids = tracking.update(s, [[102, 0, 112, 10]], 5, max_gap=2)
  assert ids == [3]
  s, ids = tracking.update(s, [[102, 0, 112, 10]], 8, max_gap=2)  # 2 frames unseen: continues
  assert ids == [3] and s.next_id == 4
  np.testing.assert_allclose(tracking.iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10]]), [[1 / 3]])


# --------------------------------------------------------------------------------------------
# Photos.

def test_photos_faces_landmarks_and_a_row_that_matches_the_model(run_dir, tmp_path):
  out = tmp_path / "out"
  summary = predict.predict(str(run_dir), str(PHOTOS), str(out), overrides=overrides())
  assert summary["kind"] == "folder" and summary["frames"] == 2 and summary["faces"] == 2
  assert summary["landmark_source"] == "dlib" and summary["checkpoint_step"] == 3
  rows = read_rows(out)
  assert [r["source"] for r in rows] == ["astronaut.png", "grace_hopper.jpg"]
  for row in rows:
    check_face_row(row)
    assert not row["edge"] and row["track"] is None and row["time"] is None
    x0, y0, x1, y1 = row["box"]
    expected = FACE_BOXES[row["source"]]
    assert abs((x0 + x1) / 2 - (expected[0] + expected[2]) / 2) < 15
    pts = np.array(row["landmarks"])
    pad = 0.1 * (x1 - x0)
    inside = ((pts[:, 0] >= x0 - pad) & (pts[:, 0] <= x1 + pad) &
              (pts[:, 1] >= y0 - pad) & (pts[:, 1] <= y1 + pad))
    assert inside.all()
    eyes, nose, mouth = pts[36:48, 1].mean(), pts[30, 1], pts[48:68, 1].mean()
    assert y0 < eyes < nose < mouth < y1
    assert pts[36:42, 0].mean() < pts[30, 0] < pts[42:48, 0].mean()
    annotated = cv2.imread(str(out / f"{pathlib.Path(row['source']).stem}_annotated.jpg"))
    original = cv2.imread(str(PHOTOS / row["source"]))
    assert annotated.shape == original.shape
    assert np.abs(annotated.astype(int) - original).max() > 100  # something was drawn

  # The same probabilities directly: align, evaluation crops with key fold_in(seed, face key).
  config, variables, _ = predict.load_checkpoint(str(run_dir))
  model = state_lib.build_model(config)
  cfg = state_lib.crop_config(config)

  @functools.partial(jax.jit, static_argnames="mirror")
  def direct(image, landmarks, key, mirror=False):
    x = crops.five_crops(image.astype(np.float32) / 255, landmarks, key, cfg, train=False)
    x = jnp.flip(x["crops"], axis=-2) if mirror else x["crops"]
    return jax.nn.softmax(model.apply(variables, x[None], train=False)["logits"][0])

  # predict.flip=on: each face's probabilities averaged with its mirror image's (the
  # checkpoint, configs/test.py, does not ask for it: summary says which ran).
  flipped = tmp_path / "flipped"
  assert not summary["eval_flip"]
  assert predict.predict(str(run_dir), str(PHOTOS), str(flipped), overrides=overrides(
      flip="on", annotate=False))["eval_flip"]
  source = landmarks_lib.DlibSource()
  for k, (row, row_flip) in enumerate(zip(rows, read_rows(flipped))):
    rgb = cv2.cvtColor(cv2.imread(str(PHOTOS / row["source"])), cv2.COLOR_BGR2RGB)
    face = predict.find_faces(source, rgb, detect=detectors.make_detector("hog_up1"))[0]
    key = jax.random.fold_in(jax.random.key(config.data.eval_occluder_seed), int(
        predict_model.face_keys(face.aligned[None], face.aligned_landmarks[None])[0]))
    plain = direct(face.aligned, face.aligned_landmarks, key)
    np.testing.assert_allclose(plain, [row[c] for c in labels.CLASS_NAMES], atol=2e-5)
    mirrored = direct(face.aligned, face.aligned_landmarks, key, mirror=True)
    assert np.abs(mirrored - plain).max() > 1e-4  # the mirror image is another input
    np.testing.assert_allclose((plain + mirrored) / 2,
                               [row_flip[c] for c in labels.CLASS_NAMES], atol=2e-5)


def test_no_face_and_a_face_cut_by_the_frame_edge(run_dir, tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  blank = np.tile(np.linspace(60, 200, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
  cv2.imwrite(str(folder / "a_blank.png"), blank)
  edge = np.full((240, 320, 3), 120, np.uint8)
  edge[40:190, 0:100] = head("grace_hopper.jpg", 150)[:, 50:]  # the left third is cut off
  cv2.imwrite(str(folder / "b_edge.png"), edge)
  (folder / "c_broken.jpg").write_bytes(b"not a jpeg")  # in a folder: skipped and listed
  out = tmp_path / "out"
  summary = predict.predict(str(run_dir), str(folder), str(out), overrides=overrides())
  assert summary["no_face_frames"] == 1 and summary["faces"] == 1 and summary["edge_faces"] == 1
  assert summary["frames"] == 2 and summary["skipped"] == [str(folder / "c_broken.jpg")]
  blank_row, edge_row = read_rows(out)
  assert blank_row["source"] == "a_blank.png" and blank_row["no_face"] is True
  assert "label" not in blank_row
  assert edge_row["edge"] is True
  assert np.array(edge_row["landmarks"])[:, 0].min() < 0  # landmarks beyond the frame
  check_face_row(edge_row)
  assert (out / "a_blank_annotated.jpg").exists() and (out / "b_edge_annotated.jpg").exists()


# --------------------------------------------------------------------------------------------
# Video.

def write_video(path, seconds=3, fps=10, size=(640, 360)):
  """The two photo faces gliding across a plain background, mp4v."""
  a, g = head("astronaut.png", 150), head("grace_hopper.jpg", 150)
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
  assert writer.isOpened()
  for t in range(seconds * fps):
    frame = np.full((size[1], size[0], 3), 120, np.uint8)
    frame[40:190, 20 + 6 * t:170 + 6 * t] = a
    frame[170:320, 470 - 5 * t:620 - 5 * t] = g
    writer.write(frame)
  writer.release()
  return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  return write_video(tmp_path_factory.mktemp("video") / "class.mp4")


def test_video_tracks_each_face_and_summarises_the_tracks(run_dir, video, tmp_path):
  out = tmp_path / "out"
  summary = predict.predict(str(run_dir), str(video), str(out),
                            overrides=overrides(detector="hog", window_s=1.0, detect_every=5))
  assert summary["kind"] == "video" and summary["frames"] == 30 and summary["faces"] == 60
  assert summary["tracks"] == 2 and not summary["stopped_early"]
  # The detector ran on frames 0, 5, ..., 25; the faces were followed on the other 24.
  assert summary["detector"] == "hog" and summary["detect_every"] == 5
  assert summary["detections"] == 6
  rows = read_rows(out)
  assert len(rows) == 60
  for row in rows:
    check_face_row(row)
    assert row["time"] == pytest.approx(row["frame"] / 10)
  # One track per face: the astronaut (top, moving right) and Grace Hopper (bottom, left).
  by_track = {}
  for row in rows:
    by_track.setdefault(row["track"], []).append(row)
  assert sorted(len(v) for v in by_track.values()) == [30, 30]
  for track_rows in by_track.values():
    xs = [(r["box"][0] + r["box"][2]) / 2 for r in track_rows]
    ys = [(r["box"][1] + r["box"][3]) / 2 for r in track_rows]
    assert np.ptp(ys) < 20 and abs(xs[-1] - xs[0]) > 100
  tracks = json.loads((out / "tracks.json").read_text())
  assert [t["frames_seen"] for t in tracks] == [30, 30]
  for t in tracks:
    assert t["first_time"] == 0 and t["last_time"] == pytest.approx(2.9)
    assert sum(t["label_share"].values()) == pytest.approx(1, abs=1e-3)
    assert sum(t["mean_probs"].values()) == pytest.approx(1, abs=1e-4)
    assert 0 < t["mean_eye_weight"] < 1
    assert (out / "tracks" / f"track_{t['track']}.png").stat().st_size > 5000
  with open(out / "tracks.csv", newline="") as f:
    assert len(list(csv.DictReader(f))) == 2
  cap = cv2.VideoCapture(str(out / "annotated.mp4"))
  assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
  cap.release()

  # The class timeline: a row per second of the 3 s video, over every face of the second.
  windows = read_windows(out / "class_timeline.csv")
  assert summary["windows"] == len(windows) == 3
  assert [(w["window"], w["start_s"], w["end_s"]) for w in windows] == [
      ("0", "0.0", "1.0"), ("1", "1.0", "2.0"), ("2", "2.0", "3.0")]
  for k, w in enumerate(windows):
    in_window = [r for r in rows if k <= r["time"] < k + 1]
    assert int(w["frames"]) == 10 and int(w["faces"]) == len(in_window) == 20
    shares = [float(w[f"share_{c}"]) for c in labels.CLASS_NAMES]
    assert sum(shares) == pytest.approx(1, abs=1e-3)
    assert shares == pytest.approx([np.mean([r["label"] == c for r in in_window])
                                    for c in labels.CLASS_NAMES], abs=1e-4)
    assert float(w["mean_eye_weight"]) == pytest.approx(
        np.mean([r["mu_eyes"] for r in in_window]), abs=1e-5)
  assert (out / "class_timeline.png").stat().st_size > 5000


def test_faces_followed_between_detections_land_where_detection_puts_them(video):
  """Detecting every 5th frame and following the faces between gives the faces, and within
  a pixel or two the landmarks, of detecting on every frame (faces about 90 px wide)."""
  source = landmarks_lib.DlibSource()
  detect = detectors.make_detector("hog")
  every = predict.FaceFinder(source, detect, detect_every=1)
  followed = predict.FaceFinder(source, detect, detect_every=5)
  cap = cv2.VideoCapture(str(video))
  for k in range(12):
    rgb = cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB)
    a = sorted(every(rgb), key=lambda f: f.box[0])
    b = sorted(followed(rgb), key=lambda f: f.box[0])
    assert len(a) == len(b) == 2
    for fa, fb in zip(a, b):
      assert fb.followed == (k % 5 != 0) and not fa.followed
      gap = np.abs(fa.landmarks - fb.landmarks).mean()
      assert gap < 2.5 if fb.followed else gap == 0, (k, gap)
      assert fb.aligned.shape == (48, 48, 1)
  cap.release()
  assert every.detections == 12 and followed.detections == 3
  with pytest.raises(ValueError, match="detect_every must be >= 1, got 0"):
    predict.FaceFinder(source, detect, detect_every=0)


def test_follow_weight_moves_a_followed_box_part_of_the_way():
  """Between detections a followed box moves `follow_weight` of the way to where the face's
  landmarks put it: a face that jumps 8 px right once is reached at once at weight 1, in
  halves at 0.5 (4, 6, 7 px), and never at 0 (the box stays where it was detected)."""
  pts = landmarks_lib.template_landmarks(60).astype(np.float32) + 100  # a 60 px face
  where = {"shift": 0.0}

  class Source:  # the face's landmarks wherever the box is: a perfect fitter
    name, fits_gray = "fake", True

    def fit(self, image, box):
      del image, box
      return pts + np.float32([where["shift"], 0])

  box = np.float32([95, 95, 165, 165])
  rgb = np.zeros((300, 300, 3), np.uint8)
  for weight, expected in ((1.0, [0, 0, 8, 8, 8]), (0.5, [0, 0, 4, 6, 7]),
                           (0.0, [0, 0, 0, 0, 0])):
    where["shift"] = 0.0
    finder = predict.FaceFinder(Source(), lambda rgb: [(box, 0.9)], min_face_size=20,
                                detect_every=10, follow_weight=weight)
    moved = []
    for k in range(5):
      if k == 1:
        where["shift"] = 8.0  # the face moves between frames 0 and 1
      (face,) = finder(rgb)
      assert face.followed == (k > 0)
      moved.append(float(face.box[0] - box[0]))
      # The landmarks are fitted anew in every frame whatever the box does.
      np.testing.assert_allclose(face.landmarks[:, 0] - pts[:, 0], where["shift"], atol=1e-4)
    np.testing.assert_allclose(moved, expected, atol=1e-4)
  with pytest.raises(ValueError, match=r"follow_weight must be in \[0, 1\], got 1.5"):
    predict.FaceFinder(Source(), None, follow_weight=1.5)
  for weight in (0.0, 1.0):  # both ends are settings
    assert predict.options(overrides(follow_weight=weight)).follow_weight == weight
  with pytest.raises(errors.ConfigError, match=r"predict.follow_weight must be in \[0, 1\]"):
    predict.options(overrides(follow_weight=-0.1))


def test_mirror_average_by_flip_setting_checkpoint_and_input_kind():
  """predict.flip: `photos` (the default) follows the checkpoint on images and folders and
  skips the mirror on video; `checkpoint`, `on` and `off` ignore the input's kind."""
  assert defaults.get_config().predict.flip == "photos"
  expected = {  # (flip, checkpoint's eval_flip) -> (image, folder, video)
      ("photos", True): (True, True, False), ("photos", False): (False, False, False),
      ("checkpoint", True): (True, True, True), ("checkpoint", False): (False, False, False),
      ("on", False): (True, True, True), ("off", True): (False, False, False)}
  for (flip, checkpoint), kinds in expected.items():
    assert tuple(predict.mirror_average(flip, checkpoint, kind)
                 for kind in ("image", "folder", "video")) == kinds, (flip, checkpoint)
  with pytest.raises(ValueError, match="config.predict.flip must be one of photos, checkpoint, "
                                       "on, off, got 'mirror'"):
    predict.mirror_average("mirror", True, "video")


def test_annotated_video_encoded_in_a_thread_and_a_failed_open_raises_each_time(tmp_path):
  """VideoOut encodes in a background thread: close() leaves every written frame in the file;
  a writer that cannot open raises on every write (none is queued for a missing encoder)."""
  from fer_jax.predict import outputs  # pylint: disable=g-import-not-at-top
  out = outputs.VideoOut(tmp_path / "a.mp4", 10.0)
  for t in range(20):
    out.write(np.full((64, 96, 3), 10 * t, np.uint8))
  out.close()
  out.close()  # twice: nothing left to do
  assert cv2.VideoCapture(str(tmp_path / "a.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 20
  broken = outputs.VideoOut(tmp_path / "missing" / "a.mp4", 10.0)
  for _ in range(12):  # more than the queue holds
    with pytest.raises(RuntimeError, match="OpenCV cannot write .*missing/a.mp4"):
      broken.write(np.zeros((64, 96, 3), np.uint8))
  broken.close()


def test_detector_ahead_in_a_thread_finds_what_calls_one_by_one_find(video):
  """`FaceFinder.frames` gives, frame for frame, the faces of calling the finder frame by frame,
  while the detector runs in another thread on the next detection frame as the frames before
  it are fitted."""
  source = landmarks_lib.DlibSource()
  hog = detectors.make_detector("hog")
  log, started = [], {k: threading.Event() for k in (0, 5, 10)}

  def detect(rgb):
    log.append(("detect", int(rgb[0, 0, 0]), threading.current_thread().name))
    started[int(rgb[0, 0, 0])].set()
    return hog(rgb)

  cap = cv2.VideoCapture(str(video))
  frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(12)]
  cap.release()
  for k, rgb in enumerate(frames):
    rgb[0, 0] = k  # the frame's number, for the log
  # The finder fits dlib's landmarks on the grey frame (`fits_gray`): the same points.
  box = hog(frames[0])[0][0]
  np.testing.assert_array_equal(source.fit(frames[0], box),
                                source.fit(landmarks_lib.to_gray_u8(frames[0]), box))
  one_by_one = predict.FaceFinder(source, hog, detect_every=5)
  expected = [one_by_one(rgb) for rgb in frames]
  ahead = predict.FaceFinder(source, detect, detect_every=5)
  got = []
  for k, faces in ahead.frames((k, rgb) for k, rgb in enumerate(frames)):
    if k in (1, 6):  # the next detection frame's detector is running before these are fitted
      assert started[k + 4].wait(timeout=20), k
    log.append(("fit", k))
    got.append(faces)
  assert [k for _, k in [e for e in log if e[0] == "fit"]] == list(range(12))
  assert len(got) == len(expected) == 12 and ahead.detections == 3
  for a, b in zip(expected, got):
    assert len(a) == len(b) == 2
    for fa, fb in zip(a, b):
      np.testing.assert_array_equal(fa.landmarks, fb.landmarks)
      np.testing.assert_array_equal(fa.aligned, fb.aligned)
      assert fa.followed == fb.followed
  detections = [e for e in log if e[0] == "detect"]
  assert [e[1] for e in detections] == [0, 5, 10]
  assert all(e[2].startswith("detect") for e in detections)


def test_auto_chooses_by_the_input_and_falls_back_to_what_runs_here(run_dir, tmp_path,
                                                                    monkeypatch, caplog):
  made = []
  real = detectors.make_detector

  def only(*runnable):
    def make(name=detectors.DEFAULT, **kw):
      made.append((name, kw.get("min_face")))
      if name not in runnable:
        raise detectors.DetectorUnavailable(f"detector {name!r} needs its package")
      return real(name, **kw) if name.startswith("hog") else (lambda rgb: [])
    monkeypatch.setattr(detectors, "make_detector", make)

  only("mtcnn", "blazeface", "hog_up1")
  for kind, name, kept, finest in (("image", "mtcnn", 16, 20), ("folder", "mtcnn", 16, 20),
                                   ("video", "blazeface", 20, 24)):
    opts = predict.options(overrides(detector="auto"))
    predict.make_detector(opts, kind)
    assert (opts.detector, opts.min_face_size, made[-1]) == (name, kept, (name, finest))
  opts = predict.options(overrides(detector="auto", min_face_size=30))
  predict.make_detector(opts, "video")
  assert (opts.detector, opts.min_face_size, made[-1]) == ("blazeface", 30, ("blazeface", 30))

  only("hog_up1")  # a photo run where neither MTCNN nor BlazeFace can run
  made.clear()
  with caplog.at_level(logging.WARNING):
    summary = predict.predict(str(run_dir), str(PHOTOS), str(tmp_path / "out"),
                              overrides=overrides(detector="auto", annotate=False))
  assert [n for n, _ in made] == ["mtcnn", "blazeface", "hog_up1"]
  assert (summary["detector"], summary["min_face_size"], summary["faces"]) == ("hog_up1", 20, 2)
  messages = [r.getMessage() for r in caplog.records]
  assert any("'mtcnn' needs its package; finding faces with blazeface" in m for m in messages)
  assert any("'blazeface' needs its package; finding faces with hog_up1" in m for m in messages)
  only()
  with pytest.raises(detectors.DetectorUnavailable, match="'hog_up1' needs"):
    predict.make_detector(predict.options(overrides(detector="auto")), "video")
  with pytest.raises(detectors.DetectorUnavailable, match="'blazeface' needs"):
    predict.make_detector(predict.options(overrides(detector="blazeface")), "video")
  assert made[-1][0] == "blazeface"  # one asked for by name is not replaced


def test_batches_pad_to_a_few_shapes_and_the_model_runs_while_the_next_faces_are_found():
  from fer_jax.predict import model as model_lib  # pylint: disable=g-import-not-at-top
  assert [model_lib.batch_bucket(n, 32) for n in (1, 8, 9, 16, 17, 20, 32, 40)] == [
      8, 8, 16, 16, 32, 32, 32, 32]
  events = []

  class Recording:
    def dispatch(self, images, landmarks, keys):
      # Each face's key comes from the face itself; its pixels hold its number here.
      assert keys.tolist() == model_lib.face_keys(images, landmarks).tolist()
      numbers = images[:, 0, 0, 0].astype(int).tolist()
      events.append(("dispatch", numbers))
      probs = np.tile(images[:, :1, 0, 0].astype(np.float32), (1, 8))
      return lambda: events.append(("result", numbers)) or (probs, probs[:, :5])

  counter = iter(range(100))
  face = lambda: types.SimpleNamespace(aligned=np.full((48, 48, 1), next(counter), np.uint8),
                                       aligned_landmarks=np.zeros((68, 2), np.float32))
  frames = [(k, [face() for _ in range(n)]) for k, n in enumerate((3, 2, 0, 4, 1))]
  groups = list(model_lib.classify_frames(iter(frames), Recording(), batch_size=4))
  assert [[frame for frame, *_ in g] for g in groups] == [[0, 1], [2, 3], [4]]
  # Each group's result is waited for only after the next group was dispatched.
  assert events == [("dispatch", [0, 1, 2, 3, 4]), ("dispatch", [5, 6, 7, 8]),
                    ("result", [0, 1, 2, 3, 4]), ("dispatch", [9]),
                    ("result", [5, 6, 7, 8]), ("result", [9])]
  for g in groups:
    for _, faces, probs, mu in g:
      assert len(faces) == len(probs) == len(mu)
  assert groups[1][1][2][:, 0].tolist() == [5, 6, 7, 8]  # frame 3's faces are numbers 5-8


def read_windows(path):
  """class_timeline.csv / class_shares.csv, its columns checked against the documented ones."""
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    assert reader.fieldnames == (["window", "source", "start_s", "end_s", "frames", "faces"] +
                                 [f"share_{c}" for c in labels.CLASS_NAMES] +
                                 ["mean_eye_weight"])
    return list(reader)


class FailingCapture:
  """A VideoCapture whose frame 5 (of 30) fails to decode."""

  def __init__(self, path):
    self._cap = REAL_CAPTURE(path)
    self._read = 0

  def __getattr__(self, name):
    return getattr(self._cap, name)

  def read(self):
    self._read += 1
    return (False, None) if self._read > 5 else self._cap.read()


def test_blur_faces_hides_each_face_and_leaves_the_rest_of_the_photo(run_dir, tmp_path):
  out = tmp_path / "out"
  predict.predict(str(run_dir), str(PHOTOS), str(out), overrides=overrides(blur_faces=True))
  rows = read_rows(out)
  assert len(rows) == 2  # the rows are unchanged: blurring is for the images
  gray = lambda img: cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
  for row in rows:
    original = cv2.imread(str(PHOTOS / row["source"]))
    blurred = cv2.imread(str(out / f"{pathlib.Path(row['source']).stem}_annotated.jpg"))
    x0, y0, x1, y1 = np.round(row["box"]).astype(int)
    side, m = x1 - x0, (x1 - x0) // 5
    inner = (slice(y0 + m, y1 - m), slice(x0 + m, x1 - m))
    # The face: its detail gone (the Laplacian's energy down 20-fold), its pixels far moved.
    detail = lambda img: cv2.Laplacian(gray(img), cv2.CV_32F)[inner].var()
    assert detail(blurred) < 0.05 * detail(original), (detail(blurred), detail(original))
    assert np.abs(gray(blurred)[inner] - gray(original)[inner]).mean() > 8
    # Away from the face, its label and its weight bars: the photo, up to JPEG's rounding.
    far = np.ones(original.shape[:2], bool)
    far[max(y0 - side, 0):y1 + side, max(x0 - side, 0):x1 + 2 * side] = False
    assert far.mean() > 0.1
    assert np.abs(gray(blurred) - gray(original))[far].mean() < 3


FACE_DATA_KEYS = {"face", "box", "x0", "landmarks", "track", "tracks", "label", "label_prob",
                  "label_counts", "edge", "edge_faces", "score", "mu_eyes"}


def json_keys(value):
  if isinstance(value, dict):
    return set(value) | {k for v in value.values() for k in json_keys(v)}
  if isinstance(value, list):
    return {k for v in value for k in json_keys(v)}
  return set()


def assert_class_level_only(out, expected_files, least):
  """Every file of `out` is listed, and none holds anything about a single face: no per-face
  rows, boxes, landmarks, tracks or images; each window holds at least `least` faces."""
  files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
  assert files == sorted(expected_files)  # no faces.*, tracks/, *_annotated.jpg, annotated.mp4
  for name in files:
    path = out / name
    if path.suffix == ".json":
      assert not json_keys(json.loads(path.read_text())) & FACE_DATA_KEYS, name
    elif path.suffix == ".csv":
      for w in read_windows(path):
        assert int(w["faces"]) >= least, (name, w)
        assert sum(float(w[f"share_{c}"]) for c in labels.CLASS_NAMES) == pytest.approx(
            1, abs=1e-3)


def test_aggregate_only_writes_class_shares_and_nothing_about_a_face(run_dir, video, tmp_path):
  # A video in 2 s windows: 20 frames of two faces, then 10; min_group=30 leaves out the second.
  out = tmp_path / "video"
  aggregate = overrides(detector="hog", aggregate_only=True, window_s=2.0, min_group=30)
  summary = predict.predict(str(run_dir), str(video), str(out), overrides=aggregate)
  assert summary["faces"] == 60 and summary["windows"] == 1 and summary["windows_left_out"] == 1
  assert_class_level_only(out, ["class_timeline.csv", "class_timeline.png", "summary.json",
                                "predict_run.json"], 30)
  # Cut before its summary (a SIGKILL): the same command runs it again from the first frame
  # (there are no rows to resume from), not refused for the class timeline already written.
  (out / "summary.json").unlink()
  again = predict.predict(str(run_dir), str(video), str(out), overrides=aggregate)
  assert again["resumed_at"] == 0 and again["faces"] == 60 and again["windows"] == 1
  (kept,) = read_windows(out / "class_timeline.csv")
  assert (kept["window"], kept["start_s"], kept["end_s"], kept["frames"], kept["faces"]) == (
      "0", "0.0", "2.0", "20", "40")
  # A folder: each photo is a window; the one with a single face is under min_group=2.
  folder = tmp_path / "in"
  folder.mkdir()
  group = np.full((200, 360, 3), 120, np.uint8)
  group[25:175, 15:165], group[25:175, 195:345] = (head("astronaut.png", 150),
                                                   head("grace_hopper.jpg", 150))
  cv2.imwrite(str(folder / "group.png"), group)
  cv2.imwrite(str(folder / "single.png"), head("astronaut.png", 150))
  out = tmp_path / "photos"
  summary = predict.predict(str(run_dir), str(folder), str(out), overrides=overrides(
      detector="hog", aggregate_only=True, min_group=2))
  assert summary["faces"] == 3 and summary["windows"] == 1 and summary["annotated"] == []
  assert_class_level_only(out, ["class_shares.csv", "summary.json"], 2)
  (kept,) = read_windows(out / "class_shares.csv")
  assert (kept["source"], kept["frames"], kept["faces"], kept["start_s"]) == (
      "group.png", "1", "2", "")


def test_new_options_refuse_bad_values_naming_the_key():
  for key, value, message in (
      ("window_s", 0, "config.predict.window_s must be > 0, got 0"),
      ("window_s", "ten", "config.predict.window_s must be a float, got 'ten'"),
      ("min_group", 0, "config.predict.min_group must be >= 1, got 0"),
      ("blur_faces", "yes", "config.predict.blur_faces must be True or False, got 'yes'"),
      ("aggregate_only", 1, "config.predict.aggregate_only must be True or False, got 1"),
      ("detector", "haar", "config.predict.detector must be one of auto, hog, hog_up1, "),
      ("iou_threshold", 0.0, "config.predict.iou_threshold must be in (0, 1], got 0.0"),
      ("detect_every", 0, "config.predict.detect_every must be >= 1, got 0"),
      ("flip", "yes", "config.predict.flip must be one of photos, checkpoint, on, off, got 'yes'")):
    with pytest.raises(ValueError) as e:
      predict.options({"predict": {key: value}})
    assert str(e.value).startswith(message), str(e.value)
  opts = predict.options({"predict": {"window_s": 5, "aggregate_only": True}})
  assert opts.window_s == 5.0 and opts.aggregate_only and opts.min_group == 5


def test_inputs_sharing_a_stem_keep_distinct_outputs(tmp_path):
  """`a.png` and `a.jpg` of one folder: each its own annotated image (the rows keep the file
  names); tests/test_bad_input.py runs such a folder end to end."""
  stems = predict.output_stems
  assert stems(["a.jpg", "a.png", "b.png"]) == ["a_jpg", "a_png", "b"]
  # A renamed file never takes the name of a file that has it as its own stem.
  assert stems(["a.jpg", "a.png", "a_png.bmp"]) == ["a_jpg", "a_png_2", "a_png"]
  # Names that differ only in case would meet on a case-insensitive disk.
  got = stems(["A.png", "a.png", "a.jpg"])
  assert len({s.casefold() for s in got}) == 3 and got[0] == "A_png"
  for name in ("a.png", "a.jpg", "b.png"):
    cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 9, np.uint8))
  frames = list(predict.Input(str(tmp_path)).frames())
  assert [(f.source, f.stem) for f in frames] == [("a.jpg", "a_jpg"), ("a.png", "a_png"),
                                                  ("b.png", "b")]


def test_subfolders_are_named_when_skipped_and_read_when_recursive(tmp_path, caplog):
  for name in ("top.png", "sub/a.png", "sub/deeper/b.png", ".hidden/c.png", "out/d.png"):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 9, np.uint8))
  with caplog.at_level(logging.WARNING):
    frames = list(predict.Input(str(tmp_path)).frames())
  assert [f.source for f in frames] == ["top.png"]
  assert (f"{tmp_path}: 2 subfolder(s) skipped (out, sub); "
          "--config.predict.recursive=True reads the images inside them too") in caplog.text
  # Recursive: subfolders' images by their path (hidden folders and the output left out).
  inp = predict.Input(str(tmp_path), recursive=True, exclude=str(tmp_path / "out"))
  assert [(f.source, f.stem) for f in inp.frames()] == [
      ("sub/a.png", "sub_a"), ("sub/deeper/b.png", "sub_deeper_b"), ("top.png", "top")]


def test_a_face_gets_the_same_numbers_alone_and_anywhere_in_a_folder(run_dir, tmp_path):
  """The occluded branch's occluder is keyed by the aligned face itself, not its place."""
  alone, folder = tmp_path / "alone", tmp_path / "folder"
  alone.mkdir()
  folder.mkdir()
  shutil.copy(PHOTOS / "grace_hopper.jpg", alone / "grace_hopper.jpg")
  shutil.copy(PHOTOS / "astronaut.png", folder / "1.png")
  cv2.imwrite(str(folder / "2.png"), cv2.flip(cv2.imread(str(PHOTOS / "astronaut.png")), 1))
  shutil.copy(PHOTOS / "grace_hopper.jpg", folder / "3.jpg")
  rows = {}
  for source in (alone, alone / "grace_hopper.jpg", folder):
    predict.predict(str(run_dir), str(source), str(tmp_path / f"out_{len(rows)}"),
                    overrides=overrides())
    rows[source] = read_rows(tmp_path / f"out_{len(rows)}")
  assert len(rows[folder]) == 3
  same = lambda r: {k: v for k, v in r.items() if k != "source"}
  assert same(rows[alone][0]) == same(rows[alone / "grace_hopper.jpg"][0]) == \
      same(rows[folder][2])
  assert rows[folder][0]["happiness"] != rows[folder][2]["happiness"]  # other faces differ
  keys = predict_model.face_keys(np.zeros((2, 48, 48, 1), np.uint8), np.zeros((2, 68, 2)))
  assert keys[0] == keys[1] and keys.dtype == np.int32 and keys[0] >= 0


# --------------------------------------------------------------------------------------------
# The model a checkpoint's config describes.

def test_eval_takes_the_model_from_the_checkpoint_and_the_rest_from_the_config(
    run_dir, prepared, tmp_path, monkeypatch, caplog):
  """`--mode=eval`: the run's model, crops, label mode, loss and optimizer, whatever the given
  config says; the given data, split, batch size, eval_flip, eval_ema, seed and lowering."""
  from fer_jax.modes import evaluate  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "run"
  shutil.copytree(run_dir, workdir)
  given = runs.config(prepared[0], "--config.model.width=0.25", "--config.data.crops.size=32",
                      "--config.optimizer.momentum=0.0", "--config.loss.margin=0.5",
                      "--config.data.label_mode=probability", "--config.data.eval_split=train",
                      "--config.eval_flip=True", "--config.eval_ema=False",
                      "--config.eval_batch_size=8", "--config.data.eval_occluder_seed=7",
                      "--config.lowering.conv_impl=matmul")
  seen = {}

  def evaluate_split(config, variables, split, mesh, step_fn=None):  # records, runs nothing
    seen.update(config=config, variables=variables, split=split.name)
    return dict(accuracy=0.5, num_examples=len(split)), np.zeros((len(split), 5), np.float32)

  monkeypatch.setattr(evaluate, "evaluate_split", evaluate_split)
  with caplog.at_level(logging.INFO):
    metrics = evaluate.evaluate(given, str(workdir))
  run = json.loads((workdir / "config.json").read_text())
  used = seen["config"]
  assert (used.model.width, used.data.crops.size, used.optimizer.momentum, used.loss.margin,
          used.data.label_mode) == (run["model"]["width"], run["data"]["crops"]["size"],
                                    run["optimizer"]["momentum"], run["loss"]["margin"],
                                    run["data"]["label_mode"]) == (0.125, 24, 0.9, 0.03,
                                                                   "majority")
  assert (seen["split"], used.eval_flip, used.eval_ema, used.eval_batch_size,
          used.data.eval_occluder_seed, used.lowering.conv_impl, used.data.tfds_dir) == (
              "train", True, False, 8, 7, "matmul", prepared[0])
  assert given.model.width == 0.25  # the given config itself is left as it was
  _, variables, _ = predict.load_checkpoint(str(workdir))  # predict: the run's config, whole
  assert jax.tree.map(np.shape, seen["variables"]) == jax.tree.map(np.shape, variables)
  assert metrics["checkpoint_step"] == 3 and (workdir / "eval" / "train.json").exists()
  assert "model.width: 0.25 -> 0.125" in caplog.text


# --------------------------------------------------------------------------------------------
# Bad input.

def test_bad_inputs_fail_naming_the_file(run_dir, tmp_path):
  missing = tmp_path / "nowhere.mp4"
  with pytest.raises(FileNotFoundError, match=str(missing)):
    predict.predict(str(run_dir), str(missing), str(tmp_path / "o1"), overrides=overrides())
  (tmp_path / "empty.mp4").write_bytes(b"")
  (tmp_path / "garbage.avi").write_bytes(np.random.default_rng(0).bytes(50_000))
  (tmp_path / "garbage.xyz").write_bytes(b"not a picture")
  for name in ("empty.mp4", "garbage.avi", "garbage.xyz"):
    with pytest.raises(ValueError, match="no frames") as e:
      predict.predict(str(run_dir), str(tmp_path / name), str(tmp_path / "o2"),
                      overrides=overrides())
    assert str(tmp_path / name) in str(e.value)
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
  with pytest.raises(ValueError, match=f"cannot read image {tmp_path / 'broken.png'}"):
    predict.predict(str(run_dir), str(tmp_path / "broken.png"), str(tmp_path / "o3"),
                    overrides=overrides())
  (tmp_path / "no_images").mkdir()
  with pytest.raises(ValueError, match="holds no images"):
    predict.predict(str(run_dir), str(tmp_path / "no_images"), str(tmp_path / "o4"),
                    overrides=overrides())
  with pytest.raises(KeyError, match="unknown key"):
    predict.options({"predict": {"frame_strid": 2}})


def test_cli_exits_2_with_one_line_for_a_missing_input(run_dir, tmp_path):
  status, stderr = runs.main(f"--workdir={run_dir}", "--mode=predict",
                             f"--input={tmp_path / 'missing.jpg'}", f"--output={tmp_path / 'out'}")
  assert status == 2
  assert f"fer_jax: error: input {tmp_path / 'missing.jpg'} does not exist" in stderr


def test_a_large_photo_gets_no_false_faces_and_classroom_frames_keep_small_faces():
  """6000x4000: BlazeFace's finest tiles at 24 px found two faces in dark grain (scores 0.51,
  0.52) beside the real one; at 1% of the shorter side (40 px) only the real one. Frames up to
  2000 px high keep the 20 px minimum, on tiles sized for 24 px faces."""
  rng = np.random.default_rng(0)
  photo = np.clip(rng.normal(0, 6, (4000, 6000, 3)) + np.linspace(28, 68, 6000)[None, :, None],
                  0, 255).astype(np.uint8)
  photo[:300] = 200
  grace = cv2.imread(str(PHOTOS / "grace_hopper.jpg"))
  photo[1500:1500 + 3 * grace.shape[0], 2500:2500 + 3 * grace.shape[1]] = cv2.resize(
      grace, (3 * grace.shape[1], 3 * grace.shape[0]))
  opts = predict.options(overrides(detector="blazeface"))
  assert opts.min_face_size == 0  # the detector's own: made, opts holds what it keeps
  assert predict.detector_options(opts)["min_face"] == 24
  detect = predict.make_detector(opts, "image")
  assert opts.detector == "blazeface" and opts.min_face_size == 20
  finder = predict.FaceFinder(types.SimpleNamespace(), None, opts.min_face_size,
                              min_face_fraction=opts.min_face_fraction)
  assert finder.smallest(photo) == 40
  assert finder.smallest(np.zeros((720, 1280))) == finder.smallest(np.zeros((1080, 1920))) == 20
  # detect_face_size, min_face_size -> the face the finest search is sized for
  for name, size, kept, finest in (("blazeface", 16, 16, 16), ("blazeface", 16, 30, 30),
                                   ("blazeface", 0, 20, 24), ("blazeface", 16, 0, 20),
                                   ("mtcnn", 0, 16, 20), ("mtcnn", 0, 0, 20), ("mtcnn", 12, 0, 16),
                                   ("mtcnn", 8, 8, 12), ("mtcnn", 0, 40, 40)):
    assert predict.detector_options(predict.options(overrides(
        detector=name, detect_face_size=size, min_face_size=kept)))["min_face"] == finest
  boxes = [b for b, _ in detect(photo[:, :, ::-1]) if min(b[2:] - b[:2]) >= finder.smallest(photo)]
  x0, y0, x1, y1 = (np.array(FACE_BOXES["grace_hopper.jpg"]) * 3 + [2500, 1500, 2500, 1500])
  assert len(boxes) == 1 and abs((boxes[0][0] + boxes[0][2]) / 2 - (x0 + x1) / 2) < 0.1 * (
      x1 - x0)


def test_the_compilation_cache_folder_is_the_users_and_can_be_moved_or_turned_off():
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  assert cli.compile_cache_dir({}) == os.path.join(os.path.expanduser("~"), ".cache",
                                                               "fer_jax")
  assert cli.compile_cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/fer_jax"
  assert cli.compile_cache_dir({"FER_JAX_CACHE_DIR": "~/c", "XDG_CACHE_HOME": "/x"}) == \
      os.path.expanduser("~/c")
  assert cli.compile_cache_dir({"FER_JAX_CACHE_DIR": "off"}) is None
  # A cache JAX was already given (the tests' own, conftest.py) is kept.
  assert cli.setup_compile_cache() == jax.config.jax_compilation_cache_dir


def test_a_stream_is_read_from_its_address(run_dir, video, tmp_path):
  """`--input=http://...`: a video served over a loopback HTTP server, read through OpenCV."""
  import http.server  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top

  class Ranged(http.server.SimpleHTTPRequestHandler):
    """A file server that honours byte ranges, as video servers do (FFmpeg seeks to the
    index at the end of an mp4)."""

    def log_message(self, *args):
      del args

    def do_GET(self):  # pylint: disable=invalid-name
      data = video.read_bytes()
      first, last = 0, len(data) - 1
      asked = self.headers.get("Range", "")
      if asked.startswith("bytes="):
        lo, _, hi = asked[6:].partition("-")
        first, last = int(lo or 0), int(hi) if hi else len(data) - 1
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
      else:
        self.send_response(200)
      self.send_header("Accept-Ranges", "bytes")
      self.send_header("Content-Type", "video/mp4")
      self.send_header("Content-Length", str(last - first + 1))
      self.end_headers()
      self.wfile.write(data[first:last + 1])

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ranged)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"
    assert inputs.is_live(url) and inputs.is_live("0")
    assert not inputs.is_live(str(video))
    summary = predict.predict(str(run_dir), url, str(tmp_path / "out"),
                              overrides=overrides(detector="hog", annotate=False))
  finally:
    server.shutdown()
  assert summary["input"] == url and summary["kind"] == "video" and summary["frames"] == 30
  assert summary["faces"] == 60 and summary["stopped_by"] is None
  assert {r["source"] for r in read_rows(tmp_path / "out")} == {url}


def test_sigterm_ends_a_run_with_every_output_written(run_dir, tmp_path, monkeypatch):
  """SIGTERM (or Ctrl-C) mid-video: the frames read are recorded and every output is whole."""
  import signal  # pylint: disable=g-import-not-at-top
  clip = cv2.VideoCapture(str(write_video(tmp_path / "clip.mp4")))
  frames = [f for ok, f in iter(clip.read, (False, None)) if ok]
  long_video = tmp_path / "long.mp4"
  writer = cv2.VideoWriter(str(long_video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 360))
  for _ in range(10):  # 300 frames
    for f in frames:
      writer.write(f)
  writer.release()
  recorded, real = [], recorder.Recorder.record

  def record(self, *args, **kwargs):  # the signal comes while the 40th frame is recorded
    recorded.append(1)
    if len(recorded) == 40:
      os.kill(os.getpid(), signal.SIGTERM)
    return real(self, *args, **kwargs)

  monkeypatch.setattr(recorder.Recorder, "record", record)
  summary = predict.predict(str(run_dir), str(long_video), str(tmp_path / "out"),
                            overrides=overrides(detector="hog", annotate=False))
  assert summary["stopped_by"] == "SIGTERM" and 40 <= summary["frames"] < 300
  saved = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert saved["frames"] == summary["frames"] and saved["stopped_by"] == "SIGTERM"
  rows = read_rows(tmp_path / "out")  # every line whole JSON, as many as the CSV's
  assert len({r["frame"] for r in rows}) == summary["frames"]
  timeline = (tmp_path / "out" / "class_timeline.csv").read_text().splitlines()
  assert len(timeline) >= 2 and timeline[-1].count(",") == timeline[0].count(",")
  # The last window ends where the frames taken end, not where the video does.
  last = dict(zip(timeline[0].split(","), timeline[-1].split(",")))
  assert float(last["end_s"]) <= summary["frames"] / 10 + 1e-6


def test_class_timeline_grows_while_a_video_runs(run_dir, tmp_path, monkeypatch):
  """class_timeline.csv holds every closed window while the video is still being read (an
  hour-long lecture's summary is readable at minute 50), and its rows are the final ones."""
  video = write_video(tmp_path / "clip.mp4")  # 3 s at 10 fps
  seen, real = {}, recorder.Recorder.record

  def record(self, frame, *args, **kwargs):
    path = self.out_dir / "class_timeline.csv"
    seen[frame.index] = path.read_text().splitlines() if path.exists() else None
    return real(self, frame, *args, **kwargs)

  monkeypatch.setattr(recorder.Recorder, "record", record)
  summary = predict.predict(str(run_dir), str(video), str(tmp_path / "out"),
                            overrides=overrides(detector="hog", annotate=False, window_s=1.0))
  assert summary["frames"] == 30
  final = (tmp_path / "out" / "class_timeline.csv").read_text().splitlines()
  assert len(final) == 1 + 3  # a header and a row per second
  # Seen as each frame comes in: frame 10 opens window 1 and closes window 0.
  assert seen[10] is None
  assert seen[11] == seen[20] == final[:2]  # window 0, as it ends up
  assert seen[21] == seen[29] == final[:3]


def test_a_cut_video_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(
    run_dir, tmp_path):
  """A run cut by a SIGKILL (summary.json missing, faces.jsonl's last line half-written) is
  continued by the same command from the last detection frame it reached: every row once, the
  rows, tracks, class timeline and detection count of an uninterrupted run, its annotated video
  in a second part. The same folder with other options, or another video, is refused."""
  video = write_video(tmp_path / "clip.mp4", seconds=4)  # 40 frames, two faces each
  opts = dict(detector="hog", window_s=1.0, detect_every=5)  # frames 0, 5, ..., 25, ...
  whole = predict.predict(str(run_dir), str(video), str(tmp_path / "whole"),
                          overrides=overrides(**opts))
  record = json.loads((tmp_path / "whole" / "predict_run.json").read_text())["options"]
  assert (record["predict.detector"], record["predict.min_face_size"]) == ("hog", 20)  # as run
  out = tmp_path / "cut"
  shutil.copytree(tmp_path / "whole", out)
  lines = (out / "faces.jsonl").read_text().splitlines(keepends=True)
  first_of_28 = next(i for i, l in enumerate(lines) if json.loads(l)["frame"] == 28)
  # Frame 27's first row whole, its second cut mid-line: frames 25 on are done again.
  (out / "faces.jsonl").write_text("".join(lines[:first_of_28 - 1]) + lines[first_of_28 - 1][:40])
  (out / "summary.json").unlink()
  (tmp_path / "b").mkdir()
  another = write_video(tmp_path / "b" / "clip.mp4", seconds=2)  # the same name, another video
  for target, other in ((video, dict(opts, window_s=2.0)), (another, opts)):
    with pytest.raises(ValueError, match="already holds the results of a prediction"):
      predict.predict(str(run_dir), str(target), str(out), overrides=overrides(**other))
  summary = predict.predict(str(run_dir), str(video), str(out), overrides=overrides(**opts))
  assert summary["resumed_at"] == 25 and whole["resumed_at"] is None
  assert summary["frames"] == whole["frames"] == 40 and summary["faces"] == whole["faces"]
  for key in ("label_counts", "tracks", "detections", "no_face_frames"):
    assert summary[key] == whole[key], key
  assert read_rows(out) == read_rows(tmp_path / "whole")  # each frame once, as computed whole
  assert [pathlib.Path(p).name for p in summary["annotated"]] == [
      "annotated.mp4", "annotated_from_25.mp4"]
  assert cv2.VideoCapture(str(out / "annotated_from_25.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 15
  for name in ("tracks.csv", "class_timeline.csv"):  # the kept rows' 6 decimals aside
    with open(out / name) as a, open(tmp_path / "whole" / name) as b:
      for ra, rb in zip(csv.DictReader(a), csv.DictReader(b), strict=True):
        for k in ra:
          try:
            assert float(ra[k]) == pytest.approx(float(rb[k]), abs=1e-5), (name, k)
          except ValueError:
            assert ra[k] == rb[k], (name, k)
  # A finished run is not resumed: the same command is refused, as for any earlier results.
  with pytest.raises(ValueError, match="already holds the results of a prediction"):
    predict.predict(str(run_dir), str(video), str(out), overrides=overrides(**opts))


def test_a_one_branch_model_writes_no_branch_weights(tmp_path):
  """One network on the whole face has a single weight, always 1: predict records no branch
  weights for it (`weighted_branches`), so its rows have no mu columns, its tracks no mean
  branch weights and no eye weight, its class timeline an empty eye-weight column."""
  from configs import test as test_config_module  # pylint: disable=g-import-not-at-top
  config = test_config_module.get_config()
  assert predict.weighted_branches(config) == list(config.data.crops.branches)
  config.data.crops.branches = ("face",)
  assert predict.weighted_branches(config) == []
  inp = types.SimpleNamespace(kind="video", fps=10.0, stride=1, name="v.mp4", live=False,
                              path=pathlib.Path("v.mp4"), frame_count=3, stopped_early=False,
                              skipped=[])
  run = recorder.Recorder(predict.options(overrides(annotate=False)), tmp_path, inp,
                          list(labels.CLASS_NAMES), [], "dlib")
  for t in range(3):  # one face drifting: one track
    face = predict.FoundFace(box=np.array([10.0 + t, 10, 50 + t, 50]), landmarks=np.zeros((68, 2)),
                             score=1.0, edge=False, aligned=np.zeros((48, 48)),
                             aligned_landmarks=np.zeros((68, 2)))
    run.record(inputs.Frame("v.mp4", t, t / 10, np.zeros((64, 64, 3), np.uint8), "v"), [face],
               np.eye(8)[[1]], np.ones((1, 1)))  # the model's mu of its one branch
  run.close()
  summary = run.finish("run", 1, 0.1)
  assert summary["faces"] == 3 and summary["tracks"] == 1
  rows = read_rows(tmp_path)
  assert len(rows) == 3 and not [k for r in rows for k in r if k.startswith("mu_")]
  with open(tmp_path / "faces.csv") as f:
    assert not [c for c in next(csv.reader(f)) if c.startswith("mu_")]
  (track,) = json.loads((tmp_path / "tracks.json").read_text())
  assert track["mean_weights"] == {} and track["mean_eye_weight"] is None
  with open(tmp_path / "class_timeline.csv") as f:
    assert [r["mean_eye_weight"] for r in csv.DictReader(f)] == [""]
  # Its track plot has the probabilities alone: 8 x 3.2 in at 110 dpi, no eye-weight panel
  # (8 x 4.6 in with one).
  plot = cv2.imread(str(tmp_path / "tracks" / f"track_{track['track']}.png"))
  assert plot.shape[:2] == (352, 880)


def test_one_branch_faces_are_drawn_without_a_weight_panel():
  from fer_jax.predict import annotate  # pylint: disable=g-import-not-at-top
  frame = np.full((200, 300, 3), 90, np.uint8)
  face = dict(box=(60, 50, 160, 150), label_index=1, prob=0.9, weights=[1.0])
  beside = np.s_[50:150, 162:200]  # where the panel of branch weights goes (right of the box)
  one = annotate.draw_faces(frame, [face], ["face"], labels.CLASS_NAMES)
  assert (one[beside] == 90).all()
  two = annotate.draw_faces(frame, [dict(face, weights=[0.7, 0.2])], ["face", "eyes"],
                            labels.CLASS_NAMES)
  assert (two[beside] != 90).any()


def test_live_inputs_are_told_from_files_and_named_without_credentials(tmp_path, monkeypatch):
  live, name = inputs.is_live, inputs.display_name
  monkeypatch.chdir(tmp_path)
  assert live("0") and live("12") and live("rtsp://cam/s") and live("http://x/v.mp4")
  (tmp_path / "0").write_bytes(b"")  # an existing path is the file, whatever its name
  assert not live("0") and not live("C://videos/a.mp4") and not live("photos")
  assert name("3") == "camera 3"
  assert name("rtsp://user:secret@cam.local:554/live") == "rtsp://cam.local:554/live"
