"""`--mode=occlusion`: a trained run's accuracy and branch weights under a fixed catalogue of
occluders, painted on the face image before its crops are cut (as a real hand or book would
hide part of the face, so every branch that sees that part sees the occluder).

The catalogue, `OCCLUDERS` (in this order; a new occluder is one more entry):

- `none`: the face as it is (the accuracy of `--mode=eval`);
- `lower_half`: everything below max(F/2, y of the nose bridge), the band the training occluder
  is drawn in (`crops.lower_band_top`);
- `upper_half`: everything above that line (the complement of `lower_half`);
- `eyes_band`: the full width, over the height of the `eyes` region box (brows and eyes);
- `mouth`, `nose`: the region boxes of the mouth and nose landmarks;
- `left_half`, `right_half`: everything left (right) of the nose bridge's x (the image's left,
  the subject's right, for `left_half`);
- `random_10` ... `random_50`: one pixel-aligned w x h rectangle covering 10, 20, 30, 40 or 50%
  of the face (w * h within w / 2 pixels of that fraction of F^2), its width / height
  log-uniform in `RANDOM_ASPECT`, at a uniform position inside the face;
- `hand`: an ellipse centred on the mouth box, its semi-axes 1.5 x the box's half-width and
  1.25 x its half-height (`HAND_SCALE`): a hand over the mouth.

Geometry is `crops.py`'s: pixel-index coordinates (pixel (i, j) has its centre at x=j, y=i), and a
pixel is covered when its centre lies in [x0, x1) x [y0, y1). Region boxes are
`crops.region_box` with the default `CropConfig`'s pad and min_box (`PAD`, `MIN_BOX`), not the
run's: the catalogue is one fixed test for every run.

Fill: one uniform grey level in [0, 1] (0-255 for integer images) per face and occluder, drawn
from the occluder's key, as the training occluder's default `occluder_fill='uniform'`.

Randomness: the key of occluder `name` on the example at TFDS position `index` is
`fold_in(fold_in(key(data.eval_occluder_seed), index), salt(name))`, `salt` a crc32 of the name,
so the occluded faces are a pure function of (seed, index, name), and adding an occluder changes
no other's draws.

Landmarks (`config.occlusion.landmarks`, `PROTOCOLS`): the part crops (eyes, nose, mouth) are
cut from 68 landmarks. Under `refit` (the default) they are fitted again on the occluded face by
the fitter prepare used (`data.landmarks`: dlib, the template where its fit is implausible,
`landmarks.AlignedFitter`), as a deployed model, which fits landmarks on the face the camera
sees, meets occlusion; the fraction of faces whose fit fell back to the template is reported per
occluder (`refit_failed`). Under `oracle` they are the unoccluded face's (the stored ones): an
upper bound that flatters the arms with part branches. `none` is the same in both (prepare
fitted the stored landmarks with that same fitter). Refit paints the occluder on the host
(`occlude_batch`, the same pixels as the device path) and fits each face there.

`evaluate` restores a checkpoint as `--mode=eval` does, runs one jitted step per batch (under
`oracle`, with the occluder's position as a traced argument: one compile for the whole
catalogue, `lax.switch`), and writes `WORKDIR/eval/occlusion_<split>.json` (refit) or
`occlusion_<split>_oracle.json` (`split`, `checkpoint_step`, `eval_occluder_seed`, `landmarks`
and `occluders`: name -> accuracy, per_class_accuracy, confusion_matrix, num_examples,
mean_branch_weights, as `--mode=eval`'s JSON, and `refit_failed`) and the matching PNG.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable
import zlib

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fer_jax.data import crops as crops_lib
from fer_jax.data import ferplus
from fer_jax.data import fit_cache
from fer_jax.data import landmarks as landmarks_lib
from fer_jax.data import pipeline
from fer_jax import files
from fer_jax import inference
from fer_jax.modes import Args
from fer_jax.modes import evaluate as eval_lib
from fer_jax import parallel
from fer_jax import plots
from fer_jax import state as state_lib

# (image [F, F, C] uint8 or float, landmarks [68, 2], key) -> the occluded image (same dtype).
Occluder = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

PAD = crops_lib.CropConfig.pad
MIN_BOX = crops_lib.CropConfig.min_box
RANDOM_ASPECT = (0.5, 2.0)  # width / height of the random rectangles, log-uniform
HAND_SCALE = (1.5, 1.25)  # the hand ellipse's semi-axes / the mouth box's half-sides (x, y)


# --------------------------------------------------------------------------------------------
# Masks: (landmarks [68, 2], key, face size F) -> bool [F, F].

def box_mask(box: jax.Array, face_size: int) -> jax.Array:
  """The pixels whose centres lie in [x0, x1) x [y0, y1) (as `crops.paint_occluder`)."""
  c = jnp.arange(face_size, dtype=jnp.float32)
  inside_x = (c >= box[0]) & (c < box[2])
  inside_y = (c >= box[1]) & (c < box[3])
  return inside_y[:, None] & inside_x[None, :]


def _region(landmarks: jax.Array, name: str, face_size: int) -> jax.Array:
  return crops_lib.region_box(landmarks, crops_lib.REGIONS[name], face_size, PAD, MIN_BOX)


def _rows(y0, y1, face_size: int) -> jax.Array:
  lo, hi = -0.5, face_size - 0.5
  return box_mask(jnp.stack([jnp.float32(lo), y0, jnp.float32(hi), y1]), face_size)


def _columns(x0, x1, face_size: int) -> jax.Array:
  lo, hi = -0.5, face_size - 0.5
  return box_mask(jnp.stack([x0, jnp.float32(lo), x1, jnp.float32(hi)]), face_size)


def _midline(landmarks: jax.Array, face_size: int) -> jax.Array:
  return jnp.clip(landmarks[crops_lib.NOSE_BRIDGE, 0], -0.5, face_size - 0.5)


def lower_half_mask(landmarks, key, face_size):
  del key
  top = crops_lib.lower_band_top(landmarks, face_size)
  return _rows(top, jnp.float32(face_size - 0.5), face_size)


def upper_half_mask(landmarks, key, face_size):
  del key
  top = crops_lib.lower_band_top(landmarks, face_size)
  return _rows(jnp.float32(-0.5), top, face_size)


def eyes_band_mask(landmarks, key, face_size):
  del key
  box = _region(landmarks, "eyes", face_size)
  return _rows(box[1], box[3], face_size)


def region_mask(landmarks, key, face_size, *, region: str):
  del key
  return box_mask(_region(landmarks, region, face_size), face_size)


def left_half_mask(landmarks, key, face_size):
  del key
  return _columns(jnp.float32(-0.5), _midline(landmarks, face_size), face_size)


def right_half_mask(landmarks, key, face_size):
  del key
  return _columns(_midline(landmarks, face_size), jnp.float32(face_size - 0.5), face_size)


def random_rectangle_mask(landmarks, key, face_size, *, fraction: float):
  """A pixel-aligned w x h rectangle with w * h within w / 2 of `fraction` * F^2."""
  del landmarks
  k_aspect, k_x, k_y = jax.random.split(key, 3)
  log_lo, log_hi = np.log(RANDOM_ASPECT[0]), np.log(RANDOM_ASPECT[1])
  aspect = jnp.exp(jax.random.uniform(k_aspect, (), minval=log_lo, maxval=log_hi))
  area = fraction * face_size * face_size
  w = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, face_size)
  h = jnp.clip(jnp.round(area / w), 1, face_size)
  x0 = jnp.floor(jax.random.uniform(k_x, ()) * (face_size - w + 1))
  y0 = jnp.floor(jax.random.uniform(k_y, ()) * (face_size - h + 1))
  return box_mask(jnp.stack([x0, y0, x0 + w, y0 + h]) - 0.5, face_size)


def hand_mask(landmarks, key, face_size):
  """An ellipse centred on the mouth box, semi-axes `HAND_SCALE` x the box's half-sides."""
  del key
  box = _region(landmarks, "mouth", face_size)
  centre = (box[:2] + box[2:]) / 2
  semi = (box[2:] - box[:2]) / 2 * jnp.asarray(HAND_SCALE, jnp.float32)
  c = jnp.arange(face_size, dtype=jnp.float32)
  dx = (c[None, :] - centre[0]) / semi[0]
  dy = (c[:, None] - centre[1]) / semi[1]
  return dx * dx + dy * dy <= 1


