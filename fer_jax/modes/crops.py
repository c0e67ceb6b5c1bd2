"""`--mode=crops`: a PNG grid of faces with their landmarks, branch boxes and crops, so that a
researcher sees what each branch sees (training augmentation, and the evaluation view)."""

from __future__ import annotations

from absl import logging
import jax
import ml_collections
import numpy as np

from fer_jax.data import crops as crops_lib
from fer_jax.data import ferplus
from fer_jax.data import labels as labels_lib
from fer_jax.data import pipeline
from fer_jax.modes import Args
from fer_jax import plots
from fer_jax import state as state_lib


def crops_preview(config: ml_collections.ConfigDict, workdir: str | None, output: str,
                  num_faces: int = 6, split: str | None = None) -> str:
  """Writes the grid to `output`: each face twice, as evaluation and as one training draw."""
  tfds_dir = pipeline.resolve_tfds_dir(config.data.tfds_dir, workdir or ".")
  sources = pipeline.open_sources(tfds_dir, config.data.landmarks, config.data.manual_dir)
  data = pipeline.load_split(sources, split or config.data.train_split, config.data.label_mode,
                             for_eval=True)
  cfg = state_lib.crop_config(config)
  cut = jax.jit(crops_lib.five_crops, static_argnums=(3, 4))
  rows = []
  for j in range(min(num_faces, len(data))):
    idx = int(data.indices[j])
    ex = data.source[idx]
    image = ferplus.decode_png(ex["image"])
    name = ex["name"].decode() if isinstance(ex["name"], bytes) else str(ex["name"])
    label = labels_lib.CLASS_NAMES[int(data.labels[j])]
    for train in (False, True):
      seed = config.seed if train else config.data.eval_occluder_seed
      out = jax.device_get(cut(image, np.asarray(ex["landmarks"]),
                               jax.random.fold_in(jax.random.key(seed), idx), cfg, train))
      view = _view_image(image, out["affine"]) if train else image
      rows.append(dict(image=view, landmarks=out["landmarks"], boxes=out["boxes"],
                       occluder=out["occluder"], crops=out["crops"],
                       caption=f"{name} {label} ({'train draw' if train else 'eval'})"))
  return plots.crops_grid(rows, cfg.branches, output,
                          title=f"{cfg.size} px crops; landmarks: {config.data.landmarks}")


def _view_image(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
  """The face as a training view sees it: `image` warped by the view's affine map."""
  import cv2  # pylint: disable=g-import-not-at-top
  size = image.shape[0]
  warped = cv2.warpAffine(image, np.asarray(affine, np.float32), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
  return warped[..., None] if warped.ndim == 2 else warped


def main(args: Args) -> str:
  """`--mode=crops`."""
  path = crops_preview(args.config, args.workdir, args.output)
  logging.info("wrote %s", path)
  return path
