"""fer_jax: occlusion-robust facial expression recognition in JAX.

    python main.py --config=configs/demo.py --workdir=/tmp/fer_demo            # train + eval
    python main.py --config=configs/default.py --mode=prepare \
        --config.data.manual_dir=DIR --config.data.tfds_dir=OUT
    python main.py --config=configs/default.py --workdir=W --mode=eval [--checkpoint=best]
    python main.py --workdir=W --mode=predict --input=PATH --output=DIR
    python main.py --config=configs/default.py --workdir=W --mode=crops --output=crops.png

Exit status: 0 done (also after SIGTERM, with a checkpoint saved), 1 the run failed (a
non-finite loss; the last good checkpoint stays), 2 bad input (flags, config, data, files).
Every mode's logic lives in fer_jax/; this file parses flags and calls one function.
"""

import sys

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
flags.DEFINE_string("output", None, "predict: the output folder; crops: the PNG to write.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.setup_logging()
  try:
    cli.run(FLAGS.mode, _CONFIG.value, FLAGS.workdir, checkpoint=FLAGS.checkpoint,
            input_path=FLAGS.input, output=FLAGS.output)
  except cli.EXPECTED_ERRORS as e:
    status = cli.exit_status(e)
    logging.error("%s: %s", type(e).__name__, e)
    print(f"fer_jax: error: {e}", file=sys.stderr)
    sys.exit(status)


def parse_flags(argv):
  """Flag errors, unknown config keys included, exit with status 2 and the culprit named."""
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    detail = str(e.args[0] if e.args else e)
    if len(detail) > 1 and detail[0] == detail[-1] and detail[0] in "'\"":
      detail = detail[1:-1]
    detail = detail.replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    print(f"fer_jax: error: bad flag or config override: {detail}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