# --------------------------------------------------------------------------------------------
# Occluders: (image [F, F, C], landmarks [68, 2], key) -> the occluded image.

def paint(image: jax.Array, mask: jax.Array, key: jax.Array) -> jax.Array:
  """`image` [F, F, C] with the `mask` [F, F] pixels set to one uniform grey drawn from `key`
  (in [0, 1] for a float image, [0, 255] for an integer one); same dtype."""
  grey = jax.random.uniform(key, ())
  if jnp.issubdtype(image.dtype, jnp.integer):
    fill = jnp.round(grey * 255).astype(image.dtype)
  else:
    fill = grey.astype(image.dtype)
  return jnp.where(mask[..., None], fill, image)


def filled(mask_fn: Callable[..., jax.Array], **kwargs) -> Occluder:
  """The occluder that paints `mask_fn(landmarks, key, F, **kwargs)` one grey level."""

  def occluder(image, landmarks, key):
    k_shape, k_fill = jax.random.split(key)
    mask = mask_fn(jnp.asarray(landmarks, jnp.float32), k_shape, image.shape[0], **kwargs)
    return paint(image, mask, k_fill)

  return occluder


def no_occluder(image, landmarks, key):
  del landmarks, key
  return image


OCCLUDERS: dict[str, Occluder] = {
    "none": no_occluder,
    "lower_half": filled(lower_half_mask),
    "upper_half": filled(upper_half_mask),
    "eyes_band": filled(eyes_band_mask),
    "mouth": filled(region_mask, region="mouth"),
    "nose": filled(region_mask, region="nose"),
    "left_half": filled(left_half_mask),
    "right_half": filled(right_half_mask),
    **{f"random_{p}": filled(random_rectangle_mask, fraction=p / 100)
       for p in (10, 20, 30, 40, 50)},
    "hand": filled(hand_mask),
}


