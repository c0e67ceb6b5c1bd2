"""The bundled demo: trains a small model on the committed FERPlus sample, then evaluates it.

    python main.py --config=configs/demo.py --workdir=/tmp/fer_demo

Prepares tests/data/ferplus_sample (320 training and 96 validation faces of FERPlus) into
WORKDIR/tfds, trains a width-1/4 ResNet-18 over five 48 px branches for 20 epochs
(360 steps of 16 faces),
checkpoints, and writes WORKDIR/eval/validation.json with its confusion-matrix and
branch-weight plots, and WORKDIR/training_curves.png.

Measured on this machine (2 cores, 2026-12-01): 2 min 22 s end to end (preparing the sample with
dlib landmarks included), 21.8% validation accuracy on the sample's 87 majority-vote faces,
which are spread evenly over the eight classes (chance 12.5%; 26.4% at step 270). 291 faces
are far too few to learn expressions from scratch; the demo shows the whole path working end
to end, and `configs/cpu.py` is the config that learns.
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
  config.batch_size = 16
  config.eval_batch_size = 32
  config.num_epochs = 20
  config.optimizer.learning_rate = 0.03
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_epochs = 1
  config.log_every_steps = 36
  config.eval_every_steps = 90
  return config
