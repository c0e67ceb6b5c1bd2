"""Studies: configs with a `study` section, run by `--mode=study` (fer_jax/study.py).

Each is an ordinary config plus `config.study`: `axes` ((dotted key, values) pairs), `combine`
(cross | zip), `seeds`, `occlusion` and optional `labels` (one folder name per cell). Every run
lands in WORKDIR/<cell>/seed=<seed>/ as an ordinary run; WORKDIR/study.csv, study.md and
study.png summarise them. The same command continues a study that was stopped.
"""

import ml_collections

from configs import cpu

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


def section(axes, *, seeds, combine="cross", occlusion=False, labels=(),
            name="study") -> ml_collections.ConfigDict:
  """A `config.study` section; `axes` is a tuple of (dotted key, tuple of values) pairs."""
  return ml_collections.ConfigDict(dict(
      axes=tuple((key, tuple(values)) for key, values in axes), combine=combine,
      seeds=tuple(seeds), occlusion=occlusion, labels=tuple(labels), name=name))
