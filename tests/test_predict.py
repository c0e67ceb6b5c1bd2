"""`--mode=predict` on real faces: photos, a video made of them, the tracker and bad inputs."""

import csv
import json
import pathlib
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

import runs
from fer_jax import predict, state as state_lib, tracking, train
from fer_jax.data import crops, labels

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

  # The same probabilities directly: align, evaluation crops with key fold_in(seed, face no.).
  config, variables, _ = predict.load_checkpoint(str(run_dir))
  model = state_lib.build_model(config)
  cfg = state_lib.crop_config(config)

  @jax.jit
  def direct(image, landmarks, key):
    x = crops.five_crops(image.astype(np.float32) / 255, landmarks, key, cfg, train=False)
    return jax.nn.softmax(model.apply(variables, x["crops"][None], train=False)["logits"][0])

  source = predict.landmarks_lib.DlibSource()
  for k, row in enumerate(rows):
    rgb = cv2.cvtColor(cv2.imread(str(PHOTOS / row["source"])), cv2.COLOR_BGR2RGB)
    face = predict.find_faces(source, rgb)[0]
    key = jax.random.fold_in(jax.random.key(config.data.eval_occluder_seed), k)
    np.testing.assert_allclose(direct(face.aligned, face.aligned_landmarks, key),
                               [row[c] for c in labels.CLASS_NAMES], atol=2e-5)


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
                            overrides=overrides(detector_upsample=0))
  assert summary["kind"] == "video" and summary["frames"] == 30 and summary["faces"] == 60
  assert summary["tracks"] == 2 and not summary["stopped_early"]
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


def test_video_frame_that_fails_to_decode_stops_and_keeps_the_frames_before(
    run_dir, video, tmp_path, monkeypatch):
  monkeypatch.setattr(predict.cv2, "VideoCapture", FailingCapture)
  out = tmp_path / "out"
  summary = predict.predict(str(run_dir), str(video), str(out),
                            overrides=overrides(detector_upsample=0, annotate=False))
  assert summary["stopped_early"] and summary["frames"] == 5
  assert sorted({r["frame"] for r in read_rows(out)}) == [0, 1, 2, 3, 4]
  assert summary["tracks"] == 2 and not (out / "annotated.mp4").exists()


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
  r = subprocess.run([sys.executable, str(ROOT / "main.py"), f"--workdir={run_dir}",
                      "--mode=predict", f"--input={tmp_path / 'missing.jpg'}",
                      f"--output={tmp_path / 'out'}"],
                     capture_output=True, text=True, timeout=120, cwd=ROOT, env=runs.env())
  assert r.returncode == 2
  assert f"fer_jax: error: input {tmp_path / 'missing.jpg'} does not exist" in r.stderr
