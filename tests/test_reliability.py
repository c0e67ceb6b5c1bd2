"""Runs that cannot hurt each other (issue 26): one writer per run folder, resumes that match the
checkpoint's recipe, result files written whole or not at all, bad values refused before any
work, damaged data and odd logs named, main.py from any folder. (The same face giving the same
answer, and input subfolders, are in test_predict.py; the clean exit after a resume that fell
back past a damaged checkpoint in test_preemption.py.)"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import runs
from fer_jax import cli
from fer_jax.data import pipeline
from fer_jax import errors
from fer_jax import files
from fer_jax.modes import train


def cli_error(mode, config, workdir):
  """(exit status, message) of `cli.run` refusing a run."""
  with pytest.raises(errors.EXPECTED) as e:
    cli.run(mode, config, str(workdir))
  return errors.exit_status(e.value), str(e.value)


# ---- 1. one writer per run folder


def test_a_second_writer_is_refused_and_a_dead_holders_lock_taken_over(prepared, tmp_path,
                                                                        caplog):
  workdir = tmp_path / "run"
  child = runs.hold_lock(workdir)
  try:
    for mode in ("train", "eval", "occlusion", "export"):
      output = str(tmp_path / "m.onnx") if mode == "export" else None
      with pytest.raises(errors.RunLockedError) as e:
        cli.run(mode, runs.config(prepared[0]), str(workdir), output=output)
      status, message = errors.exit_status(e.value), str(e.value)
      assert status == 2, mode
      assert f"{workdir} is in use by pid {child.pid} on " in message, message
      assert "(the test holder)" in message
    assert not (workdir / "metrics.jsonl").exists()  # refused before any work
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  # The kernel freed the lock with its holder; the next writer takes it over and says so.
  with caplog.at_level(logging.WARNING):
    with files.RunLock(workdir, "the next run"):
      assert json.loads((workdir / files.LOCK_FILE).read_text())["pid"] == os.getpid()
  assert f"took over the lock left by pid {child.pid}" in caplog.text
  assert (workdir / files.LOCK_FILE).read_text() == ""  # released cleanly: nothing to warn of
  with caplog.at_level(logging.WARNING):
    caplog.clear()
    files.RunLock(workdir).acquire().release()
  assert "took over" not in caplog.text


# ---- 2. a resume that changes the recipe


@pytest.mark.parametrize("flags, shown", [
    (("--config.model.stem=imagenet",), "model.stem: 'small_strided' -> 'imagenet'"),
    (("--config.model.fusion=weighted_mean",), "model.fusion: 'weighted_sum' -> 'weighted_mean'"),
    (("--config.data.crops.branches=('face', 'eyes', 'mouth', 'occluded')",),
     "data.crops.branches: ('face', 'eyes', 'nose', 'mouth', 'occluded') -> "
     "('face', 'eyes', 'mouth', 'occluded')"),
    (("--config.model.width=0.25", "--config.loss.margin=0.05"),
     "loss.margin: 0.03 -> 0.05; model.width: 0.125 -> 0.25"),
])
def test_resume_with_another_recipe_is_refused_naming_each_key(reference_run, prepared, tmp_path,
                                                               flags, shown):
  workdir = tmp_path / "run"
  shutil.copytree(reference_run, workdir)
  config_json = (workdir / "config.json").read_text()
  status, message = cli_error("train", runs.config(prepared[0], *flags), workdir)
  assert status == 2
  assert shown in message, message
  assert "Resume with the old values (--config." in message and "new --workdir" in message
  assert (workdir / "config.json").read_text() == config_json  # written only after the checks


def test_resume_may_change_the_documented_keys(reference_run, prepared, tmp_path):
  from fer_jax import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  saved = json.loads((reference_run / "config.json").read_text())
  config = runs.config(prepared[0], "--config.num_train_steps=99", "--config.eval_flip=True",
                       "--config.lowering.conv_impl=xla", "--config.log_every_steps=7")
  for key in ("num_train_steps", "eval_flip", "lowering.conv_impl", "log_every_steps"):
    assert any(key == k or key.startswith(k + ".") for k in ckpt_lib.RESUMABLE_KEYS)
  config.data.manual_dir = saved["data"]["manual_dir"]
  assert ckpt_lib.resume_changes(config, saved) == []
  config.seed = 5
  assert ckpt_lib.resume_changes(config, saved) == [("seed", 0, 5)]
  # Nested tuples come back from config.json as nested lists: still the same recipe.
  config.data.train_sizes = ((8, 24),)
  assert ckpt_lib.resume_changes(config, json.loads(config.to_json())) == []


# ---- 3. result files written whole or not at all

# A child that dies (SIGKILL) halfway through the first write to a file under DIR, as a
# SIGTERM/SIGKILL or a power cut mid-write would leave it.
DYING = textwrap.dedent("""
    import builtins, io, os, signal, sys
    target = sys.argv[1]
    real_open = io.open

    class Dying:
      def __init__(self, f): self._f = f
      def write(self, data):
        self._f.write(data[:max(len(data) // 2, 1)]); self._f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
      def __enter__(self): return self
      def __exit__(self, *a): self._f.close()
      def __getattr__(self, name): return getattr(self._f, name)

    def dying_open(file, mode="r", *args, **kwargs):
      f = real_open(file, mode, *args, **kwargs)
      if isinstance(file, (str, os.PathLike)) and str(file).startswith(target) and \\
          any(c in mode for c in "wax"):
        return Dying(f)
      return f

    io.open = builtins.open = dying_open
""")

WRITERS = {
    "eval JSON": ("eval/validation.json", """
        import numpy as np
        from fer_jax.modes import evaluate
        evaluate.write_results(target, "validation", dict(accuracy=0.5, confusion_matrix=[[1]]),
                               np.zeros((1, 1)), ["face"], make_plots=False)"""),
    "plot PNG": ("eval/validation_confusion.png", """
        import numpy as np
        from fer_jax import plots
        plots.confusion_matrix(np.eye(8), [str(i) for i in range(8)],
                               target + "/eval/validation_confusion.png")"""),
    "study CSV": ("study.csv", """
        import pathlib
        from fer_jax.modes import study
        study.write_csv([dict(run="a/seed=0", final_accuracy=0.5)], pathlib.Path(target) / "study.csv")"""),
    "config.json": ("config.json", """
        from fer_jax import files
        files.write_text(target + "/config.json", '{"seed": 1}')"""),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_writer_killed_mid_write_leaves_the_old_file_intact(tmp_path, writer):
  name, code = WRITERS[writer]
  old = tmp_path / name
  old.parent.mkdir(parents=True, exist_ok=True)
  old.write_bytes(b"the earlier result")
  r = subprocess.run([sys.executable, "-c", DYING + textwrap.dedent(code), str(tmp_path)],
                     capture_output=True, text=True, timeout=120, env=runs.env(), cwd=runs.ROOT)
  assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]  # it did die mid-write
  assert old.read_bytes() == b"the earlier result"


def test_atomic_write_replaces_whole_and_leaves_no_temporary_file(tmp_path):
  path = tmp_path / "sub" / "result.json"
  files.write_json(path, {"accuracy": 0.5})
  files.write_json(path, {"accuracy": 0.75})
  assert json.loads(path.read_text()) == {"accuracy": 0.75}
  with pytest.raises(ZeroDivisionError):
    with files.atomic_path(path) as tmp:
      tmp.write_text("half")
      raise ZeroDivisionError
  assert json.loads(path.read_text()) == {"accuracy": 0.75}
  assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


# ---- 4. bad values refused where the config enters


@pytest.mark.parametrize("flag, message", [
    ("--config.optimizer.learning_rate=nan",
     "config.optimizer.learning_rate must be a finite number, got nan"),
    ("--config.loss.margin=-1", "config.loss.margin must be in [0, 1], got -1.0"),
    ("--config.model.depth=7", "config.model.depth must be one of 10, 18, 34, 50 for a resnet, "
                               "got 7"),
    ("--config.optimizer.schedule=linear", "config.optimizer.schedule must be one of "
                                           "paper_literal, step, cosine, constant, got 'linear'"),
    ("--config.data.crops.occlude_face=1.5",
     "config.data.crops.occlude_face must be in [0, 1], got 1.5"),
])
def test_bad_values_are_refused_before_the_data_is_prepared(tmp_path, flag, message):
  tfds = tmp_path / "tfds"
  config = runs.config(str(tfds), f"--config.data.manual_dir={runs.SAMPLE}", flag)
  status, error = cli_error("train", config, tmp_path / "w")
  assert status == 2 and error == message
  assert not tfds.exists() and not (tmp_path / "w").exists()


def test_unknown_key_names_the_dotted_key_and_its_neighbours():
  config = str(runs.ROOT / "configs" / "test.py")
  assert cli.unknown_override(["--config.model.stemm=small"], config) == (
      "unknown config key config.model.stemm (in --config.model.stemm=small); nearest valid "
      "keys: config.model.stem, config.model.dtype, config.model.temperature")
  line = cli.unknown_override(["--config.seed=1", "--config.nonexistent=1"], config)
  assert line.startswith("unknown config key config.nonexistent (in --config.nonexistent=1); "
                         "nearest valid keys: config.")
  assert cli.unknown_override(["--config.model.stem=small"], config) is None


# ---- 5. damaged prepared data


def test_damaged_prepared_data_names_the_file_the_split_and_the_rebuild(prepared, tmp_path):
  tfds = tmp_path / "tfds"
  shutil.copytree(prepared[0], tfds)
  data = pipeline.dataset_dir(str(tfds), "template")
  record = next(data.glob("*-train.array_record*"))
  raw = bytearray(record.read_bytes())
  middle = len(raw) // 2
  raw[middle:middle + 2000] = bytes(b ^ 0x5A for b in raw[middle:middle + 2000])
  record.write_bytes(bytes(raw))
  status, error = cli_error("train", runs.config(str(tfds)), tmp_path / "w")
  assert status == 2
  assert f"the prepared dataset's 'train' split is damaged: {record} does not read" in error
  assert (f"Rebuild it: delete {data} and run python main.py --mode=prepare "
          f"--config.data.manual_dir=DIR --config.data.tfds_dir={tfds} "
          "--config.data.landmarks=template") in error


# ---- 6. odd metrics rows; a data folder that cannot be written


def test_metrics_rows_of_the_wrong_shape_are_skipped_with_a_warning(tmp_path, caplog):
  log = tmp_path / "metrics.jsonl"
  rows = [dict(step=2, kind="train", loss=2.0), dict(step="abc"), dict(step=4, kind="train",
                                                                         loss=1.5),
          dict(step=True, kind="eval"), dict(step=6, kind="train", loss=1.0)]
  log.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with caplog.at_level(logging.WARNING):
    writer = train.MetricWriter(tmp_path, resume_step=4)
    writer.close()
  kept = [json.loads(l) for l in log.read_text().splitlines()]
  assert [r["step"] for r in kept] == [2, 4]
  assert f"{log} line 2 is not a row of this log (its 'step' is 'abc', not an integer)" in \
      caplog.text
  assert f"{log} line 4 is not a row of this log (its 'step' is True" in caplog.text


def test_unprepared_data_folder_that_cannot_be_written_exits_2_naming_it(tmp_path):
  if os.geteuid() == 0:  # root writes through permission bits; /proc refuses everyone
    tfds = "/proc/self/fer_jax_tfds"
  else:
    (tmp_path / "ro").mkdir(mode=0o555)
    tfds = str(tmp_path / "ro" / "tfds")
  config = runs.config(tfds, f"--config.data.manual_dir={runs.SAMPLE}")
  status, error = cli_error("train", config, tmp_path / "w")
  assert status == 2
  assert error.startswith(f"config.data.tfds_dir={tfds} holds no prepared FERPlus and cannot "
                          "be written to prepare it")


# ---- 7. main.py from any folder


def test_main_runs_from_another_folder_with_the_default_config(tmp_path):
  r = subprocess.run([sys.executable, str(runs.ROOT / "main.py"), f"--workdir={tmp_path / 'w'}",
                      "--config.batch_size=0"], capture_output=True, text=True, timeout=120,
                     cwd=tmp_path, env=runs.env())
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1] == (
      "fer_jax: error: config.batch_size must be >= 1, got 0")
