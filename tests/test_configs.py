"""Every shipped config loads, builds a train state and documents its command."""

import importlib
import pathlib

import pytest

from configs import test as test_config
from fer_jax import errors
from fer_jax import overrides
from fer_jax import state as state_lib

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
NAMES = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem != "__init__")


def test_every_config_is_listed():
  assert {"default", "paper", "cpu", "demo", "test"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_builds_and_documents_its_command(name):
  module = importlib.import_module(f"configs.{name}")
  doc = module.__doc__ or ""
  command = "python -m pytest" if name == "test" else f"main.py --config=configs/{name}.py"
  assert command in doc, f"configs/{name}.py's docstring does not give its command"
  config = module.get_config()
  # Shapes only (jax.eval_shape): a misspelt value anywhere in the model (a conv_impl, a stem)
  # raises here, naming the allowed values, not an hour into a run.
  abstract = state_lib.abstract_train_state(config)
  backbone = abstract.params["backbone"]
  assert state_lib.count_params(abstract.params) > state_lib.count_params(backbone) > 0


def test_override_strings_are_read_as_their_keys_types():
  """`overrides.apply_flags`, the one parser of `--config.KEY=VALUE` strings for scripts and
  tests: bools from true/t/1 or false/f/0 in any case (not any string but "True"), literals for
  tuples, the key's own type otherwise; a typo or a value of the wrong kind is named."""
  config = overrides.apply_flags(test_config.get_config(), [
      "--config.eval_flip=TRUE", "--config.batch_size=32", "--config.optimizer.learning_rate=0.5",
      "--config.data.crops.branches=('face', 'eyes')"])
  assert config.eval_flip is True and config.batch_size == 32
  assert config.optimizer.learning_rate == 0.5 and config.data.crops.branches == ("face", "eyes")
  assert overrides.apply_flags(config, ["--config.eval_flip=0"]).eval_flip is False
  assert overrides.apply_flags(config, ["--config.eval_flip=t"]).eval_flip is True
  with pytest.raises(errors.ConfigError, match=r"config.eval_flip='yes': not a bool"):
    overrides.apply_flags(config, ["--config.eval_flip=yes"])
  with pytest.raises(errors.ConfigError, match=r"config.batch_size='16.5'"):
    overrides.apply_flags(config, ["--config.batch_size=16.5"])
  with pytest.raises(errors.ConfigError, match=r"config.optimizer has no 'learning_rat' \(did "
                                               r"you mean 'learning_rate'\?\)"):
    overrides.apply_flags(config, ["--config.optimizer.learning_rat=0.1"])
