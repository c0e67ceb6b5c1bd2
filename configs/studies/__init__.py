"""Studies: configs with a `study` section, run by `--mode=study` (fer_jax/modes/study.py).

Each is an ordinary config plus `config.study`: `axes` ((dotted key, values) pairs), `combine`
(cross | zip), `seeds`, `occlusion` and optional `labels` (one folder name per cell). Every run
lands in WORKDIR/<cell>/seed=<seed>/ as an ordinary run; WORKDIR/study.csv, study.md and
study.png summarise them. The same command continues a study that was stopped.
"""

import ml_collections

from configs import cpu
from configs import default
from configs import test as tiny  # not `test`: configs/studies/test.py would shadow it
from fer_jax import defaults

# Epochs of a study's run: the cpu.py recipe (its cosine schedule over the run) cut to the
# fewest epochs at which the paper's model still clearly clears 75% validation accuracy. At 4
# epochs (about 8 min on two AVX-512 cores) it reached 71.1% (seed 0, 2026-12-06), too far
# from trained to compare methods on; configs/cpu.py's own curves (bench/RESULTS.md, R5)
# pass 75% at the 7th epoch. So 8 epochs: about 16 min a five-branch run. studies/README.md.
EPOCHS = 8


def small_cpu() -> ml_collections.ConfigDict:
  """configs/cpu.py trained for `EPOCHS` epochs: the base of the shipped studies."""
  config = cpu.get_config()
  config.num_epochs = EPOCHS
  return config


def paper() -> ml_collections.ConfigDict:
  """The paper's scale (configs/default.py: ResNet-50, five 112 px branches, 30 epochs) as an
  accelerator trains it (`bench/gpu.py --study`): bfloat16 compute, the training split resident
  on the device, an evaluation and a checkpoint every epoch."""
  config = default.get_config()
  config.model.dtype = "bfloat16"
  config.data.source = "memory"
  return config


def smoke() -> ml_collections.ConfigDict:
  """The tests' tiny model on the committed sample, two steps a run: checks a study's path."""
  config = tiny.get_config()
  config.num_train_steps = 2
  return config


# A study config's argument (`--config=configs/studies/ablation.py:paper`) -> its base.
SCALES = {"cpu": small_cpu, "paper": paper, "smoke": smoke}


def base(scale: str = "cpu") -> ml_collections.ConfigDict:
  if scale not in SCALES:
    raise ValueError(f"a study's scale must be one of {', '.join(SCALES)}, got {scale!r}")
  return SCALES[scale]()


def compute_ratio(config: ml_collections.ConfigDict) -> float:
  """The backbone's pixels per face of `config`'s branches over one whole-face crop's: the
  whole-face kinds at data.crops.size, the part branches at model.part_size when that is
  smaller (2 + 3 x (16/32)^2 = 2.75 for cpu.py; 5 at the paper's scale). Convolution FLOPs
  scale with pixels: XLA's cost analysis gave 2.76 for cpu.py (configs/studies/ablation.py)."""
  from fer_jax.data import crops  # pylint: disable=g-import-not-at-top
  size, part = config.data.crops.size, config.model.part_size
  scale = (part / size) ** 2 if 0 < part < size else 1.0
  return float(sum(1.0 if b in crops.BRANCH_KINDS else scale
                   for b in config.data.crops.branches))


def section(axes, *, seeds, combine="cross", occlusion=False, labels=(),
            name="study", budget_s=0.0) -> ml_collections.ConfigDict:
  """A `config.study` section (`fer_jax.defaults.study_section`); `axes` is a tuple of
  (dotted key, tuple of values) pairs."""
  return defaults.study_section(
      axes=tuple((key, tuple(values)) for key, values in axes), combine=combine,
      seeds=tuple(seeds), occlusion=occlusion, labels=tuple(labels), name=name,
      budget_s=float(budget_s))
