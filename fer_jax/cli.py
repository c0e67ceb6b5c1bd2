"""What each `--mode` of main.py does, with the checks that make bad invocations fail fast."""

from __future__ import annotations

import pathlib

from absl import logging
import ml_collections

MODES = ("prepare", "train", "eval", "predict", "crops")

# Errors that name their culprit well enough to be shown without a traceback.
EXPECTED_ERRORS = (ValueError, KeyError, FileNotFoundError, RuntimeError)


def exit_status(error: BaseException) -> int:
  """1 for a run that failed on its own (non-finite loss), 2 for bad input."""
  from fer_jax import train  # pylint: disable=g-import-not-at-top
  return 1 if isinstance(error, train.NonFiniteLossError) else 2


class _QuietThirdParty(logging.logging.Filter):
  """Keeps INFO lines from fer_jax and drops the library chatter (Orbax, TFDS, grain)."""

  def filter(self, record):
    if record.levelno >= logging.logging.WARNING:
      return True
    return "fer_jax" in record.pathname or record.pathname.endswith("main.py")


def setup_logging() -> None:
  logging.set_verbosity(logging.INFO)
  quiet = _QuietThirdParty()
  for handler in logging.logging.getLogger().handlers + [logging.get_absl_handler().python_handler]:
    handler.addFilter(quiet)


class UsageError(ValueError):
  """A flag combination that cannot work; the message says which flag to set."""


def _need(value, flag: str, mode: str):
  if not value:
    raise UsageError(f"--mode={mode} needs {flag}")
  return value


def run(mode: str, config: ml_collections.ConfigDict, workdir: str | None, *,
        checkpoint: str = "latest", input_path: str | None = None, output: str | None = None):
  if mode == "prepare":
    from fer_jax.data import ferplus, pipeline  # pylint: disable=g-import-not-at-top
    manual = _need(config.data.manual_dir, "--config.data.manual_dir", mode)
    tfds_dir = config.data.tfds_dir or (workdir and pipeline.resolve_tfds_dir("", workdir))
    tfds_dir = _need(tfds_dir, "--config.data.tfds_dir (or --workdir)", mode)
    sizes = ferplus.prepare(manual, tfds_dir, config.data.landmarks)
    for split, s in sizes.items():
      print(f"{split}: {s['examples']:,} examples, {s['majority']:,} kept by majority vote")
    return sizes
  if mode != "crops":
    workdir = _need(workdir, "--workdir", mode)
  from fer_jax import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize(config.multihost)
  if mode == "crops":
    from fer_jax import preview  # pylint: disable=g-import-not-at-top
    path = preview.crops_preview(config, workdir, _need(output, "--output", mode))
    logging.info("wrote %s", path)
    return path
  if mode == "train":
    from fer_jax import train  # pylint: disable=g-import-not-at-top
    return train.train_and_evaluate(config, workdir)
  if mode == "eval":
    from fer_jax import evaluate  # pylint: disable=g-import-not-at-top
    return evaluate.evaluate(config, workdir, checkpoint)
  if mode == "predict":
    from fer_jax import predict  # pylint: disable=g-import-not-at-top
    return predict.predict(workdir, _need(input_path, "--input", mode),
                           _need(output, "--output", mode), checkpoint=checkpoint,
                           overrides=config)
  raise UsageError(f"unknown --mode={mode}; expected one of {MODES}")