def salt(name: str) -> int:
  """The number folded into an example's key for occluder `name` (stable across runs)."""
  return zlib.crc32(name.encode()) & 0x7FFFFFFF


def occlude(image: jax.Array, landmarks: jax.Array, key: jax.Array,
            occluder: int | jax.Array) -> jax.Array:
  """One face [F, F, C] under the catalogue's occluder number `occluder` (may be traced).

  `key` is the example's key, `fold_in(key(seed), index)`; each occluder folds in its `salt`.
  """
  if image.ndim != 3 or image.shape[0] != image.shape[1]:
    raise ValueError(f"occlude needs one square face image [F, F, C], got {image.shape}")

  def branch(fn, s):
    return lambda im, lm, k: fn(im, lm, jax.random.fold_in(k, s))

  branches = [branch(fn, salt(name)) for name, fn in OCCLUDERS.items()]
  return lax.switch(occluder, branches, image, landmarks, key)


def occlude_all(image: jax.Array, landmarks: jax.Array, key: jax.Array) -> jax.Array:
  """One face under every occluder of the catalogue: [len(OCCLUDERS), F, F, C]."""
  return jax.vmap(occlude, in_axes=(None, None, None, 0))(
      image, landmarks, key, jnp.arange(len(OCCLUDERS)))


# --------------------------------------------------------------------------------------------
# Evaluation.

def check_config(config: ml_collections.ConfigDict) -> None:
  if config.data.crops_on != "device":
    raise ValueError(
        f"--mode=occlusion paints the occluders on the face image before the crops are cut, so "
        f"it needs config.data.crops_on='device', got {config.data.crops_on!r} (set "
        f"--config.data.crops_on=device; the crops and the results are the same)")


def occlusion_step(variables, batch, occluder, *, model, crop_cfg, occluder_seed: int,
                   flip: bool = False, temperature: float = 1.0):
  """Per-device forward pass of `inference.eval_step` on faces under occluder number
  `occluder` (a traced scalar): class probabilities and branch weights of each example."""
  keys = crops_lib.example_keys(jax.random.key(occluder_seed), batch["index"])
  images = jax.vmap(occlude, in_axes=(0, 0, 0, None))(
      batch["image"], batch["landmarks"], keys, occluder)
  return inference.eval_step(variables, {**batch, "image": images}, model=model,
                            crop_cfg=crop_cfg, crops_on="device", occluder_seed=occluder_seed,
                            flip=flip, temperature=temperature)


def make_occlusion_step(config: ml_collections.ConfigDict, mesh):
  """jit(shard_map(occlusion_step)): (variables, batch, occluder number) -> probs, mu."""
  check_config(config)
  model = state_lib.build_model(config, data_axis_name=parallel.DATA_AXIS)
  fn = functools.partial(occlusion_step, model=model, crop_cfg=state_lib.crop_config(config),
                         occluder_seed=config.data.eval_occluder_seed, flip=config.eval_flip,
                         temperature=float(config.model.temperature))
  return parallel.data_parallel(
      fn, mesh, (parallel.REPLICATED, parallel.SHARDED, parallel.REPLICATED), parallel.SHARDED)


