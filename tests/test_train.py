"""Training, checkpoints and evaluation, end to end on the committed FERPlus sample."""

import functools
import hashlib
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import runs

from configs import test as test_config_module

from fer_jax import checkpoint as ckpt_lib
from fer_jax.data import crops, labels, pipeline
from fer_jax import errors
from fer_jax import inference
from fer_jax.modes import evaluate, train
from fer_jax import parallel, state as state_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def metrics_rows(workdir, kind="train"):
  rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if r["kind"] == kind]


def host_params(workdir, config, step="latest"):
  mgr = ckpt_lib.manager(str(workdir), read_only=True)
  s = ckpt_lib.candidate_steps(mgr, step)[0]
  mesh = parallel.make_mesh()
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=parallel.replicated(mesh)),
                        state_lib.abstract_train_state(config))
  return s, jax.device_get(ckpt_lib.restore_state(mgr, s, target))


def test_step_on_real_faces_lowers_the_loss(test_config, prepared):
  """Sixteen real faces, no augmentation: thirty SGD steps must fit them."""
  config = test_config
  config.data.crops.flip = False
  config.data.crops.max_rotation = config.data.crops.max_scale = config.data.crops.max_shift = 0.0
  config.optimizer.learning_rate = 0.05
  split = pipeline.load_split(prepared[1], "train", "majority", False)
  batch = next(iter(pipeline.train_dataset(split, global_batch=16, seed=1)))
  batch = {k: v for k, v in batch.items() if k in train.STEP_INPUTS}
  mesh = parallel.make_mesh()
  tx, lr = state_lib.make_optimizer(config, 10)
  state = train.init_state(config, mesh, tx)
  step = train.make_train_step(config, mesh, tx, lr)
  losses = []
  for _ in range(30):
    state, m = step(state, parallel.global_batch(batch, mesh))
    losses.append(float(m["loss"]))
  assert abs(losses[0] - (np.log(8) + config.loss.margin * 0.5)) < 0.1  # a zero classifier
  assert np.mean(losses[-3:]) < 0.6 * losses[0], losses


