"""Runs that survive: SIGKILL at random moments (a checkpoint write included) and SIGTERM lose
at most the steps since the last checkpoint, and the resumed run ends where an uninterrupted
one does."""

import pathlib
import random
import signal
import time

import numpy as np
import pytest

import runs

STEPS = runs.STEPS
FLAGS = runs.REFERENCE_FLAGS


def checkpoint_steps(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def tmp_dirs(workdir):
  d = pathlib.Path(workdir) / "checkpoints"
  return [p for p in d.iterdir() if "tmp" in p.name] if d.exists() else []


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


def test_same_config_and_seed_give_the_same_metrics(reference, prepared, tmp_path):
  again = tmp_path / "again"
  r = runs.run(again, prepared[0], *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  a, b = runs.metrics(reference), runs.metrics(again)
  assert sorted(a) == sorted(b)
  for step in a:
    for key in ("loss", "ce", "constraint", "accuracy", "grad_norm"):
      assert a[step][key] == b[step][key], (step, key)


def test_sigkill_anywhere_then_resume_ends_like_an_uninterrupted_run(reference, prepared, tmp_path):
  rng = random.Random(0)
  workdir = tmp_path / "killed"
  kills = []
  # 1: during a checkpoint write; 2-3: at random moments once training is under way.
  for attempt in range(3):
    before = checkpoint_steps(workdir)
    proc = runs.start(workdir, prepared[0], *FLAGS, log=tmp_path / f"kill{attempt}.log")
    if attempt == 0:
      hit = wait_for(lambda: tmp_dirs(workdir) and checkpoint_steps(workdir), proc)
      if not hit:  # the first save may complete before we see it; kill during the next one
        hit = wait_for(lambda: tmp_dirs(workdir), proc)
    else:
      hit = wait_for(lambda: len(checkpoint_steps(workdir)) > len(before) or
                     max(checkpoint_steps(workdir) or [0]) > max(before or [0]), proc)
      time.sleep(rng.uniform(0.0, 1.5))
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
  r = runs.run(workdir, prepared[0], *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
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
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0
  log = (tmp_path / "term.log").read_text()
  assert "SIGTERM received" in log and "preempted at step" in log
  saved = checkpoint_steps(workdir)
  assert saved and saved[-1] < STEPS
  r = runs.run(workdir, prepared[0], *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  a, b = runs.metrics(reference), runs.metrics(workdir)
  assert a[STEPS]["loss"] == b[STEPS]["loss"]
