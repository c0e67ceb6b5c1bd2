"""fer_jax: occlusion-robust facial expression recognition in JAX.

    python main.py --config=configs/demo.py --workdir=/tmp/fer_demo            # train + eval
    python main.py --config=configs/default.py --mode=prepare \
        --config.data.manual_dir=DIR --config.data.tfds_dir=OUT
    python main.py --config=configs/default.py --workdir=W --mode=eval [--checkpoint=best]
    python main.py --workdir=W --mode=predict --input=PATH --output=DIR
    python main.py --mode=predict --input=PATH --output=DIR     # the released model
    python main.py --mode=eval --config.data.manual_dir=DIR     # the released model on validation
    python main.py --config=configs/default.py --workdir=W --mode=crops --output=crops.png
    python main.py --config=configs/cpu.py --workdir=W --mode=occlusion [--checkpoint=best]
    python main.py --config=configs/studies/margin.py --workdir=W --mode=study
    python main.py --workdir=W --mode=export --output=model.onnx [--checkpoint=best]

Exit status (fer_jax/errors.py): 0 done (also after SIGTERM, with a checkpoint saved, or
prediction's outputs written), 1 the run failed (a non-finite loss; the last good checkpoint
stays), 2 bad input (flags, config, data, files, a run folder in use).
Every mode's logic lives in fer_jax/; this file parses flags and calls one function.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from fer_jax import cli
from fer_jax import errors
from fer_jax import modes

FLAGS = flags.FLAGS
# Found beside this file, so that main.py runs from any working directory.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")
_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                          "Training configuration.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics, evaluations.")
flags.DEFINE_enum("mode", "train", list(modes.MODES), "What to do.")
flags.DEFINE_string("checkpoint", "latest",
                    "eval/predict/occlusion/export: latest, best or a step number.")
flags.DEFINE_string("model", None,
                    "eval/predict/export without --workdir: a released model of fer_jax/weights/ "
                    "(default: the one fer_jax.release.DEFAULT_MODEL names).")
flags.DEFINE_string("input", None, "predict: an image, a folder of images, a video, a camera "
                    "index (0) or a stream address (rtsp://..., http://...).")
flags.DEFINE_string("output", None,
                    "predict: the output folder; crops: the PNG to write; export: the .onnx file.")


def fail(message: str, status: int = 2):
  print(f"fer_jax: error: {message}", file=sys.stderr)
  sys.exit(status)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected argument(s) {' '.join(argv[1:])}: every option is a --flag=value "
         f"(python main.py --help)")
  cli.setup_logging()
  cli.setup_compile_cache()
  try:
    cli.run(FLAGS.mode, _CONFIG.value, FLAGS.workdir, checkpoint=FLAGS.checkpoint,
            input_path=FLAGS.input, output=FLAGS.output, model=FLAGS.model,
            explicit=cli.explicit_config_keys(sys.argv[1:]))
  except errors.EXPECTED as e:
    logging.error("%s: %s", type(e).__name__, e)
    fail(str(e), errors.exit_status(e))


def parse_flags(argv):
  """Flag errors, unknown config keys and config files that fail to load exit with status 2
  and the culprit named."""
  config_file = cli.config_flag_value(argv[1:], default=DEFAULT_CONFIG)
  if not os.path.exists(config_file.split(":", 1)[0]):
    fail(cli.config_load_error(config_file, FileNotFoundError()))
  try:
    return FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    raised_in_config = cli.raised_in(e, config_file.split(":", 1)[0])
    if raised_in_config is not None:
      fail(cli.config_load_error(config_file, raised_in_config))
    if not isinstance(e, (flags.Error, AttributeError, KeyError, TypeError, ValueError)):
      raise
    unknown = cli.unknown_override(argv[1:], config_file)
    if unknown:
      fail(unknown)
    detail = str(e.args[0] if e.args else e)
    if len(detail) > 1 and detail[0] == detail[-1] and detail[0] in "'\"":
      detail = detail[1:-1]
    detail = detail.replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    fail(f"bad flag or config override: {detail}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