def test_training_run_checkpoints_evaluates_and_logs(test_config, tmp_path):
  """The full loop on the sample: metrics, checkpoints, evaluation, TensorBoard."""
  config = test_config
  config.num_train_steps = 8
  full = tmp_path / "full"
  result = train.train_and_evaluate(config, str(full))
  rows = metrics_rows(full)
  assert [r["step"] for r in rows] == [2, 4, 6, 8]
  for key in ("loss", "ce", "constraint", "hinge_active", "accuracy", "learning_rate",
              "grad_norm", "steps_per_second", "mu/eyes", "mu/occluded"):
    assert key in rows[0], key
  assert sorted(int(p.name) for p in (full / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6, 8]
  assert (full / "eval" / "validation.json").exists() and result["num_examples"] == 87
  assert (full / "tensorboard").exists()

  # Stopped (SIGTERM) and resumed, a run ends where this one does: tests/test_preemption.py.


def test_train_sizes_schedule():
  config = test_config_module.get_config()
  assert train.train_sizes(config, 10) == [(0, 24)]
  config.data.train_sizes = ((1.5, 16), (2, 20))
  sizes = train.train_sizes(config, 10)
  assert sizes == [(0, 16), (15, 20), (20, 24)]
  assert [train.size_at(sizes, s) for s in (0, 14, 15, 19, 20, 99)] == [16, 16, 20, 20, 24, 24]
  for bad in (((2, 16), (1, 20)), ((0, 16),), ((1, 2),), ((1,),)):
    config.data.train_sizes = bad
    with pytest.raises(ValueError, match="train_sizes"):
      train.train_sizes(config, 10)


def test_progressive_resizing_equals_training_in_stages(test_config, tmp_path):
  """Two steps at 16 px then two at 24 px, in one run, give the very parameters of a 16 px
  run of two steps resumed at 24 px for two more: the schedule changes the crops and nothing
  else."""
  config = test_config
  config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_train_steps = 4
  split = pipeline.load_split(pipeline.open_sources(config.data.tfds_dir, "template",
                                                    prepare_if_missing=False),
                              "train", config.data.label_mode, for_eval=False)
  spe = pipeline.steps_per_epoch(split, config.batch_size)
  config.data.train_sizes = ((2 / spe, 16),)
  assert train.train_sizes(config, spe) == [(0, 16), (2, 24)]
  train.train_and_evaluate(config, str(tmp_path / "progressive"))
  # Evaluated at the size it trains on: 16 px at step 2, the final 24 px at the end.
  assert [(r["step"], r["crop_size"]) for r in metrics_rows(tmp_path / "progressive", "eval")
          ] == [(2, 16), (4, 24)]

  staged = config.copy_and_resolve_references()
  staged.data.eval_split = ""
  staged.data.train_sizes = ()
  staged.data.crops.size = 16
  staged.num_train_steps = 2
  train.train_and_evaluate(staged, str(tmp_path / "staged"))
  staged.data.crops.size = 24
  staged.num_train_steps = 4
  train.train_and_evaluate(staged, str(tmp_path / "staged"), allow_changes=("data.crops.size",))
  step_a, a = host_params(tmp_path / "progressive", config)
  step_b, b = host_params(tmp_path / "staged", config)
  assert step_a == step_b == 4
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # (A run that ignored the schedule would train at 24 px throughout and differ from `staged`.)


def test_checkpoint_round_trips_exactly(test_config, tmp_path):
  config = test_config
  config.optimizer.ema_decay = 0.9  # the moving averages travel with the state
  mesh = parallel.make_mesh()
  tx, _ = state_lib.make_optimizer(config, 10)
  state = train.init_state(config, mesh, tx)
  # Move away from the initial values so that every leaf is distinct.
  state = state.replace(params=jax.tree.map(lambda p: p + 0.123, state.params), step=state.step + 7)
  mgr = ckpt_lib.manager(str(tmp_path))
  ckpt_lib.save(mgr, 7, state, None, config.to_json(), dict(accuracy=0.5))
  mgr.wait_until_finished()
  restored = ckpt_lib.restore_state(ckpt_lib.manager(str(tmp_path), read_only=True), 7,
                                    train.init_state(config, mesh, tx))
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert ckpt_lib.read_meta(mgr, 7)["metrics"] == {"accuracy": 0.5}


def test_ema_is_the_documented_moving_average_and_is_what_evaluation_sees(test_config,
                                                                         prepared):
  config = test_config
  config.optimizer.ema_decay = 0.2
  split = pipeline.load_split(prepared[1], "train", "majority", False)
  batch = next(iter(pipeline.train_dataset(split, global_batch=16, seed=1)))
  batch = parallel.global_batch({k: v for k, v in batch.items() if k in train.STEP_INPUTS},
                                parallel.make_mesh())
  mesh = parallel.make_mesh()
  tx, lr = state_lib.make_optimizer(config, 10)
  step = train.make_train_step(config, mesh, tx, lr)
  state = train.init_state(config, mesh, tx)
  host = [jax.device_get(state)]
  for _ in range(3):  # the step donates its input state: copy each one out first
    state = step(state, batch)[0]
    host.append(jax.device_get(state))
  # Decays: update 0: min(0.2, 1/10) = 0.1; update 1: min(0.2, 2/11) = 2/11; update 2: 0.2.
  expected = jax.tree.map(np.asarray, host[0].variables())
  for t, decay in enumerate((0.1, 2 / 11, 0.2)):
    expected = jax.tree.map(lambda e, v: decay * e + (1 - decay) * v, expected,
                            host[t + 1].variables())
  got = host[3].variables(ema=True)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  assert not np.allclose(host[3].params["classifier"]["kernel"],
                         got["params"]["classifier"]["kernel"])
  # Evaluation takes the averages when config.eval_ema, the raw weights otherwise.
  eval_split = pipeline.load_split(prepared[1], "validation", "majority", True)
  def probs(variables):
    return evaluate.evaluate_split(config, variables, eval_split, mesh)[0]["mean_branch_weights"]
  assert probs(state.variables(ema=True)) != probs(state.variables())
  config.optimizer.ema_decay = 0.0
  assert train.init_state(config, mesh, tx).ema is None


def test_flip_averaging_is_the_mean_over_the_mirrored_faces(test_config, prepared):
  """`eval_flip`: the probabilities are the mean of the face's and its mirror image's."""
  config = test_config
  config.data.crops.branches = ["face", "eyes", "nose", "mouth"]  # the occluder is not mirrored
  mesh = parallel.make_mesh()
  tx, _ = state_lib.make_optimizer(config, 10)
  state = jax.device_get(train.init_state(config, mesh, tx))
  # A classifier that is not zero, so that the probabilities depend on the image.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: p + 0.3 * rng.standard_normal(p.shape).astype(p.dtype),
                        state.params)
  params["classifier"]["kernel"] = 20 * params["classifier"]["kernel"]
  variables = {"params": params, "batch_stats": state.batch_stats}
  split = pipeline.load_split(prepared[1], "validation", "majority", True)
  exs = [split.source[int(i)] for i in split.indices[:8]]
  images = np.stack([pipeline.ferplus.decode_png(e["image"]) for e in exs])
  landmarks = np.stack([np.asarray(e["landmarks"], np.float32) for e in exs])
  batch = dict(image=images, landmarks=landmarks, index=np.arange(8, dtype=np.int32))
  mirrored = dict(image=np.ascontiguousarray(images[:, :, ::-1]),
                  landmarks=np.stack([np.asarray(crops.flip_landmarks(jnp.asarray(l), 48))
                                      for l in landmarks]), index=batch["index"])
  model = state_lib.build_model(config)
  step = lambda b, flip: jax.jit(functools.partial(
      inference.eval_step, model=model, crop_cfg=state_lib.crop_config(config),
      crops_on="device", occluder_seed=0, flip=flip))(variables, b)
  plain, other, averaged = step(batch, False), step(mirrored, False), step(batch, True)
  assert np.abs(plain["probs"] - other["probs"]).max() > 1e-3  # the mirror image differs
  np.testing.assert_allclose(averaged["probs"], (plain["probs"] + other["probs"]) / 2, atol=2e-5)
  np.testing.assert_allclose(averaged["mu"], (plain["mu"] + other["mu"]) / 2, atol=2e-5)


