"""Two local CPU processes (gloo over 127.0.0.1) against one: same losses for the same global
batch, and checkpoints that move between process counts."""

import json

import pytest

import runs


# The two-process run: the reference run's first half (a constant learning rate and an order
# that does not depend on the run's length: its steps are the reference's steps).
HALF = runs.STEPS // 2
TWO_FLAGS = tuple(f for f in runs.REFERENCE_FLAGS if "num_train_steps" not in f) + (
    f"--config.num_train_steps={HALF}",)


@pytest.fixture(scope="module")
def one_and_two(prepared, reference_run, tmp_path_factory):
  tfds_dir = prepared[0]
  root = tmp_path_factory.mktemp("multihost")
  one, two = reference_run, root / "two"
  codes = runs.run_processes(2, two, tfds_dir, *TWO_FLAGS)
  logs = "\n".join((root / f"two.p{i}.log").read_text()[-2000:] for i in range(2))
  assert codes == [0, 0], logs
  return tfds_dir, one, two


def test_two_processes_give_the_losses_of_one(one_and_two):
  _, one, two = one_and_two
  a, b = runs.metrics(one), runs.metrics(two)
  assert sorted(b) == list(range(2, HALF + 1, 2)) and set(b) < set(a)
  for step in b:
    assert abs(a[step]["loss"] - b[step]["loss"]) < 1e-5 * max(1.0, a[step]["loss"]), step
    assert abs(a[step]["mu/eyes"] - b[step]["mu/eyes"]) < 1e-5
  ea, eb = runs.metrics(one, "eval"), runs.metrics(two, "eval")
  assert sorted(eb) == [HALF] and ea[HALF]["accuracy"] == eb[HALF]["accuracy"]
  # Only process 0 wrote the outputs.
  assert (two / "eval" / "validation.json").exists()


def test_checkpoints_move_between_process_counts(one_and_two, tmp_path):
  tfds_dir, one, two = one_and_two
  # Each run continues under the other process count, to the same place.
  import shutil  # pylint: disable=g-import-not-at-top
  one_more, two_more = tmp_path / "one_more", tmp_path / "two_more"
  shutil.copytree(one, two_more)  # written by 1, continued by 2
  shutil.copytree(two, one_more)  # written by 2, continued by 1
  more = [f for f in runs.REFERENCE_FLAGS if "num_train_steps" not in f]
  more.append(f"--config.num_train_steps={runs.STEPS + 2}")
  assert runs.run_processes(2, two_more, tfds_dir, *more) == [0, 0]
  from fer_jax.modes import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(runs.config(tfds_dir, *more), str(one_more))  # 1 process: this one
  a, b = runs.metrics(one_more)[runs.STEPS + 2], runs.metrics(two_more)[runs.STEPS + 2]
  assert abs(a["loss"] - b["loss"]) < 1e-5 * max(1.0, a["loss"])
  # One process evaluated what two processes wrote (and continued), and the other way round.
  by_one = json.loads((one_more / "eval" / "validation.json").read_text())
  by_two = json.loads((two_more / "eval" / "validation.json").read_text())
  assert by_one["checkpoint_step"] == by_two["checkpoint_step"] == runs.STEPS + 2
  assert by_one["accuracy"] == by_two["accuracy"]
