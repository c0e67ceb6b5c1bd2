"""The device-resident source (`data.source="memory"`): the grain path's batches, gathered
inside the step; the same training, resumable from any checkpoint; and `bench/gpu.py --train`,
which trains from it. (Over four devices: tests/multidevice_step.py.)"""

import json

import numpy as np
import pytest

import runs
from fer_jax.data import memory, pipeline
from fer_jax.modes import train

B, SEED = 16, 3


def train_rows(workdir):
  return {r["step"]: r for r in (json.loads(l) for l in
                                 (workdir / "metrics.jsonl").read_text().splitlines())
          if r["kind"] == "train"}


def test_order_table_rows_are_the_grain_batches(prepared):
  split = pipeline.load_split(prepared[1], "train", "crossentropy", for_eval=False)
  assert len(split) == 317  # so batch 19 of 16 runs across the first epoch boundary
  batches = iter(pipeline.train_dataset(split, global_batch=B, seed=SEED))
  table = memory.order_table(len(split), SEED, B, 0, 20)
  arrays = memory.decode(split)
  for t in range(20):
    batch, rows = next(batches), table[t]
    np.testing.assert_array_equal(batch["index"], t * B + np.arange(B))
    for key in ("image", "landmarks", "target"):
      np.testing.assert_array_equal(batch[key], arrays[key][rows], err_msg=f"{key} of batch {t}")
  # A table that starts mid-stream (a resume) holds the same rows; each epoch is a permutation.
  np.testing.assert_array_equal(memory.order_table(len(split), SEED, B, 17, 3), table[17:20])
  assert len(set(table[:19].ravel())) == 19 * B


@pytest.fixture(scope="module")
def resumed(prepared, tmp_path_factory):
  """The reference run's config from the memory source, cut at step 4 (its checkpoint) and
  resumed to step 6: (final result, workdir)."""
  workdir = tmp_path_factory.mktemp("memory") / "run"
  for steps in (4, 6):
    config = runs.config(prepared[0], *runs.REFERENCE_FLAGS, "--config.data.source=memory",
                         f"--config.num_train_steps={steps}")
    result = train.train_and_evaluate(config, str(workdir))
  return result, workdir


def test_memory_source_trains_and_resumes_like_the_grain_source(resumed, reference_run):
  result, workdir = resumed
  a, b = train_rows(reference_run), train_rows(workdir)  # the reference came from grain
  assert sorted(b) == [2, 4, 6]
  # The same examples and crops, before the cut and after the resume (whose data position is
  # the step alone): the same losses as grain's uninterrupted run, up to float rounding.
  for step in b:
    for key in ("loss", "ce", "accuracy", "mu/eyes"):
      assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-6), (step, key)
  eval_at_6 = [r for r in (json.loads(l) for l in (reference_run / "metrics.jsonl").read_text()
                           .splitlines()) if r["kind"] == "eval" and r["step"] == 6]
  assert result["accuracy"] == pytest.approx(eval_at_6[0]["accuracy"],
                                             abs=1.5 / result["num_examples"])
  assert result["step"] == 6
  assert not (workdir / "checkpoints" / "4" / "data").exists()  # its position is the step


def test_memory_source_needs_device_crops(prepared, tmp_path):
  config = runs.config(prepared[0], "--config.data.source=memory", "--config.data.crops_on=host")
  with pytest.raises(ValueError, match="needs config.data.crops_on='device', got 'host'"):
    train.train_and_evaluate(config, str(tmp_path))


def test_gpu_train_smoke_runs_the_paper_recipe_path(tmp_path, monkeypatch, capsys):
  """`bench/gpu.py --train --smoke`: prepare, bfloat16 training from device-resident data,
  evaluation and the throughput report, on the sample with the tests' tiny model."""
  runs.bench("gpu", "--train", "--smoke", f"--workdir={tmp_path / 'run'}",
             monkeypatch=monkeypatch)
  out = capsys.readouterr().out
  assert "source=memory" in out and "bfloat16" in out
  assert "trained to step 6 in" in out and "samples/s while training" in out
  assert "GFLOP per sample" in out
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["data"]["source"] == "memory" and saved["model"]["dtype"] == "bfloat16"
  assert json.loads((tmp_path / "run" / "eval" / "validation.json").read_text())[
      "checkpoint_step"] == 6
