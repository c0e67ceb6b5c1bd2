"""The bad-input catalogue: each case, what main.py says and the status it exits with.

Exit status: 0 done, 1 the run failed (non-finite loss), 2 bad input. Bad files inside a
dataset are skipped, named (file, line, value) in a warning and counted in the summary; paths,
files and config values are checked where they enter, before any model is built; a damaged
checkpoint is named, and skipped unless it was asked for; predict never destroys earlier
results. No case loses a checkpoint.
"""

import csv
import json
import logging
import os
import pathlib
import re
import shutil

import cv2
import jax
import numpy as np
import pytest

import runs
from fer_jax.data import ferplus, labels, pipeline
from fer_jax import errors
from fer_jax.modes import predict, train
from test_ferplus import write_kaggle
from test_predict import REAL_CAPTURE, FailingCapture, head, overrides, read_rows, write_video


ckpts = runs.checkpoint_steps


@pytest.fixture(scope="module")
def trained(reference_run):
  """A finished tiny run with checkpoints, copied fresh for each case that needs it."""
  return reference_run


def copy_of(trained, tmp_path):
  dst = tmp_path / "run"
  shutil.copytree(trained, dst)
  return dst


def prepare(manual, tmp_path, caplog):
  """`--mode=prepare` of `manual`, in-process: (exit status, sizes or the error, the log)."""
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  config = runs.config(tmp_path / "tfds", f"--config.data.manual_dir={manual}")
  with caplog.at_level(logging.INFO):
    try:
      return 0, cli.run("prepare", config, str(tmp_path / "w")), caplog.text
    except errors.EXPECTED as e:
      return errors.exit_status(e), str(e), caplog.text


def test_manual_dir_missing(tmp_path, caplog):
  status, error, _ = prepare(tmp_path / "nowhere", tmp_path, caplog)
  assert status == 2
  assert f"FERPlus manual dir {tmp_path / 'nowhere'} does not exist" in error
  assert "FER2013Train/label.csv" in error and "fer2013new.csv" in error


def test_manual_dir_empty(tmp_path, caplog):
  (tmp_path / "empty").mkdir()
  status, error, _ = prepare(tmp_path / "empty", tmp_path, caplog)
  assert status == 2 and f"FERPlus manual dir {tmp_path / 'empty'} is empty" in error


def test_truncated_csv_is_skipped_and_counted(sample_dir, tmp_path, caplog):
  kaggle = tmp_path / "kaggle"
  write_kaggle(sample_dir, kaggle)
  text = (kaggle / "fer2013.csv").read_text()
  (kaggle / "fer2013.csv").write_text(text[: int(len(text) * 0.6)])  # cut mid-row
  status, sizes, log = prepare(kaggle, tmp_path, caplog)
  assert status == 0, sizes
  assert "2 fields, expected 3 (emotion,pixels,Usage)" in log  # the row cut mid-pixels
  assert "1 malformed CSV row" in log
  assert "ends at row" in log and "rows past the end of the shorter CSV" in log


def test_unknown_config_key_and_wrong_type(tmp_path):
  r = runs.run(tmp_path / "w", tmp_path / "t", "--config.model.deepth=3")
  assert r.returncode == 2 and ("unknown config key config.model.deepth (in "
                                "--config.model.deepth=3); nearest valid keys: config.model.depth"
                                in r.stderr)
  r = runs.run(tmp_path / "w", tmp_path / "t", "--config.batch_size=many")
  assert r.returncode == 2 and "--config.batch_size=many" in r.stderr


