"""`--mode=export`: the ONNX model computes what evaluation computes, for any batch size."""

import json

import flax
import jax
import numpy as np
import pytest

from fer_jax import checkpoint as ckpt_lib
from fer_jax import cli, state as state_lib
from fer_jax.data import labels
from fer_jax import errors
from fer_jax import inference
from fer_jax.modes import export

STEP = 5


def moved(variables, key):
  """Every weight and BatchNorm statistic moved off its initial value (the classifier starts at
  zero, which would make every probability 1/8), the variances kept positive."""
  flat = flax.traverse_util.flatten_dict(variables)
  keys = dict(zip(flat, jax.random.split(key, len(flat))))
  out = {}
  for path, v in flat.items():
    noise = 0.3 * jax.random.normal(keys[path], v.shape, v.dtype)
    out[path] = v * (1 + jax.numpy.abs(noise)) if path[-1] == "var" else v + noise
  return flax.traverse_util.unflatten_dict(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A checkpoint of configs/test.py's model with moved weights (nothing trained): its workdir,
  config and variables. `eval_flip` is on, so the graph's mirror average is checked too, and
  the part branches run at 12 px (`model.part_size`, as configs/cpu.py's at 16), so the
  in-model resize is too."""
  from configs import test as test_config_module  # pylint: disable=g-import-not-at-top
  config = test_config_module.get_config()
  config.eval_flip = True
  config.model.stem = "imagenet"  # the default stem, with its max pool
  config.model.part_size = 12
  model = state_lib.build_model(config)
  tx, _ = state_lib.make_optimizer(config, 1)
  # Jitted: eager, the init and the noise dispatch op by op (10 s of the module's time).
  state = jax.jit(lambda k: state_lib.create_train_state(config, model, tx, k))(jax.random.key(0))
  variables = jax.jit(moved)(state.variables(), jax.random.key(1))
  state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
  workdir = tmp_path_factory.mktemp("export") / "run"
  mgr = ckpt_lib.manager(str(workdir))
  ckpt_lib.save(mgr, STEP, state, None, config.to_json())
  mgr.wait_until_finished()
  return workdir, config, variables


def default_config():
  from configs import default  # pylint: disable=g-import-not-at-top
  return default.get_config()


def test_onnx_matches_jax_on_random_crops_at_two_batch_sizes(run, tmp_path):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  workdir, config, variables = run
  out = tmp_path / "models" / "model.onnx"  # the folder is created
  info = cli.run("export", default_config(), str(workdir), output=str(out))
  assert info == json.loads(export.contract_path(out).read_text())
  assert (out.parent / "model.onnx.json").exists()
  nb, size = len(config.data.crops.branches), config.data.crops.size
  assert info["inputs"] == {"crops": dict(shape=["N", nb, size, size, 1], dtype="float32")}
  assert info["class_names"] == list(labels.CLASS_NAMES)
  assert info["branches"] == list(config.data.crops.branches) and info["size"] == 24
  assert info["checkpoint_step"] == STEP and info["eval_flip"]

  session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
  assert [i.name for i in session.get_inputs()] == ["crops"]
  assert [o.name for o in session.get_outputs()] == ["probs", "mu"]
  # The reference: evaluation's own step, with the run's own (CPU) lowering.
  reference = jax.jit(lambda x: inference.eval_step(
      variables, {"crops": x}, model=state_lib.build_model(config), crop_cfg=None,
      crops_on="host", occluder_seed=0, flip=True))
  rng = np.random.default_rng(0)
  for n in (1, 3):
    crops = rng.standard_normal((n, nb, size, size, 1)).astype(np.float32)
    probs, mu = session.run(None, {"crops": crops})
    expected = reference(crops)
    assert probs.shape == (n, labels.NUM_CLASSES) and mu.shape == (n, nb)
    np.testing.assert_allclose(probs, expected["probs"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(mu, expected["mu"], rtol=0, atol=1e-4)
    assert np.ptp(probs) > 0.05  # a real classifier, not the zero-initialised one


def test_output_must_be_a_onnx_file(run, tmp_path):
  with pytest.raises(errors.UsageError, match=r"--output=.*model\.pb must end in \.onnx"):
    cli.run("export", default_config(), str(run[0]), output=str(tmp_path / "model.pb"))
  with pytest.raises(errors.UsageError, match="needs --output"):
    cli.run("export", default_config(), str(run[0]))
  assert not list(tmp_path.iterdir())


def test_a_workdir_without_checkpoints_is_refused(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoints in .*: train first"):
    cli.run("export", default_config(), str(tmp_path / "empty"),
            output=str(tmp_path / "model.onnx"))
  with pytest.raises(FileNotFoundError, match="--workdir=.*missing does not exist"):
    cli.run("export", default_config(), str(tmp_path / "missing"),
            output=str(tmp_path / "model.onnx"))
  assert not (tmp_path / "model.onnx").exists()
