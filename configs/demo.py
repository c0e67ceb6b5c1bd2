"""The bundled demo: trains a small model on the committed FERPlus sample, then evaluates it.

    python main.py --config=configs/demo.py --workdir=/tmp/fer_demo

Prepares tests/data/ferplus_sample (320 training and 96 validation faces of FERPlus) into
WORKDIR/tfds, trains a width-1/4 ResNet-18 over five 48 px branches for 15 epochs,
checkpoints, and writes WORKDIR/eval/validation.json with its confusion-matrix and
branch-weight plots, and WORKDIR/training_curves.png.

Measured on this machine (2 cores): RUNTIME_TBD. Expected result: RESULT_TBD. The sample is
too small for a meaningful accuracy; the demo shows the whole path working end to end.
"""

import pathlib

from configs import default

SAMPLE = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "ferplus_sample"


def get_config():
  config = default.get_config()
  config.data.manual_dir = str(SAMPLE)
  config.data.tfds_dir = ""  # WORKDIR/tfds
  config.data.crops.size = 48
  config.model.depth = 18
  config.model.width = 0.25
  config.model.stem = "small_strided"
  config.model.attention_hidden = 32
  config.batch_size = 32
  config.eval_batch_size = 32
  config.num_epochs = 15
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_epochs = 1
  config.log_every_steps = 9
  config.eval_every_steps = 45
  return config