PROTOCOLS = ("refit", "oracle")  # config.occlusion.landmarks


@jax.jit
def occlude_batch(images: jax.Array, landmarks: jax.Array, index: jax.Array,
                  occluder: jax.Array, seed: jax.Array) -> jax.Array:
  """Faces [b, F, F, C] under occluder number `occluder`, each keyed by its dataset index as
  `occlusion_step` keys it: the same pixels, on the host."""
  keys = crops_lib.example_keys(jax.random.key(seed), index)
  return jax.vmap(occlude, in_axes=(0, 0, 0, None))(images, landmarks, keys, occluder)


class Refit:
  """A batch's faces under one occluder, with landmarks fitted again on the occluded faces
  (`evaluate.evaluate_split`'s `host_fn`); counts the fits that fell back to the template."""

  def __init__(self, fitter: landmarks_lib.AlignedFitter, occluder: int, seed: int,
               cache: fit_cache.FitCache | None = None):
    self.fitter, self.occluder, self.seed = fitter, np.int32(occluder), np.int32(seed)
    self.cache = cache  # fits kept from an earlier evaluation of the same pixels
    self.faces = self.failed = 0
    self.fits = fitter.source.name != "template"  # the template has nothing to fail

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    images = np.asarray(occlude_batch(batch["image"], batch["landmarks"], batch["index"],
                                      self.occluder, self.seed))
    landmarks = np.array(batch["landmarks"], np.float32)
    for j in np.flatnonzero(np.asarray(batch["mask"]) > 0):
      landmarks[j], fitted = (self.fitter(images[j]) if self.cache is None else
                              self.cache.fit(self.fitter, images[j]))
      self.faces += 1
      self.failed += int(not fitted)
    return {**batch, "image": images, "landmarks": landmarks}

  def failed_fraction(self) -> float | None:
    """Over every process's faces (a collective: call it on all)."""
    faces, failed = parallel.sum_over_processes(np.array([self.faces, self.failed]))
    return float(failed / faces) if faces and self.fits else None


def evaluate_occluders(config: ml_collections.ConfigDict, variables, split: pipeline.Split,
                       mesh) -> dict[str, dict[str, Any]]:
  """`evaluate.evaluate_split`'s metrics of `split` under each occluder, by name, with the
  landmarks of `config.occlusion.landmarks` (and, per occluder, `refit_failed`: the fraction
  of faces whose refit fell back to the template; None under `oracle`, for `none`, and for a
  model whose crops do not use landmarks, for which the two protocols are one evaluation).

  Each occluder is one pass over the split (every example once, padding masked out), whose log
  line names the occluder, its accuracy and its seconds.
  """
  protocol = config.occlusion.landmarks
  if protocol not in PROTOCOLS:
    raise ValueError(f"config.occlusion.landmarks must be one of {', '.join(PROTOCOLS)}, "
                     f"got {protocol!r}")
  if protocol == "refit" and not crops_lib.uses_landmarks(inference_branches(config)):
    logging.info("the crops the model classifies (%s) do not use landmarks: the refit protocol "
                 "is the oracle's evaluation, run once", ", ".join(inference_branches(config)))
    protocol = "oracle"
  if protocol == "refit":
    check_config(config)
    plain = eval_lib.make_eval_step(config, mesh)
    fitter = landmarks_lib.AlignedFitter(landmarks_lib.make_source(config.data.landmarks))
  else:
    step_fn = make_occlusion_step(config, mesh)
  results = {}
  for i, name in enumerate(OCCLUDERS):
    tagged = dataclasses.replace(split, name=f"{split.name} under {name} "
                                             f"({i + 1}/{len(OCCLUDERS)}, {protocol})")
    if protocol == "oracle":
      run = lambda v, b, k=np.int32(i): step_fn(v, b, k)
      results[name], _ = eval_lib.evaluate_split(config, variables, tagged, mesh, run)
      results[name]["refit_failed"] = None
      continue
    refit = None if name == "none" else Refit(
        fitter, i, config.data.eval_occluder_seed,
        fit_cache.FitCache(config.occlusion.fit_cache if fitter.source.name != "template"
                           else "", fitter, f"{split.name}-{name}", jax.process_index()))
    results[name], _ = eval_lib.evaluate_split(config, variables, tagged, mesh, plain, refit)
    if refit is not None:
      refit.cache.save()
      if refit.cache.hits:
        logging.info("%s: %d of the fits were read from %s", tagged.name, refit.cache.hits,
                     config.occlusion.fit_cache)
    results[name]["refit_failed"] = None if refit is None else refit.failed_fraction()
    if refit is not None and refit.fits:
      logging.info("%s: %d of %d refits fell back to the template (this process)", tagged.name,
                   refit.failed, refit.faces)
  return results


