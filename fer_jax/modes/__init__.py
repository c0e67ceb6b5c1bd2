"""The table of main.py's `--mode`s: what each needs (a run folder, a released model, an
input, an output) and the module that does it, imported only when that mode runs.

Every mode module has `main(args: Args)`; `cli.run` checks the flags against the mode's row
here, resolves a released model, takes the run folder's lock, and calls it. A new mode is a
module in this package and a row in `MODES`.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

import ml_collections

from fer_jax import errors


@dataclasses.dataclass(frozen=True)
class Args:
  """What main.py's flags give a mode, paths expanded and checked."""
  config: ml_collections.ConfigDict
  workdir: str | None
  checkpoint: str = "latest"
  input: str | None = None
  output: str | None = None


@dataclasses.dataclass(frozen=True)
class Mode:
  """One `--mode`.

  Attributes:
    module: fer_jax.modes.<module> holds its `main(args)`.
    workdir: what it does with --workdir: "create" (made if missing, written), "write" (must
      exist, written), "read" (must exist, only read) or "optional" (a place for data, if any).
    released: reads a trained model: without --workdir it uses a released one (--model).
    locks: holds the run folder's lock (fer_jax/files.py) while it runs.
    checkpoint: takes --checkpoint (latest, best or a step).
    input: needs --input.
    output: what --output is: "folder", "png", "onnx", or None (none taken).
    output_required: fails without --output.
    distributed: starts jax.distributed (config.multihost) before it runs.
  """
  module: str
  workdir: str = "write"
  released: bool = False
  locks: bool = False
  checkpoint: bool = False
  input: bool = False
  output: str | None = None
  output_required: bool = False
  distributed: bool = True

  def load(self) -> ModuleType:
    return importlib.import_module(f"{__name__}.{self.module}")


MODES: dict[str, Mode] = {
    "prepare": Mode("prepare", workdir="optional", distributed=False),
    "train": Mode("train", workdir="create", locks=True),
    "eval": Mode("evaluate", released=True, locks=True, checkpoint=True, output="folder"),
    "predict": Mode("predict", workdir="read", released=True, checkpoint=True, input=True,
                    output="folder", output_required=True),
    "crops": Mode("crops", workdir="optional", output="png", output_required=True),
    "occlusion": Mode("occlusion", locks=True, checkpoint=True),
    "study": Mode("study", workdir="create"),
    "export": Mode("export", workdir="read", released=True, locks=True, checkpoint=True,
                   output="onnx", output_required=True),
}
# Modes that read a trained model: without --workdir they use a released one (--model=NAME).
RELEASED_MODEL_MODES = tuple(name for name, mode in MODES.items() if mode.released)


def get(name: str) -> Mode:
  if name not in MODES:
    raise errors.UsageError(f"unknown --mode={name}; expected one of {', '.join(MODES)}")
  return MODES[name]
