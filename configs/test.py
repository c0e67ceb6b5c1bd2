"""The tests' config: a ResNet-10 of width 1/8 over five 24 px branches, a few steps.

    python -m pytest -q tests

Not a research config: small enough that a train step compiles and runs in seconds on two
CPU cores. It reads the committed sample (tests/data/ferplus_sample), prepared into
WORKDIR/tfds on first use, so that `python main.py --config=configs/test.py --workdir=W` runs
as it is; the tests point data.tfds_dir at a sample they prepare once per session.
"""

import pathlib

from configs import default

SAMPLE = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "ferplus_sample"


def get_config():
  config = default.get_config()
  config.data.manual_dir = str(SAMPLE)
  config.data.tfds_dir = ""
  config.data.landmarks = "template"  # dlib's fit is tested on its own (tests/test_landmarks.py)
  config.data.crops.size = 24
  config.model.depth = 10
  config.model.width = 0.125
  config.model.stem = "small_strided"
  config.model.attention_hidden = 8
  # XLA's own convolutions compile fastest, and compile time is most of a test's cost; every
  # lowering is checked against them in tests/test_resnet.py.
  config.lowering.conv_impl = "xla"
  config.batch_size = 16
  config.eval_batch_size = 32
  config.num_train_steps = 6
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = "constant"
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.plots = False
  config.occlusion.fit_cache = ""  # nothing written outside a test's folders
  return config