def test_eval_json_matches_a_direct_computation(test_config, tmp_path, prepared):
  config = test_config
  config.num_train_steps = 4
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  config.plots = True
  metrics = evaluate.evaluate(config, str(workdir), "latest")
  saved = json.loads((workdir / "eval" / "validation.json").read_text())
  assert set(saved) == {"accuracy", "per_class_accuracy", "confusion_matrix", "num_examples",
                        "mean_branch_weights", "hinge_active", "checkpoint_step", "calibration",
                        "split"}
  assert saved["split"] == "validation" and saved["calibration"]["temperature"] == 1.0
  assert sum(saved["calibration"]["reliability"]["count"]) == 87
  assert 0 <= saved["hinge_active"] <= 1
  assert saved["checkpoint_step"] == 4 and saved["num_examples"] == 87
  assert set(saved["mean_branch_weights"]) == set(config.data.crops.branches)
  assert np.array(saved["confusion_matrix"]).sum() == 87
  for png in ("validation_confusion.png", "validation_branch_weights.png",
              "validation_reliability.png"):
    assert (workdir / "eval" / png).stat().st_size > 1000

  # Directly: restore, cut each face's evaluation crops, run the model, compare to majority.
  _, state = host_params(workdir, config)
  split = pipeline.load_split(prepared[1], "validation", "majority", True)
  model = state_lib.build_model(config)
  cfg = crops.from_config(config.data.crops.to_dict())

  @jax.jit
  def predicted(img, landmarks, i):  # one face, exactly as the evaluation cuts and runs it
    key = jax.random.fold_in(jax.random.key(config.data.eval_occluder_seed), i)
    x = crops.five_crops(img.astype(jnp.float32) / 255.0, landmarks, key, cfg,
                         train=False)["crops"][None]
    logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x,
                         train=False)["logits"]
    return jnp.argmax(logits[0])

  correct = 0
  for i, label in zip(split.indices, split.labels):
    ex = split.source[int(i)]
    img = pipeline.ferplus.decode_png(ex["image"])
    correct += int(predicted(img, np.asarray(ex["landmarks"], np.float32), int(i)) == label)
  assert abs(saved["accuracy"] - correct / len(split)) < 1e-9
  assert metrics["accuracy"] == saved["accuracy"]


def test_eval_on_the_test_split(test_config, with_test_split, tmp_path):
  """`--config.data.eval_split=test` works when the manual dir has FER2013Test/."""
  manual, tfds_dir = with_test_split
  config = test_config
  config.data.manual_dir, config.data.tfds_dir = str(manual), tfds_dir
  config.data.landmarks = "template"
  config.num_train_steps = 2
  config.eval_at_end = False
  train.train_and_evaluate(config, str(tmp_path))
  config.data.eval_split = "test"
  metrics = evaluate.evaluate(config, str(tmp_path), "latest")
  saved = json.loads((tmp_path / "eval" / "test.json").read_text())
  import csv  # pylint: disable=g-import-not-at-top
  from fer_jax.data import labels  # pylint: disable=g-import-not-at-top
  rows = list(csv.reader(open(manual / "FER2013Test" / "label.csv")))
  majority = sum(labels.majority_label([int(v) for v in r[2:12]]) is not None for r in rows)
  assert saved["num_examples"] == metrics["num_examples"] == majority


