"""Released models: trained weights that ship inside the package, in `fer_jax/weights/NAME/`.

A released model is what `--mode=predict` and `--mode=eval` use when no `--workdir` is given
(`--model=NAME` chooses one, `DEFAULT_MODEL` otherwise). Its folder holds

    variables/       an Orbax checkpoint of {"params", "batch_stats"} only (no optimizer
                     state), stored in `dtype` (bfloat16 halves it) and read back as float32
    config.json      the run's whole config, as a workdir's
    release.json     where it came from: workdir, step, dtype, validation accuracy
    MODEL_CARD.md    data, command, accuracy, limits, licences and intended use (by hand;
                     `card_figures` lists the figures it must state, and a test holds it)

`write` makes the first three from a training run's checkpoint; `load` gives back what
`checkpoint.load_checkpoint` gives for a workdir: (config, variables, step), the config being
the model's own, or the caller's with the model's `checkpoint.RUN_KEYS`.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from fer_jax import checkpoint as ckpt_lib
from fer_jax import files

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "fer_face_r10"  # the paper's five-branch model: "fer_r10_cpu"
DTYPES = ("float32", "bfloat16")


def available(root: pathlib.Path | None = None) -> list[str]:
  """The names of the released models under `root` (WEIGHTS_DIR)."""
  root = root or WEIGHTS_DIR
  if not root.is_dir():
    return []
  return sorted(p.name for p in root.iterdir() if is_release(p))


def model_dir(name: str, root: pathlib.Path | None = None) -> pathlib.Path:
  """The folder of released model `name`; an error listing the available ones otherwise."""
  root = root or WEIGHTS_DIR
  path = root / name
  if not is_release(path):
    names = ", ".join(available(root)) or "none"
    raise FileNotFoundError(f"no released model {name!r} in {root} (available: {names}); "
                            "or give --workdir=W to use a run of your own")
  return path


def write(workdir: str, name: str, which: str | int = "latest", dtype: str = "bfloat16",
          root: pathlib.Path | None = None, extra: dict[str, Any] | None = None
          ) -> pathlib.Path:
  """Writes checkpoint `which` of `workdir` as released model `name` (replacing one of that
  name); returns its folder. The model card is not written here."""
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
  config, variables, step = ckpt_lib.load_checkpoint(workdir, which)
  out = (root or WEIGHTS_DIR) / name
  out.mkdir(parents=True, exist_ok=True)
  if (out / "variables").exists():
    shutil.rmtree(out / "variables")
  stored = jax.tree.map(lambda x: jnp.asarray(x, dtype), jax.device_get(variables))
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save((out / "variables").resolve(), stored)
  files.write_text(out / "config.json", config.to_json_best_effort(indent=2) + "\n")
  info = dict(workdir=str(workdir), step=int(step), dtype=dtype, **(extra or {}))
  files.write_json(out / "release.json", info, indent=2)
  logging.info("released step %d of %s as %s (%s)", step, workdir, out, dtype)
  return out


def set_temperature(name: str, evaluation_json: str, root: pathlib.Path | None = None
                    ) -> float:
  """Stores in released model `name` the temperature fitted on validation by an evaluation of
  it (`--mode=eval --model=NAME`'s validation.json, its `calibration.fitted_temperature`) as
  `model.temperature`, which eval and predict then apply; release.json records the NLL and
  ECE before (at the temperature evaluated) and at the fitted one. Returns the temperature."""
  out = model_dir(name, root)
  evaluation = json.loads(pathlib.Path(evaluation_json).read_text())
  cal = evaluation.get("calibration")
  if not isinstance(cal, dict) or "fitted_temperature" not in cal:
    raise ValueError(f"{evaluation_json} holds no calibration figures (an evaluation by this "
                     f"version: python main.py --mode=eval --model={name} ...)")
  if evaluation.get("split") != "validation":
    raise ValueError(f"{evaluation_json} evaluated {evaluation['split']!r}: a temperature is "
                     "fitted on validation")
  config = json.loads((out / "config.json").read_text())
  config.setdefault("model", {})["temperature"] = float(cal["fitted_temperature"])
  files.write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
  info = json.loads((out / "release.json").read_text())
  info["calibration"] = dict(
      fitted_on="validation", faces=evaluation.get("num_examples"), bins=cal.get("bins"),
      temperature=float(cal["fitted_temperature"]),
      before=dict(temperature=cal["temperature"], nll=cal["nll"], ece=cal["ece"]),
      after=dict(nll=cal["nll_at_fitted"], ece=cal["ece_at_fitted"]))
  files.write_json(out / "release.json", info, indent=2)
  logging.info("released model %s: temperature %.4f (validation NLL %.4f -> %.4f, ECE %.4f -> "
               "%.4f)", name, cal["fitted_temperature"], cal["nll"], cal["nll_at_fitted"],
               cal["ece"], cal["ece_at_fitted"])
  return float(cal["fitted_temperature"])


def card_figures(path: pathlib.Path) -> list[str]:
  """The figures released model folder `path`'s MODEL_CARD.md must state, written as the card
  writes them, from the files beside it: validation accuracy with its face count
  (validation.json), accuracy per class, accuracy under each occluder
  (occlusion_validation.json, where present) and the calibration before and after the stored
  temperature (release.json, where fitted). tests/test_release.py holds every card to them."""
  path = pathlib.Path(path)
  evaluation = json.loads((path / "validation.json").read_text())
  accuracy, n = evaluation["accuracy"], evaluation["num_examples"]
  out = [f"{100 * accuracy:.2f}%", f"({round(accuracy * n):,} of {n:,})"]
  out += [f"{name} {100 * v:.1f}%" for name, v in evaluation["per_class_accuracy"].items()
          if v is not None]  # None: no face of that class
  if (path / "occlusion_validation.json").exists():
    occlusion = json.loads((path / "occlusion_validation.json").read_text())["occluders"]
    names = [o for o in occlusion if o != "none"]
    random = [o for o in names if o.startswith("random_")]
    out += [f"{o.replace('_', ' ')} {100 * occlusion[o]['accuracy']:.1f}%" for o in names
            if o not in random]
    if random:
      sizes = [o.split("_")[1] for o in random]
      out.append(f"random {sizes[0]}-{sizes[-1]}% of the face " + " / ".join(
          f"{100 * occlusion[o]['accuracy']:.1f}" for o in random) + "%")
  calibration = json.loads((path / "release.json").read_text()).get("calibration")
  if calibration:
    before, after = calibration["before"], calibration["after"]
    out += [f"| {before['nll']:.3f} | {100 * before['ece']:.2f}% |",
            f"T = {calibration['temperature']:.3f}",
            f"| {after['nll']:.3f} | {100 * after['ece']:.2f}% |"]
  return out


# A released folder is read by the checkpoint module (eval and predict meet one where they
# meet a workdir); the names stay here, where releases are made.
is_release = ckpt_lib.is_release
load_path = ckpt_lib.load_release


def load(name: str = DEFAULT_MODEL, config: ml_collections.ConfigDict | None = None,
         root: pathlib.Path | None = None, mesh=None
         ) -> tuple[ml_collections.ConfigDict, dict[str, Any], int]:
  """`load_path` of released model `name`."""
  return load_path(model_dir(name, root), config=config, mesh=mesh)
