"""`--mode=export`: a checkpoint's classifier as an ONNX model, for onnxruntime and friends.

    python main.py --workdir=RUN --mode=export --output=model.onnx [--checkpoint=best]

The graph (written by jax2onnx, opset `OPSET`, its weights inside the one .onnx file) is the
evaluation forward pass of `inference.eval_step` on crops that are already cut:

    crops  float32 [N, nb, S, S, 1] --BranchAttentionNet, train=False--> logits, mu
    probs = softmax(logits)                                           float32 [N, 8]
    mu                                                                float32 [N, nb]

N is dynamic. BatchNorm uses its running averages; the weights are the moving averages when the
run keeps them and its `eval_ema` is set, and with its `eval_flip` each output is the mean over
the crops and their mirror images, as in `--mode=eval` and `--mode=predict`. The model is built
with XLA's plain convolutions and the branches folded into the batch (`EXPORT_LOWERING`): the
lowering changes no numbers (models/lowering.py), and the graph holds standard Conv and MaxPool
nodes. Compute is float32 whatever the run's `model.dtype`.

The crops are not in the graph: they are cut by `fer_jax.data.crops.five_crops` from a grey face
aligned onto the 48 px FERPlus template (`--mode=predict` shows how) and its 68 landmarks, with
`train=False` and the key `fold_in(key(data.eval_occluder_seed), face_keys(face))` (a CRC-32
of the aligned face and its landmarks, `fer_jax.predict.model.face_keys`), each crop
standardised. Beside the model, `<output>.json` (e.g. model.onnx.json) records that contract:
the input and output names and shapes, the class names, the branches, the crop size and the
whole `data.crops` config, the seed, the face size and the checkpoint it came from.
"""

from __future__ import annotations

import pathlib
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fer_jax import checkpoint as ckpt_lib
from fer_jax.data import ferplus
from fer_jax.data import labels as labels_lib
from fer_jax import files
from fer_jax import inference
from fer_jax.modes import Args
from fer_jax import state as state_lib

OPSET = 18  # onnxruntime >= 1.14 runs it; 17 is too old for the ReduceMean that jax2onnx writes
INPUT_NAME = "crops"
OUTPUT_NAMES = ("probs", "mu")
BATCH_DIM = "N"
# Plain XLA convolutions and the branches in the batch: Conv nodes, no vmap. The platform is not
# `cpu`, so the CPU-only choices of lowering.py (im2col on small maps, the strided-view max
# pool) stay out too and the pool is one reduce_window (MaxPool).
EXPORT_LOWERING = dict(conv_impl="xla", branch_axis="fold")
EXPORT_PLATFORM = "onnx"
QUIET_LOGGERS = ("jax2onnx.plugins.plugin_system", "onnx_ir.serde")
INSTALL_HINT = ("pip install onnx onnx-ir onnxruntime && pip install --no-deps jax2onnx "
                "(requirements.txt says why --no-deps)")


def contract_path(output: str | pathlib.Path) -> pathlib.Path:
  """Where the input contract of the model at `output` is written: `<output>.json`."""
  output = pathlib.Path(output)
  return output.with_name(output.name + ".json")