def inference_branches(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The branches whose crops the model classifies at evaluation (`model.inference_branches`,
  or every branch)."""
  return tuple(config.model.inference_branches) or tuple(config.data.crops.branches)


def result_name(split_name: str, protocol: str) -> str:
  """The file stem of an occluded evaluation: occlusion_<split> (refit), ..._oracle."""
  return f"occlusion_{split_name}" + ("" if protocol == "refit" else f"_{protocol}")


def first_face(split: pipeline.Split, seed: int) -> np.ndarray:
  """The split's first face under every occluder, keyed as in evaluation: [n, F, F, C]."""
  idx = int(split.indices[0])
  ex = split.source[idx]
  key = jax.random.fold_in(jax.random.key(seed), idx)
  return np.asarray(jax.jit(occlude_all)(ferplus.decode_png(ex["image"]),
                                         np.asarray(ex["landmarks"], np.float32), key))


def write_results(workdir: str, split_name: str, results: dict[str, dict[str, Any]],
                  checkpoint_step: int, branch_names: list[str], seed: int,
                  examples: np.ndarray | None = None, make_plots: bool = True,
                  protocol: str = "refit") -> pathlib.Path:
  """WORKDIR/eval/<result_name>.json and, with `make_plots`, <result_name>.png."""
  out_dir = pathlib.Path(workdir) / "eval"
  out_dir.mkdir(parents=True, exist_ok=True)
  stem = result_name(split_name, protocol)
  path = out_dir / f"{stem}.json"
  report = dict(split=split_name, checkpoint_step=int(checkpoint_step), eval_occluder_seed=seed,
                landmarks=protocol, occluders=results)
  files.write_json(path, report)
  if make_plots:
    names = list(results)
    plots.occlusion(names, [results[n]["accuracy"] for n in names],
                    np.array([[results[n]["mean_branch_weights"][b] for b in branch_names]
                              for n in names]),
                    branch_names, out_dir / f"{stem}.png",
                    title=f"{split_name} under occlusion ({protocol} landmarks), checkpoint "
                          f"step {checkpoint_step} ({results[names[0]]['num_examples']} faces)",
                    examples=examples)
  return path


def evaluate(config: ml_collections.ConfigDict, workdir: str, which: str = "latest"
             ) -> dict[str, dict[str, Any]]:
  """`--mode=occlusion`: restores checkpoint `which` (latest, best or a step number), with
  the model its run trained, and evaluates `data.eval_split` (or `data.eval_list`) under every
  occluder of `OCCLUDERS` (`evaluate.restore_for_eval`: what --mode=eval starts from).

  Returns:
    occluder name -> `evaluate.summarize`'s metrics (accuracy, per_class_accuracy,
    confusion_matrix, num_examples, mean_branch_weights), as in the JSON's `occluders`.
  """
  check_config(config)
  config, variables, step, split, mesh = eval_lib.restore_for_eval(
      config, workdir, which, prepare_if_missing=False)
  results = evaluate_occluders(config, variables, split, mesh)
  if parallel.is_main():
    seed = config.data.eval_occluder_seed
    examples = first_face(split, seed) if config.plots and len(split) else None
    path = write_results(workdir, split.name, results, step, list(config.data.crops.branches),
                         seed, examples, config.plots, config.occlusion.landmarks)
    logging.info("wrote %s (checkpoint step %d, %d examples): %s", path, step,
                 len(split), ", ".join(f"{n} {m['accuracy']:.4f}" for n, m in results.items()))
  return results


def main(args: Args) -> dict[str, dict[str, Any]]:
  """`--mode=occlusion`."""
  return evaluate(args.config, args.workdir, args.checkpoint)
