"""`--mode=prepare`: FERPlus' files (data.manual_dir) -> the TFDS dataset the other modes read
(data.tfds_dir, or WORKDIR/tfds), with each face's 68 landmarks."""

from __future__ import annotations

import pathlib

from fer_jax.data import ferplus
from fer_jax.data import pipeline
from fer_jax import errors
from fer_jax import files
from fer_jax.modes import Args


def main(args: Args) -> dict[str, dict[str, int]]:
  config = args.config
  manual = errors.need(config.data.manual_dir, "--config.data.manual_dir", "prepare")
  tfds_dir = config.data.tfds_dir or (
      args.workdir and pipeline.resolve_tfds_dir("", args.workdir))
  tfds_dir = errors.need(tfds_dir, "--config.data.tfds_dir (or --workdir)", "prepare")
  files.check_dir(pathlib.Path(tfds_dir), "--config.data.tfds_dir", create=True)
  sizes = ferplus.prepare(manual, tfds_dir, config.data.landmarks)
  for split, s in sizes.items():
    print(f"{split}: {s['examples']:,} examples, {s['majority']:,} kept by majority vote")
  return sizes
