"""Ablations are config values: branches and fusion from the command line, the plain one-branch
baseline, and runs without the constraint term."""

import json

import numpy as np
import pytest

import runs

from fer_jax.modes import train
from fer_jax import state as state_lib


def test_constraint_term_follows_the_config(test_config):
  config = test_config
  assert state_lib.constraint_indices(config) == (1, 4)  # eyes over occluded
  config.loss.constraint_weight = 0.0
  assert state_lib.constraint_indices(config) is None
  config.loss.constraint_weight = 1.0
  config.model.fusion = "none"  # no branch weights to constrain
  assert state_lib.constraint_indices(config) is None
  config.model.fusion = "weighted_sum"
  config.data.crops.branches = ("face", "eyes", "mouth")
  with pytest.raises(ValueError, match=r"\('eyes', 'occluded'\).*'occluded'.*\('face', 'eyes', "
                                       r"'mouth'\).*constraint_weight=0"):
    state_lib.constraint_indices(config)
  config.loss.constraint_pair = ()
  assert state_lib.constraint_indices(config) is None


def test_three_branches_without_attention_or_constraint_from_flags(prepared, tmp_path):
  """`--config.data.crops.branches="('face','eyes','mouth')" --config.model.fusion=none`
  (flags read as main.py reads them) trains three branches with no constraint term."""
  config = runs.config(prepared[0], "--config.data.crops.branches=('face','eyes','mouth')",
                       "--config.model.fusion=none", "--config.num_train_steps=2",
                       "--config.log_every_steps=1", "--config.eval_every_steps=-1")
  assert config.data.crops.branches == ("face", "eyes", "mouth")
  train.train_and_evaluate(config, str(tmp_path))
  rows = runs.metrics(tmp_path)
  assert sorted(rows) == [1, 2]
  for row in rows.values():
    assert row["constraint"] == 0.0 and "hinge_active" not in row
    np.testing.assert_allclose(row["loss"], row["ce"], rtol=1e-6)
    assert {k for k in row if k.startswith("mu/")} == {"mu/face", "mu/eyes", "mu/mouth"}
  saved = json.loads((tmp_path / "eval" / "validation.json").read_text())
  assert saved["hinge_active"] is None and list(saved["mean_branch_weights"]) == [
      "face", "eyes", "mouth"]
  params = state_lib.abstract_train_state(config).params
  assert set(params) == {"backbone", "classifier"}


# The acceptance command itself, the plain one-branch baseline through main.py, is README.md's
# ("Research"): tests/test_readme.py runs it verbatim and checks its evaluation.
