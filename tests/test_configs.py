"""Every shipped config loads, builds a train state and documents its command."""

import importlib
import pathlib

import pytest

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