def export_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with the lowering (and float32 compute) that the ONNX graph is traced with."""
  config = config.copy_and_resolve_references()
  config.lowering.update(EXPORT_LOWERING)
  config.model.dtype = "float32"
  return config


def classifier(config: ml_collections.ConfigDict, variables):
  """The function crops [N, nb, S, S, 1] -> (probs [N, 8], mu [N, nb]) that is exported:
  `inference.eval_step` on cut crops, with the mirror average of `config.eval_flip` taken over
  two passes (eval_step's own, over one batch of 2N, slices at N, which a symbolic N cannot)."""
  config = export_config(config)
  model = state_lib.build_model(config, platform=EXPORT_PLATFORM)
  variables = jax.tree.map(lambda v: np.asarray(v, np.float32), variables)
  crop_cfg = state_lib.crop_config(config)
  step = lambda x: inference.eval_step(variables, {"crops": x}, model=model, crop_cfg=crop_cfg,
                                      crops_on="host", occluder_seed=0)  # crops already cut
  temperature = float(config.model.temperature)

  def classify(crops):
    out = step(crops)
    if config.eval_flip:
      mirrored = step(jnp.flip(crops, axis=-2))
      out = {k: (out[k] + mirrored[k]) / 2 for k in ("probs", "mu")}
    return inference.temper(out["probs"], temperature), out["mu"]  # as eval_step tempers

  return classify


def contract(config: ml_collections.ConfigDict, workdir: str, step: int,
             onnx_name: str) -> dict[str, Any]:
  """What a user of the .onnx needs to know to feed it and read it (written as JSON)."""
  crops = config.data.crops.to_dict()
  nb, size = len(crops["branches"]), int(crops["size"])
  return dict(
      model=onnx_name,
      inputs={INPUT_NAME: dict(shape=[BATCH_DIM, nb, size, size, 1], dtype="float32")},
      outputs={OUTPUT_NAMES[0]: dict(shape=[BATCH_DIM, labels_lib.NUM_CLASSES],
                                     dtype="float32", what=(
                                         "softmax of the logits (averaged with the mirror "
                                         "image's when eval_flip), then softmax(log p / "
                                         "temperature)")),
               OUTPUT_NAMES[1]: dict(shape=[BATCH_DIM, nb], dtype="float32",
                                     what="branch weights, in the order of branches")},
      class_names=list(labels_lib.CLASS_NAMES),
      branches=list(crops["branches"]),
      size=size,
      face_size=ferplus.FACE_SIZE,
      crops={k: list(v) if isinstance(v, tuple) else v for k, v in crops.items()},
      temperature=float(config.model.temperature),
      eval_occluder_seed=int(config.data.eval_occluder_seed),
      eval_flip=bool(config.eval_flip),
      moving_averages=bool(config.eval_ema and config.optimizer.ema_decay > 0),
      how_to_cut=("fer_jax.data.crops.five_crops(face, landmarks, "
                  "jax.random.fold_in(jax.random.key(eval_occluder_seed), "
                  "fer_jax.predict.model.face_keys(face[None], landmarks[None])[0]), "
                  "fer_jax.data.crops.from_config(crops), train=False)['crops'], "
                  "face: the grey face [face_size, face_size, 1] uint8 aligned onto the FERPlus "
                  "template, landmarks: its 68 iBUG points [68, 2] (x, y)"),
      workdir=str(workdir),
      checkpoint_step=int(step),
      opset=OPSET,
  )


def export(workdir: str, output: str, checkpoint: str | int = "latest") -> dict[str, Any]:
  """Writes checkpoint `checkpoint` of `workdir` to `output` (.onnx) and its contract to
  `<output>.json`; returns the contract.

  Raises:
    ValueError: `output` does not end in .onnx.
    FileNotFoundError: `workdir` has no checkpoint.
    RuntimeError: jax2onnx is not installed.
  """
  out = pathlib.Path(output)
  if out.suffix != ".onnx":
    raise ValueError(f"--output={output} must end in .onnx: --mode=export writes an ONNX model")
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
    import onnx  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RuntimeError(f"--mode=export needs jax2onnx ({e}): {INSTALL_HINT}") from None
  # Its plugins for libraries that are not installed (equinox, dm-pix) are skipped, each with
  # a traceback; and onnx-ir notes the shape values it leaves untyped. Neither matters here.
  for name in QUIET_LOGGERS:
    logging.logging.getLogger(name).setLevel(logging.logging.ERROR)
  config, variables, step = ckpt_lib.load_checkpoint(workdir, checkpoint)  # the run's config
  crops = config.data.crops
  shape = (BATCH_DIM, len(crops.branches), crops.size, crops.size, 1)
  model = jax2onnx.to_onnx(classifier(config, variables), inputs=[shape],
                           model_name="fer_jax", opset=OPSET, input_names=[INPUT_NAME],
                           output_names=list(OUTPUT_NAMES))
  # jax2onnx's shape annotations of intermediate values give some NHWC tensors NCHW shapes
  # (onnxruntime warns, then infers them itself): they are optional, and left out.
  del model.graph.value_info[:]
  out.parent.mkdir(parents=True, exist_ok=True)
  with files.atomic_path(out) as tmp:
    onnx.save_model(model, str(tmp))  # one file, the weights inside it
  info = contract(config, workdir, step, out.name)
  files.write_json(contract_path(out), info)
  logging.info("exported checkpoint %d of %s to %s (%.1f MB; input %s %s) and %s", step,
               workdir, out, out.stat().st_size / 2**20, INPUT_NAME, list(shape),
               contract_path(out))
  return info


def main(args: Args) -> dict[str, Any]:
  """`--mode=export`."""
  return export(args.workdir, args.output, args.checkpoint)
