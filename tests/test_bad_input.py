"""The bad-input catalogue: each case, what main.py says and the status it exits with.

Exit status: 0 done, 1 the run failed (non-finite loss), 2 bad input. Bad files inside a
dataset are skipped, named in a warning and counted in the summary; everything else fails fast
naming the culprit. No case loses a checkpoint.
"""

import csv
import os
import pathlib
import shutil

import cv2
import numpy as np
import pytest

import runs
from test_ferplus import write_kaggle


def ckpts(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


@pytest.fixture(scope="module")
def trained(reference_run):
  """A finished tiny run with checkpoints, copied fresh for each case that needs it."""
  return reference_run


def copy_of(trained, tmp_path):
  dst = tmp_path / "run"
  shutil.copytree(trained, dst)
  return dst


def prepare(manual, tmp_path):
  return runs.run(tmp_path / "w", tmp_path / "tfds", f"--config.data.manual_dir={manual}",
                  mode="prepare")


def test_manual_dir_missing(tmp_path):
  r = prepare(tmp_path / "nowhere", tmp_path)
  assert r.returncode == 2
  assert f"FERPlus manual dir {tmp_path / 'nowhere'} does not exist" in r.stderr
  assert "FER2013Train/label.csv" in r.stderr and "fer2013new.csv" in r.stderr


def test_manual_dir_empty(tmp_path):
  (tmp_path / "empty").mkdir()
  r = prepare(tmp_path / "empty", tmp_path)
  assert r.returncode == 2 and "is empty" in r.stderr


def test_corrupt_png_and_wrong_size_or_channels_are_skipped_and_counted(sample_dir, tmp_path):
  manual = tmp_path / "manual"
  shutil.copytree(sample_dir / "FER2013Valid", manual / "FER2013Valid")
  names = [r[0] for r in csv.reader(open(manual / "FER2013Valid" / "label.csv"))]
  (manual / "FER2013Valid" / names[0]).write_bytes(b"garbage")
  cv2.imwrite(str(manual / "FER2013Valid" / names[1]), np.zeros((40, 52), np.uint8))
  cv2.imwrite(str(manual / "FER2013Valid" / names[2]), np.zeros((48, 48, 3), np.uint8))  # RGB: kept
  r = prepare(manual, tmp_path)
  assert r.returncode == 0, r.stderr[-2000:]
  assert names[0] in r.stderr and "not a readable image" in r.stderr
  assert names[1] in r.stderr and "image is 40x52, expected 48x48 grey" in r.stderr
  assert "validation: 94 examples written" in r.stderr
  assert "1 unreadable image, 1 wrong image size" in r.stderr
  assert "validation: 94 examples" in r.stdout


def test_truncated_csv_is_skipped_and_counted(sample_dir, tmp_path):
  kaggle = tmp_path / "kaggle"
  write_kaggle(sample_dir, kaggle)
  text = (kaggle / "fer2013.csv").read_text()
  (kaggle / "fer2013.csv").write_text(text[: int(len(text) * 0.6)])  # cut mid-row
  r = prepare(kaggle, tmp_path)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "2 fields, expected 3 (emotion,pixels,Usage)" in r.stderr  # the row cut mid-pixels
  assert "1 malformed CSV row" in r.stderr
  assert "ends at row" in r.stderr and "rows past the end of the shorter CSV" in r.stderr


def test_unknown_config_key_and_wrong_type(tmp_path):
  r = runs.run(tmp_path / "w", tmp_path / "t", "--config.model.deepth=3")
  assert r.returncode == 2 and "'deepth'" in r.stderr and 'Did you mean "depth"' in r.stderr
  r = runs.run(tmp_path / "w", tmp_path / "t", "--config.batch_size=many")
  assert r.returncode == 2 and "--config.batch_size=many" in r.stderr


def test_batch_not_divisible_by_the_devices(prepared, tmp_path, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  env = runs.env()
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
  import subprocess  # pylint: disable=g-import-not-at-top
  r = subprocess.run(runs.command(tmp_path / "w", prepared[0], "--config.batch_size=30"),
                     capture_output=True, text=True, timeout=300, cwd=runs.ROOT, env=env)
  assert r.returncode == 2
  assert "config.batch_size=30 is not divisible by the 4 devices" in r.stderr


def test_checkpoint_of_another_architecture(trained, prepared, tmp_path):
  workdir = copy_of(trained, tmp_path)
  before = ckpts(workdir)
  r = runs.run(workdir, prepared[0], "--config.model.width=0.25", mode="eval")
  assert r.returncode == 2
  assert "was written by another architecture" in r.stderr and "'width': 0.125" in r.stderr
  assert "has shape" in r.stderr
  r = runs.run(workdir, prepared[0], "--config.model.depth=18")  # resuming training, too
  assert r.returncode == 2 and "another architecture" in r.stderr
  assert ckpts(workdir) == before


def test_eval_list_naming_missing_images(trained, prepared, tmp_path):
  workdir = copy_of(trained, tmp_path)
  listing = tmp_path / "test_list.txt"
  listing.write_text("0_fer0028816.png\n3_fer0099999.png\n1/fer0088888.jpg\n")
  before = ckpts(workdir)
  r = runs.run(workdir, prepared[0], f"--config.data.eval_list={listing}", mode="eval")
  assert r.returncode == 2
  assert "names 2 image(s) that are not in the prepared dataset" in r.stderr
  assert "fer0099999.png (line 2)" in r.stderr and "fer0088888.jpg (line 3)" in r.stderr
  assert ckpts(workdir) == before


def test_forced_nan_loss(trained, prepared, tmp_path):
  workdir = copy_of(trained, tmp_path)
  before = ckpts(workdir)
  r = runs.run(workdir, prepared[0], f"--config.num_train_steps={runs.STEPS + 6}",
               "--config.optimizer.learning_rate=1e12", "--config.checkpoint_every_steps=1")
  assert r.returncode == 1
  assert "the training loss became" in r.stderr and "at step" in r.stderr
  assert "The last good checkpoint" in r.stderr
  assert runs.STEPS in ckpts(workdir) and set(ckpts(workdir)) >= {max(before)}  # nothing lost
