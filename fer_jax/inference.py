"""The evaluation forward pass: a batch of faces -> class probabilities and branch weights,
with the mirror average and the temperature a release stores. Shared by every mode that runs a
trained model (eval, occlusion, predict, export)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fer_jax.data import crops as crops_lib


def eval_step(variables, batch, *, model, crop_cfg, crops_on: str, occluder_seed: int,
              flip: bool = False, temperature: float = 1.0):
  """Per-device forward pass: class probabilities and branch weights of each example.

  With `flip`, each example's probabilities and branch weights are the means over its crops
  and their mirror images. Mirroring a crop equals cropping the mirrored face: every region
  (eyes, nose, mouth) is a bounding box of a mirror-symmetric landmark set. Probabilities are
  tempered by `temperature` (`model.temperature`, fitted on validation for a release) after
  the mirror average, as `calibration.probabilities`; `logits` [n, views, classes] are the raw
  logits of each view (for calibration).
  """
  x = crops_lib.model_inputs(batch, crop_cfg, occluder_seed, False, crops_on)
  n = x.shape[0]
  if flip:
    x = jnp.concatenate([x, jnp.flip(x, axis=-2)])
  out = model.apply(variables, x, train=False)
  logits = out["logits"].astype(jnp.float32)
  probs = jax.nn.softmax(logits)
  mu = out["mu"]
  views = logits[:, None]
  if flip:
    probs, mu = (probs[:n] + probs[n:]) / 2, (mu[:n] + mu[n:]) / 2
    views = jnp.stack([logits[:n], logits[n:]], 1)
  return dict(probs=temper(probs, temperature), mu=mu, logits=views)


def temper(probs: jax.Array, temperature: float) -> jax.Array:
  """softmax(log p / T) of (mirror-averaged) probabilities, as `calibration.probabilities`:
  the most probable class stays; T = 1 leaves them as they are."""
  if temperature == 1.0:
    return probs
  return jax.nn.softmax(jnp.log(jnp.maximum(probs, 1e-30)) / temperature)
