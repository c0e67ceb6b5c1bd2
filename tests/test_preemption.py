"""Runs that survive: SIGKILL at random moments (a checkpoint write included) and SIGTERM lose
at most the steps since the last checkpoint, and the resumed run ends where an uninterrupted
one does; a damaged newest checkpoint or a metrics line cut by a SIGKILL does not stop a
resume, and a resume that would repeat examples is refused."""

import json
import logging
import pathlib
import random
import shutil
import signal
import time

import pytest

from fer_jax import errors
import runs
from fer_jax import files
from fer_jax import jsonl
from fer_jax.modes import train

STEPS = runs.STEPS
FLAGS = runs.REFERENCE_FLAGS
checkpoint_steps = runs.checkpoint_steps


def tmp_dirs(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  return [p for p in d.iterdir() if "tmp" in p.name] if d.exists() else []


def logged(workdir, step):
  """Whether training has written its metrics line for `step` (a half-written line is not)."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return False
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if row.get("kind") == "train" and row.get("step") == step:
      return True
  return False


def wait_for(predicate, proc, timeout=240):
  t0 = time.time()
  while time.time() - t0 < timeout:
    if predicate():
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.01)
  return False


@pytest.fixture(scope="module")
def reference(reference_run):
  return reference_run


def finish(workdir, prepared):
  """Runs (or resumes) the reference run's config in `workdir` to the end, in-process."""
  result = train.train_and_evaluate(runs.config(prepared[0], *FLAGS), str(workdir))
  assert result["step"] == STEPS


def test_same_config_and_seed_give_the_same_metrics(reference, prepared, tmp_path):
  again = tmp_path / "again"
  finish(again, prepared)  # in this process; the reference ran in a subprocess
  a, b = runs.metrics(reference), runs.metrics(again)
  assert sorted(a) == sorted(b)
  for step in a:
    for key in ("loss", "ce", "constraint", "accuracy", "grad_norm"):
      assert a[step][key] == b[step][key], (step, key)


def test_sigkill_anywhere_then_resume_ends_like_an_uninterrupted_run(reference, prepared, tmp_path):
  rng = random.Random(0)
  workdir = tmp_path / "killed"
  kills = []
  # 1: during a checkpoint write; 2: at a random moment once training is under way.
  for attempt in range(2):
    before = checkpoint_steps(workdir)
    proc = runs.start(workdir, prepared[0], *FLAGS, log=tmp_path / f"kill{attempt}.log")
    if attempt == 0:
      hit = wait_for(lambda: tmp_dirs(workdir) and checkpoint_steps(workdir), proc)
      if not hit:  # the first save may complete before we see it; kill during the next one
        hit = wait_for(lambda: tmp_dirs(workdir), proc)
    else:  # right after a random logged step, at least two logged steps before the end
      # (a wall-clock delay would outlast the whole rest of the run on a fast machine)
      target = rng.choice([s for s in range(2, STEPS - 2, 2) if s > max(before or [0])])
      hit = wait_for(lambda: logged(workdir, target), proc)
    if proc.poll() is not None:
      break  # finished before the kill: nothing left to interrupt
    during_save = bool(tmp_dirs(workdir))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append((checkpoint_steps(workdir), during_save))
    # Never a partial checkpoint: every listed step is complete.
    for step in checkpoint_steps(workdir):
      assert (workdir / "checkpoints" / str(step) / "_CHECKPOINT_METADATA").exists()
  assert len(kills) >= 2, kills
  assert any(during for _, during in kills), f"no kill landed during a save: {kills}"
  finish(workdir, prepared)
  assert not tmp_dirs(workdir)
  assert checkpoint_steps(workdir)[-1] == STEPS
  a, b = runs.metrics(reference), runs.metrics(workdir)
  for step in sorted(a):
    assert a[step]["loss"] == b[step]["loss"], step
  assert (workdir / "eval" / "validation.json").read_text() == \
      (reference / "eval" / "validation.json").read_text()


def test_sigterm_saves_and_exits_cleanly(prepared, reference, tmp_path):
  workdir = tmp_path / "term"
  proc = runs.start(workdir, prepared[0], *FLAGS, log=tmp_path / "term.log")
  assert wait_for(lambda: runs.metrics(workdir) if (workdir / "metrics.jsonl").exists() else False,
                  proc)
  with pytest.raises(errors.RunLockedError, match=f"is in use by pid {proc.pid} on "):
    files.RunLock(workdir).acquire()  # the training run holds its folder
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0
  log = (tmp_path / "term.log").read_text()
  assert "SIGTERM received" in log and "preempted at step" in log
  saved = checkpoint_steps(workdir)
  assert saved and saved[-1] < STEPS
  finish(workdir, prepared)
  a, b = runs.metrics(reference), runs.metrics(workdir)
  assert a[STEPS]["loss"] == b[STEPS]["loss"]
  # metrics.jsonl holds each step once: the steps redone after the last checkpoint not twice.
  steps = [r["step"] for r in jsonl.read_metrics(workdir / "metrics.jsonl") if r["kind"] == "train"]
  assert steps == sorted(a) == list(range(2, STEPS + 1, 2)), steps
  assert (workdir / "eval" / "validation.json").read_text() == \
      (reference / "eval" / "validation.json").read_text()


def resumed(reference, prepared, tmp_path, *flags):
  """A copy of the reference run and the in-process config that continues it 2 steps."""
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  config = runs.config(prepared[0], *FLAGS, f"--config.num_train_steps={STEPS + 2}", *flags)
  return workdir, config


def test_resume_falls_back_past_a_damaged_checkpoint_and_keeps_it(reference, prepared, tmp_path):
  """By main.py, as a user runs it: the warnings name the damage, and the run that recovered
  exits 0 without a traceback (Orbax's managers are closed before the interpreter ends)."""
  workdir, _ = resumed(reference, prepared, tmp_path)
  runs.damage(workdir, STEPS)
  damaged = {p.relative_to(workdir / "checkpoints" / str(STEPS)): p.read_bytes()
             for p in (workdir / "checkpoints" / str(STEPS)).rglob("*") if p.is_file()}
  r = runs.run(workdir, prepared[0], *FLAGS, f"--config.num_train_steps={STEPS + 2}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stderr, r.stderr[-3000:]
  warned = r.stderr
  assert (f"the checkpoint at step {STEPS} in {workdir / 'checkpoints' / str(STEPS)} is "
          "damaged and does not restore") in warned
  kept = workdir / "damaged_checkpoints" / str(STEPS)
  assert f"moved the damaged checkpoint {workdir / 'checkpoints' / str(STEPS)} to {kept}" in warned
  # Nothing deleted: the damaged step is kept byte for byte, out of the retention policy's way.
  assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == damaged
  # Resumed from step 10, so steps 11 and 12 ran again, exactly as in the reference run.
  assert checkpoint_steps(workdir)[-2:] == [STEPS, STEPS + 2]
  a, b = runs.metrics(reference), runs.metrics(workdir)
  assert a[STEPS]["loss"] == b[STEPS]["loss"] and STEPS + 2 in b


def test_resume_skips_a_metrics_line_cut_by_sigkill(reference, prepared, tmp_path, caplog):
  workdir, config = resumed(reference, prepared, tmp_path)
  log = workdir / "metrics.jsonl"
  with open(log, "a") as f:
    f.write('{"step": 13, "kind": "train", "loss": 1.9')  # the write a SIGKILL cut short
  lines = len(log.read_text().splitlines())
  with caplog.at_level(logging.WARNING):
    result = train.train_and_evaluate(config, str(workdir))
  assert result["step"] == STEPS + 2
  assert f"{log} line {lines} is not a JSON object" in caplog.text
  rows = [json.loads(l) for l in log.read_text().splitlines()]  # every line whole again
  assert [r["step"] for r in rows if r["kind"] == "train"][-2:] == [STEPS, STEPS + 2]


def test_resume_with_another_batch_size_is_refused(reference, prepared, tmp_path):
  workdir, config = resumed(reference, prepared, tmp_path, "--config.batch_size=8")
  before = checkpoint_steps(workdir)
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(config, str(workdir))
  assert "batch_size: 16 -> 8 (old -> new)" in str(e.value)
  assert "Resume with the old values (--config.batch_size=16), or start a new --workdir" in \
      str(e.value)
  assert checkpoint_steps(workdir) == before


def test_a_sigterm_while_a_study_run_is_prepared_stops_it_at_its_first_step(prepared, tmp_path):
  """A study's budget (study.Budget) took the SIGTERM before training began: the run saves at
  its first step and reports itself preempted, instead of training to its end."""
  import os  # pylint: disable=g-import-not-at-top
  from fer_jax.modes import study  # pylint: disable=g-import-not-at-top
  config = runs.config(prepared[0], *FLAGS)
  with study.Budget(0.0) as budget:
    os.kill(os.getpid(), signal.SIGTERM)  # lands in the budget's handler: no run yet
    assert budget.stopped
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert result == dict(preempted=True, step=1)
  assert checkpoint_steps(tmp_path / "run") == [1]
