"""The tests' study: the tests' tiny config, two margins by two seeds, two steps a run.

    python -m pytest -q tests/test_study.py

Not a research config: it checks the study machinery (runs, resumption, study.csv/md/png) in
seconds on two CPU cores. Tests set data.manual_dir and data.tfds_dir to the committed sample.
"""

from configs import studies
from configs import test


def get_config():
  config = test.get_config()
  config.num_train_steps = 2
  config.eval_every_steps = -1  # once per epoch (18 steps of the sample): only at the end
  config.checkpoint_every_steps = -1  # with every evaluation: only the final checkpoint
  config.study = studies.section(axes=(("loss.margin", (0.0, 0.05)),), seeds=(0, 1))
  return config
