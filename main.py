"""fer_jax: occlusion-robust facial expression recognition in JAX.

    python main.py --config=configs/demo.py --workdir=/tmp/fer_demo            # train + eval
    python main.py --config=configs/default.py --mode=prepare \
        --config.data.manual_dir=DIR --config.data.tfds_dir=OUT
    python main.py --config=configs/default.py --workdir=W --mode=eval [--checkpoint=best]
    python main.py --workdir=W --mode=predict --input=PATH --output=DIR

Every mode's logic lives in fer_jax/; this file parses flags and calls one function.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from fer_jax import cli

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py",
                                          "Training configuration.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, evaluations.")
flags.DEFINE_enum("mode", "train", cli.MODES, "What to do.")
flags.DEFINE_string("checkpoint", "latest", "eval/predict: latest, best or a step number.")
flags.DEFINE_string("input", None, "predict: an image, a folder of images or a video.")
flags.DEFINE_string("output", None, "predict: the output folder.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  cli.run(FLAGS.mode, _CONFIG.value, FLAGS.workdir, checkpoint=FLAGS.checkpoint,
          input_path=FLAGS.input, output=FLAGS.output)


if __name__ == "__main__":
  app.run(main)