def test_batch_not_divisible_by_the_devices(prepared, tmp_path, monkeypatch):
  """Checked before anything is built, naming the numbers (main.py turns the ValueError into exit
  status 2: tests/test_reliability.py); four devices stood in for by the counts."""
  from fer_jax.modes import train  # pylint: disable=g-import-not-at-top
  from fer_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  assert pipeline.check_batch(32, 2, 4) == 16
  with pytest.raises(ValueError, match="config.batch_size=30 is not divisible by the 4 devices"):
    pipeline.check_batch(30, 1, 4)
  with pytest.raises(ValueError, match="config.batch_size=6 is not divisible by the 4 processes"):
    pipeline.check_batch(6, 4, 2)
  monkeypatch.setattr(train.jax, "device_count", lambda: 4)
  monkeypatch.setattr(train, "init_state", lambda *a: pytest.fail("built a model"))
  with pytest.raises(ValueError, match="batch_size=30 is not divisible by the 4 devices"):
    train.train_and_evaluate(runs.config(prepared[0], "--config.batch_size=30"),
                             str(tmp_path / "w"))


def test_checkpoint_of_another_architecture(trained, prepared, tmp_path):
  """Resuming with another model is refused, naming the key (the arrays when a checkpoint
  carries no config). (Eval and predict build the checkpoint's own model, whatever the config
  says: tests/test_predict.py.)"""
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  workdir = copy_of(trained, tmp_path)
  before = ckpts(workdir)
  with pytest.raises(errors.EXPECTED) as e:
    cli.run("train", runs.config(prepared[0], "--config.model.width=0.25"), str(workdir))
  assert errors.exit_status(e.value) == 2
  assert "model.width: 0.125 -> 0.25 (old -> new)" in str(e.value)
  assert ckpts(workdir) == before
  # A checkpoint without its config (written by hand, or by an older fer_jax): the arrays.
  for step in before:
    meta = workdir / "checkpoints" / str(step) / "meta" / "metadata"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items()
                                if k != "config"}))
  (workdir / "config.json").unlink()
  with pytest.raises(errors.EXPECTED) as e:
    cli.run("train", runs.config(prepared[0], "--config.model.width=0.25"), str(workdir))
  assert "was written by another architecture" in str(e.value)
  assert "has shape" in str(e.value)


def test_eval_list_naming_missing_images(trained, prepared, tmp_path):
  workdir = copy_of(trained, tmp_path)
  listing = tmp_path / "test_list.txt"
  listing.write_text("0_fer0028816.png\n3_fer0099999.png\n1/fer0088888.jpg\n")
  before = ckpts(workdir)
  error = cli_error("eval", runs.config(prepared[0], f"--config.data.eval_list={listing}"),
                    workdir)
  assert "names 2 image(s) that are not in the prepared dataset" in error
  assert "fer0099999.png (line 2)" in error and "fer0088888.jpg (line 3)" in error
  assert ckpts(workdir) == before


def test_forced_nan_loss(trained, prepared, tmp_path):
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  workdir = copy_of(trained, tmp_path)
  before = ckpts(workdir)
  config = runs.config(prepared[0], *runs.REFERENCE_FLAGS,
                       f"--config.num_train_steps={runs.STEPS + 6}",
                       "--config.optimizer.learning_rate=1e12", "--config.checkpoint_every_steps=1")
  with pytest.raises(errors.NonFiniteLossError) as e:
    cli.run("train", config, str(workdir))
  assert errors.exit_status(e.value) == 1  # the run failed: not bad input
  # The message names what overflowed: at lr 1e12 the weights blow up while the loss printed
  # beside them is still a (huge) finite number, so the loss is not among them.
  found = re.search(r"the training step overflowed at step (\d+): (.+) became non-finite "
                    r"\(loss ([0-9.e+]+), gradient norm", str(e.value))
  assert found, str(e.value)
  named = re.split(r", | and ", found.group(2))
  assert "the parameters" in named and "the loss" not in named, named
  assert set(named) <= {f"the {k}" for k in train.FINITE_CHECKS}, named
  last_good = int(found.group(1)) - 1
  assert f"The last good checkpoint in {workdir / 'checkpoints'} is step {last_good}" in str(e.value)
  assert last_good in ckpts(workdir) and set(ckpts(workdir)) >= {max(before)}  # nothing lost
  from fer_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  _, variables, step = ckpt_lib.load_checkpoint(str(workdir), "latest", config=config)
  assert step == last_good  # the newest checkpoint is the last good one, and finite throughout
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))