def test_held_out_faces_depend_on_their_name_and_the_seed_alone():
  names = [f"fer{i:07d}.png" for i in range(4000)]
  held = pipeline.held_out(names, 0.1, 0)
  assert abs(held.sum() - 400) < 60  # binomial(4000, 0.1): 400 +- 19 (one sd)
  order = np.random.default_rng(0).permutation(len(names))
  np.testing.assert_array_equal(pipeline.held_out([names[i] for i in order], 0.1, 0), held[order])
  assert (pipeline.held_out(names, 0.1, 1) != held).sum() > 600  # another seed, another slice
  assert (pipeline.held_out(names, 0.2, 0) >= held).all()  # a larger slice contains the smaller
  assert not pipeline.held_out(names, 0.0, 0).any()


def test_holdout_is_a_confirmation_split_never_trained_on(test_config, prepared, tmp_path):
  """`data.holdout`: the training faces whose SHA-256("seed/name") falls below the fraction
  are left out of training and evaluated once at the end (eval/confirmation.json, a
  `confirmation` row); `--mode=eval` on `eval_split=confirmation` gives the same figure."""
  config = test_config
  config.data.holdout, config.data.holdout_seed = 0.25, 3
  config.num_train_steps = 2
  result = train.train_and_evaluate(config, str(tmp_path))
  source = prepared[1]["train"]
  names = [source[i]["name"] for i in range(len(source))]
  names = [n.decode() if isinstance(n, bytes) else n for n in names]
  held = np.array([int.from_bytes(hashlib.sha256(f"3/{n}".encode()).digest()[:8], "little")
                   < 0.25 * 2**64 for n in names])
  votes = pipeline.all_votes(source)
  trained, _ = labels.targets_for_split(votes, config.data.label_mode)
  majority, _ = labels.targets_for_split(votes, "majority")
  assert 40 < held.sum() < 120, held.sum()  # of 320
  assert result["train_examples"] == (trained & ~held).sum()
  saved = json.loads((tmp_path / "eval" / "confirmation.json").read_text())
  assert saved["num_examples"] == (majority & held).sum()
  assert result["confirmation_accuracy"] == saved["accuracy"]
  assert [r["step"] for r in metrics_rows(tmp_path, "confirmation")] == [2]
  assert json.loads((tmp_path / "eval" / "validation.json").read_text())["num_examples"] == 87
  # --mode=eval takes the slice from the run's own config, whatever the command's says.
  config.data.eval_split, config.data.holdout_seed = "confirmation", 99
  again = evaluate.evaluate(config, str(tmp_path), "latest")
  assert (again["accuracy"], again["num_examples"]) == (saved["accuracy"], saved["num_examples"])
  with pytest.raises(errors.ConfigError, match="never selected on during training"):
    train.train_and_evaluate(config, str(tmp_path / "selecting"))


def test_steps_over_four_devices_equal_one_device(prepared):
  out = subprocess.run([sys.executable, str(ROOT / "tests" / "multidevice_step.py"), prepared[0]],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=runs.env())
  assert out.returncode == 0, out.stderr[-3000:]
  diffs = json.loads(out.stdout.strip().splitlines()[-1])
  for run in ("memory4",):  # 4 devices gathering their own rows equal 1 device fed them
    assert diffs[f"{run}_params"] < 1e-5 * diffs["param_scale"], (run, diffs)
    assert diffs[f"{run}_batch_stats"] < 1e-5, (run, diffs)
  assert max(diffs["loss"]) - min(diffs["loss"]) < 1e-5, diffs


@pytest.mark.parametrize("schedule, expected", [
    # 10 steps an epoch, 2 of warmup (0.2 epochs) from 0 to the base rate 0.1, 40 steps in all.
    ("constant", {0: 0.0, 1: 0.05, 2: 0.1, 12: 0.1, 39: 0.1}),
    ("paper_literal", {2: 0.1, 11: 0.1, 12: 0.01, 22: 0.001}),  # x0.1 an epoch after warmup
    ("step", {2: 0.1, 21: 0.1, 22: 0.05, 42: 0.025}),  # x0.5 every 2 epochs
    ("cosine", {2: 0.1, 21: 0.05, 40: 0.0}),  # half way through the 38 steps after warmup
])
def test_learning_rate_schedules_by_name(schedule, expected):
  config = test_config_module.get_config()
  config.num_train_steps = 40
  config.optimizer.update(schedule=schedule, learning_rate=0.1, warmup_epochs=0.2,
                          decay_epochs=2.0, decay_factor=0.5)
  lr = state_lib.learning_rate_schedule(config, steps_per_epoch=10)
  for step, value in expected.items():
    assert float(lr(step)) == pytest.approx(value, abs=1e-7), (schedule, step)