# ---- paths, files and values checked where they enter (cli.run), before any model is built

@pytest.fixture()
def no_model(monkeypatch):
  """Makes building a model (or preparing data) a test failure: the checks must come first."""
  from fer_jax.modes import evaluate, predict, train  # pylint: disable=g-import-not-at-top
  from fer_jax.data import ferplus  # pylint: disable=g-import-not-at-top

  def built(*args, **kwargs):
    raise AssertionError("reached the model or the data before the check")
  for module, name in ((train, "train_and_evaluate"), (evaluate, "evaluate"),
                       (predict, "predict"), (ferplus, "prepare")):
    monkeypatch.setattr(module, name, built)


def cli_error(mode, config, workdir=None, **kwargs):
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.EXPECTED) as e:
    cli.run(mode, config, None if workdir is None else str(workdir), **kwargs)
  assert errors.exit_status(e.value) == 2 and "\n" not in str(e.value)
  return str(e.value)


def test_paths_are_expanded_once_where_the_config_is_read(tmp_path, monkeypatch):
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv("FER_DATA", str(tmp_path / "data"))
  config = runs.config("~/tensorflow_datasets")
  config.data.manual_dir = "$FER_DATA/ferplus"
  config.data.eval_list = "~/lists/test.txt"
  config.predict.face_alignment_dir = "${FER_DATA}/fa"
  cli.expand_paths(config)
  assert config.data.tfds_dir == str(tmp_path / "home" / "tensorflow_datasets")
  assert config.data.manual_dir == str(tmp_path / "data" / "ferplus")
  assert config.data.eval_list == str(tmp_path / "home" / "lists" / "test.txt")
  assert config.predict.face_alignment_dir == str(tmp_path / "data" / "fa")
  assert cli.expand_path("gs://bucket/~x") == "gs://bucket/~x" and cli.expand_path("") == ""


def test_prepare_writes_under_home_never_into_a_folder_named_tilde(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  config = runs.config("~/tensorflow_datasets", "--config.data.landmarks=template")
  config.data.manual_dir = "~/ferplus"
  shutil.copytree(runs.SAMPLE / "FER2013Valid", tmp_path / "home" / "ferplus" / "FER2013Valid")
  monkeypatch.chdir(tmp_path)
  sizes = cli.run("prepare", config, None)
  assert sizes["validation"]["examples"] == 96
  assert (tmp_path / "home" / "tensorflow_datasets" / "fer_plus" / "template").is_dir()
  assert not list(tmp_path.rglob("~"))


def test_workdir_or_output_that_is_a_file_or_not_writable(tmp_path, no_model):
  config = runs.config(tmp_path / "tfds")
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  assert cli_error("train", config, a_file) == f"--workdir={a_file} is a file, not a folder"
  assert cli_error("train", config, a_file / "run") == (
      f"--workdir={a_file / 'run'} cannot be created: Not a directory")
  # /sys refuses new files even to root, where a chmod would not.
  assert cli_error("train", config, "/sys") == "--workdir=/sys is not writable: Permission denied"
  assert cli_error("eval", config, tmp_path / "none") == f"--workdir={tmp_path / 'none'} does not exist"
  run = tmp_path / "run"
  run.mkdir()
  assert cli_error("predict", config, run, input_path=str(a_file), output=str(a_file)) == (
      f"--output={a_file} is a file, not a folder")
  from fer_jax import cli  # pylint: disable=g-import-not-at-top
  with pytest.raises(AssertionError, match="reached the model"):  # predict only reads its run
    cli.run("predict", config, "/sys", input_path=str(a_file), output=str(tmp_path / "out"))
  assert cli_error("crops", config, None, output=str(tmp_path)) == (
      f"--output={tmp_path} is a folder; --mode=crops writes a PNG file")
  assert cli_error("crops", config, None, output="/sys/crops.png") == (
      "--output's folder=/sys is not writable: Permission denied")
  config.data.tfds_dir = str(a_file)
  assert cli_error("prepare", config, None) == (
      f"--config.data.tfds_dir={a_file} is a file, not a folder")


def test_config_values_and_checkpoint_flag_checked_where_they_enter(tmp_path, no_model):
  for key, value in (("batch_size", 0), ("eval_batch_size", -32)):
    config = runs.config(tmp_path / "tfds", f"--config.{key}={value}")
    assert cli_error("train", config, tmp_path / "run") == (
        f"config.{key} must be >= 1, got {value}")
  config = runs.config(tmp_path / "tfds")
  (tmp_path / "run").mkdir(exist_ok=True)
  for mode in ("eval", "predict"):
    assert cli_error(mode, config, tmp_path / "run", checkpoint="foo", input_path="x",
                     output=str(tmp_path / "out")) == (
        "--checkpoint=foo is not a checkpoint: it takes latest, best or a step number "
        "(e.g. --checkpoint=1200)")


def test_config_file_missing_broken_or_raising_and_stray_arguments(tmp_path):
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  (tmp_path / "raising.py").write_text("def get_config():\n  raise KeyError('lr')\n")
  cases = {
      "missing": ([f"--config={tmp_path / 'none.py'}"], f"{tmp_path / 'none.py'} does not exist"),
      "broken": ([f"--config={tmp_path / 'broken.py'}"],
                 f"{tmp_path / 'broken.py'} line 1: SyntaxError: invalid syntax"),
      "raising": ([f"--config={tmp_path / 'raising.py'}"],
                  f"{tmp_path / 'raising.py'} fails to load: KeyError: 'lr'"),
      "stray": (["--config=configs/test.py", "--workdir=/tmp/x", "stray"],
                "unexpected argument(s) stray"),
  }
  for name, (argv, expected) in cases.items():
    status, stderr = runs.main(*argv)
    assert status == 2, (name, stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], (name, stderr[-2000:])


def test_damaged_checkpoint_named_in_eval_and_predict(trained, prepared, tmp_path, caplog):
  from fer_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import evaluate, predict  # pylint: disable=g-import-not-at-top
  workdir = copy_of(trained, tmp_path)
  runs.damage(workdir, runs.STEPS, "metadata")
  before = ckpts(workdir)
  step_dir = workdir / "checkpoints" / str(runs.STEPS)
  # Asked for by number: exit 2, naming the step and its folder.
  r = runs.run(workdir, prepared[0], f"--checkpoint={runs.STEPS}", mode="eval")
  assert r.returncode == 2, r.stderr[-2000:]
  assert (f"fer_jax: error: the checkpoint at step {runs.STEPS} in {step_dir} is damaged and "
          "does not restore (JSONDecodeError") in r.stderr
  assert "Traceback" not in r.stderr
  # latest (and best): the newest good one, with a warning.
  config = runs.config(prepared[0])
  with caplog.at_level(logging.WARNING):
    metrics = evaluate.evaluate(config, str(workdir), "latest")
    _, _, step = predict.load_checkpoint(str(workdir), "best")
  assert metrics["checkpoint_step"] == runs.STEPS - 2
  ranked = ckpt_lib.candidate_steps(ckpt_lib.manager(str(workdir), read_only=True), "best")
  assert step == [s for s in ranked if s != runs.STEPS][0]
  assert f"the checkpoint at step {runs.STEPS} in {step_dir} is damaged" in caplog.text
  assert ckpts(workdir) == before and (step_dir / "state" / "_METADATA").exists()
  # Every kept step damaged: one error naming them all (exit status 2), not a traceback.
  for step in before:
    runs.damage(workdir, step, "metadata")
  with pytest.raises(errors.DamagedCheckpointError,
                     match=r"every kept step \(" + ", ".join(map(str, before[::-1])) + r"\)"):
    evaluate.evaluate(config, str(workdir), "latest")


# ---- prepare reads only what it should: names, vote counts, pixels

N = 12  # label rows in each small manual dir


def small_valid(sample_dir: pathlib.Path, manual: pathlib.Path, n: int = N) -> list[list[str]]:
  """manual/FER2013Valid/ with the first `n` rows of the sample's (PNGs and label.csv)."""
  src, dst = sample_dir / "FER2013Valid", manual / "FER2013Valid"
  dst.mkdir(parents=True)
  rows = list(csv.reader(open(src / "label.csv")))[:n]
  for row in rows:
    shutil.copy(src / row[0], dst / row[0])
  write_rows(dst, rows)
  return rows


def write_rows(folder: pathlib.Path, rows) -> None:
  with open(folder / "label.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)


def build(manual: pathlib.Path, tmp_path: pathlib.Path):
  """(builder with its reports, {split: [names written]})."""
  b = ferplus.builder(str(tmp_path / "tfds"), "template")
  b.download_and_prepare(download_config=ferplus.tfds.download.DownloadConfig(
      manual_dir=str(manual)))
  names = {}
  for split, src in b.as_data_source().items():
    names[split] = [src[i]["name"].decode() if isinstance(src[i]["name"], bytes)
                    else str(src[i]["name"]) for i in range(len(src))]
  return b, names


def test_names_outside_the_split_folder_are_refused_and_never_opened(
    sample_dir, tmp_path, caplog, monkeypatch):
  manual = tmp_path / "manual"
  rows = small_valid(sample_dir, manual)
  folder = manual / "FER2013Valid"
  face = folder / rows[0][0]
  shutil.copy(face, manual / "outside.png")  # a valid 48x48 face, one folder up
  (manual / "elsewhere").mkdir()
  shutil.copy(face, manual / "elsewhere" / "face.png")
  os.symlink(manual / "elsewhere", folder / "sub")  # a subfolder that leads out
  (folder / "inner").mkdir()
  shutil.copy(face, folder / "inner" / "ok.png")  # a real subfolder: allowed
  votes = rows[0][1:]
  bad_names = ["../outside.png", str(manual / "outside.png"), "sub/face.png",
               "inner/../../outside.png", "../../etc/passwd", "/etc/hosts"]
  write_rows(folder, rows + [[n] + votes for n in bad_names] + [["inner/ok.png"] + votes])
  opened = []
  real_imread = cv2.imread
  monkeypatch.setattr(cv2, "imread", lambda p, *a: opened.append(p) or real_imread(p, *a))
  with caplog.at_level("WARNING"):
    b, names = build(manual, tmp_path)
  report = b.reports["validation"]
  assert report.written == N + 1 and len(names["validation"]) == N + 1
  assert sorted(names["validation"]) == sorted([r[0] for r in rows] + ["inner/ok.png"])
  assert dict(report.skipped) == {"name outside its split folder": 6}
  root = folder.resolve()
  assert len(opened) == N + 1
  assert all(pathlib.Path(p).resolve().is_relative_to(root) for p in opened), opened
  for line_no, name in enumerate(bad_names, N + 1):
    assert f"{folder / 'label.csv'} line {line_no}: image name {name!r} resolves outside" in (
        caplog.text)
  line = report.line("validation")
  assert "6 name outside its split folder" in line
  assert f"label.csv line {N + 1}: image name '../outside.png'" in line


def test_bad_vote_counts_in_label_csv_are_skipped_named_and_counted(sample_dir, tmp_path, caplog):
  manual = tmp_path / "manual"
  rows = small_valid(sample_dir, manual)
  bad = {0: "-1", 1: "nan", 2: "inf", 3: "2.5", 4: "1e12", 5: "1001"}
  for i, value in bad.items():
    rows[i][2 + i] = value
  rows[6][2:12] = ["3.0", "0", "0", "0", "0", "0", "0", "0", "0", "1000"]  # whole, in bounds
  write_rows(manual / "FER2013Valid", rows)
  with caplog.at_level("WARNING"):
    b, names = build(manual, tmp_path)
  report = b.reports["validation"]
  assert report.written == N - 6
  assert dict(report.skipped) == {"bad vote counts": 6}
  assert sorted(names["validation"]) == sorted(r[0] for r in rows[6:])
  src = b.as_data_source()["validation"]
  kept = {names["validation"][i]: np.asarray(src[i]["votes"]) for i in range(len(src))}
  np.testing.assert_array_equal(kept[rows[6][0]], [3, 0, 0, 0, 0, 0, 0, 0, 0, 1000])
  label_csv = manual / "FER2013Valid" / "label.csv"
  for i, value in bad.items():
    assert (f"{label_csv} line {i + 1} ({rows[i][0]}): vote counts {rows[i][2:12]} are "
            f"{value} not whole number(s) in [0, 1000]") in caplog.text
  line = report.line("validation")
  assert "skipped: 6 bad vote counts; first of each: bad vote counts: " in line
  assert f"label.csv line 1 ({rows[0][0]})" in line and "are -1 not whole" in line


def test_all_zero_votes_are_kept_and_every_label_mode_drops_them(sample_dir, tmp_path):
  manual = tmp_path / "manual"
  rows = small_valid(sample_dir, manual)
  zero = {rows[i][0] for i in (1, 4, 7)}
  for i in (1, 4, 7):
    rows[i][2:12] = ["0"] * 10
  rows[9][2:12] = ["1"] * 10  # every vote a single annotator's: nothing left after outliers go
  write_rows(manual / "FER2013Valid", rows)
  tfds_dir = str(tmp_path / "tfds")
  sizes = ferplus.prepare(str(manual), tfds_dir, "template")
  majority = sum(labels.majority_label(np.array(r[2:12], float)) is not None for r in rows)
  assert sizes == {"validation": {"examples": N, "majority": majority}}
  assert majority <= N - 4
  sources = pipeline.data_sources(tfds_dir, "template")
  src = sources["validation"]
  names = [src[i]["name"].decode() if isinstance(src[i]["name"], bytes) else src[i]["name"]
           for i in range(len(src))]
  dropped = {names.index(n) for n in zero | {rows[9][0]}}
  assert len(dropped) == 4
  for mode in labels.LABEL_MODES:
    for for_eval in (False, True):
      split = pipeline.load_split(sources, "validation", mode, for_eval)
      assert not dropped & set(split.indices.tolist()), (mode, for_eval)
      assert len(split) > 0 and np.all(np.isfinite(split.targets))
      np.testing.assert_allclose(split.targets.sum(-1), 1.0, rtol=1e-5)


def test_bad_votes_and_pixels_in_kaggle_csvs_are_skipped_named_and_counted(
    sample_dir, tmp_path, caplog):
  kaggle = tmp_path / "kaggle"
  write_kaggle(sample_dir, kaggle)
  keep = 41  # the header and 40 rows of each CSV (they are joined row by row)
  pix_lines = (kaggle / "fer2013.csv").read_text().splitlines()[:keep]
  vote_rows = list(csv.reader(open(kaggle / "fer2013new.csv")))[:keep]
  names = [r[1] for r in vote_rows[1:] if r[1]]
  repeated = {n for n in names if names.count(n) > 1}
  # Rows whose name is unique, so that a later row cannot stand in for the skipped one.
  rows = [i for i in range(12, keep) if vote_rows[i][1] and vote_rows[i][1] not in repeated]
  bad_votes = dict(zip(rows[:5], ["nan", "-1", "1e12", "2.5", "inf"]))
  bad_pixels = dict(zip(rows[5:10], ["nan", "inf", "300", "-1", "12.5"]))
  for i, value in bad_votes.items():
    vote_rows[i][2 + i % 10] = value
  for i, value in bad_pixels.items():
    emotion, pixels, usage = pix_lines[i].split(",")
    pixels = pixels.split()
    pixels[17] = value
    pix_lines[i] = ",".join((emotion, " ".join(pixels), usage))
  (kaggle / "fer2013.csv").write_text("\n".join(pix_lines) + "\n")
  with open(kaggle / "fer2013new.csv", "w", newline="") as f:
    csv.writer(f).writerows(vote_rows)
  with caplog.at_level("WARNING"):
    b, written = build(kaggle, tmp_path)
  report = b.reports["train"]
  skipped_names = {vote_rows[i][1] for i in [*bad_votes, *bad_pixels]}
  assert len(skipped_names) == 10 and len(set(names)) == 38
  assert report.written == len(set(names)) - 10 == 28
  assert sorted(written["train"]) == sorted(set(names) - skipped_names)
  assert report.skipped["bad vote counts"] == 5 and report.skipped["bad pixel values"] == 5
  for i, value in bad_votes.items():
    assert (f"{kaggle / 'fer2013new.csv'} row {i + 1} ({vote_rows[i][1]}): vote counts "
            f"{vote_rows[i][2:12]} are {value} not whole number(s) in [0, 1000]") in caplog.text
  for i, value in bad_pixels.items():
    assert (f"{kaggle / 'fer2013.csv'} row {i + 1} ({vote_rows[i][1]}): 1 pixel value(s) not "
            f"whole numbers in [0, 255]: {float(value):g} at 17") in caplog.text
  line = report.line("train")
  assert "5 bad pixel values, 5 bad vote counts" in line
  assert f"bad pixel values: {kaggle / 'fer2013.csv'} row {rows[5] + 1}" in line
  assert f"bad vote counts: {kaggle / 'fer2013new.csv'} row {rows[0] + 1}" in line


# ---- predict never destroys earlier results

def small_face(tmp_path, name, photo="astronaut.png", size=150):
  """One small image holding one face: `tmp_path/name`."""
  path = tmp_path / name
  assert cv2.imwrite(str(path), head(photo, size))
  return path


def test_a_used_output_folder_is_refused_before_the_model_loads(tmp_path):
  image = small_face(tmp_path, "face.png")
  out = tmp_path / "out"
  (out / "tracks").mkdir(parents=True)
  (out / "faces.csv").write_text("earlier rows\n")
  (out / "face_annotated.jpg").write_bytes(b"earlier image")
  (out / "tracks" / "track_0.png").write_bytes(b"earlier plot")
  (out / "notes.txt").write_text("mine")
  before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
  no_run = tmp_path / "no_run"  # loading a model from here would fail with another error
  with pytest.raises(ValueError) as e:
    predict.predict(str(no_run), str(image), str(out), overrides=overrides())
  message = str(e.value)
  assert f"output folder {out} already holds the results of a prediction" in message
  assert "face_annotated.jpg, faces.csv, tracks/track_0.png" in message
  assert "notes.txt" not in message and "\n" not in message
  assert "--config.predict.overwrite=True" in message and "another --output" in message
  assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched


def test_overwrite_removes_only_what_predict_writes(reference_run, tmp_path):
  image = small_face(tmp_path, "face.png")
  out = tmp_path / "out"
  (out / "tracks").mkdir(parents=True)
  stale = ["faces.jsonl", "faces.csv", "summary.json", "tracks.csv", "tracks.json",
           "annotated.mp4", "old_annotated.jpg", "tracks/track_3.png"]
  for name in stale:
    (out / name).write_text("from an earlier run")
  for name in ("notes.txt", "old.jpg", "tracks/mine.txt"):
    (out / name).write_text("not predict's")
  summary = predict.predict(str(reference_run), str(image), str(out),
                            overrides=overrides(overwrite=True))
  assert summary["kind"] == "image" and summary["frames"] == 1 and summary["faces"] == 1
  assert summary["annotated"] == [str(out / "face_annotated.jpg")]
  assert [r["source"] for r in read_rows(out)] == ["face.png"]
  assert json.loads((out / "summary.json").read_text())["faces"] == 1
  assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
      "face_annotated.jpg", "faces.csv", "faces.jsonl", "notes.txt", "old.jpg", "summary.json",
      "tracks", "tracks/mine.txt"]
  assert (out / "notes.txt").read_text() == "not predict's"


def test_images_sharing_a_stem_get_distinct_annotated_files(reference_run, tmp_path):
  folder = tmp_path / "in"
  folder.mkdir()
  small_face(folder, "a.png", "astronaut.png", 150)
  small_face(folder, "a.jpg", "grace_hopper.jpg", 120)
  small_face(folder, "b.png", "astronaut.png", 100)
  out = tmp_path / "out"
  summary = predict.predict(str(reference_run), str(folder), str(out), overrides=overrides())
  assert summary["frames"] == 3 and summary["faces"] == 3
  names = ["a_jpg_annotated.jpg", "a_png_annotated.jpg", "b_annotated.jpg"]
  assert sorted(summary["annotated"]) == [str(out / n) for n in names]
  assert sorted(p.name for p in out.glob("*_annotated.jpg")) == names
  for name, size in (("a_png", 150), ("a_jpg", 120), ("b", 100)):  # each from its own image
    assert cv2.imread(str(out / f"{name}_annotated.jpg")).shape == (size, size, 3)


def test_strided_video_that_stops_early_counts_the_processed_frames(
    reference_run, tmp_path, monkeypatch, caplog):
  video = write_video(tmp_path / "class.mp4", seconds=2)  # 20 frames at 10 fps
  monkeypatch.setattr(predict.cv2, "VideoCapture", FailingCapture)  # frame read 6 fails
  out = tmp_path / "out"
  with caplog.at_level(logging.WARNING):
    summary = predict.predict(str(reference_run), str(video), str(out),
                              overrides=overrides(detector="hog", frame_stride=2))
  # Read 1 is frame 0, then every other frame: 0, 2, 4, 6, 8 processed; frame 10 fails.
  warning = [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]
  assert len(warning) == 1
  assert "frame 10 of 20 failed to decode" in warning[0]
  assert "keeping the 5 frames processed" in warning[0]
  saved = json.loads((out / "summary.json").read_text())
  assert saved == json.loads(json.dumps(summary))
  assert saved["stopped_early"] and saved["frame_stride"] == 2
  assert saved["frames"] == 5 and saved["faces"] == 10 and saved["no_face_frames"] == 0
  assert saved["tracks"] == 2
  assert sorted({r["frame"] for r in read_rows(out)}) == [0, 2, 4, 6, 8]
  tracks = json.loads((out / "tracks.json").read_text())
  assert [t["frames_seen"] for t in tracks] == [5, 5]
  assert [t["last_time"] for t in tracks] == [pytest.approx(0.8)] * 2
  cap = REAL_CAPTURE(str(out / "annotated.mp4"))
  assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
  cap.release()


def test_cli_exits_2_with_one_line_for_a_used_output_folder(reference_run, prepared, tmp_path):
  image = small_face(tmp_path, "face.png")
  out = tmp_path / "out"
  out.mkdir()
  (out / "summary.json").write_text("{}")
  r = runs.run(reference_run, prepared[0], f"--input={image}", f"--output={out}",
               mode="predict", timeout=300)
  assert r.returncode == 2, r.stderr[-2000:]
  errors = [l for l in r.stderr.splitlines() if l.startswith("fer_jax: error:")]
  assert errors == [
      f"fer_jax: error: output folder {out} already holds the results of a prediction "
      "(summary.json); pass --config.predict.overwrite=True to replace them, or choose "
      "another --output"]
  assert "Traceback" not in r.stderr
  assert (out / "summary.json").read_text() == "{}"
