"""The paper's model on FERPlus: ResNet-50 over five 112 px branches, margin 0.03, lr 0.01,
30 epochs, with a step decay (x0.1 every 10 epochs) that trains, where the printed schedule
(x0.1 every epoch, `configs/paper.py`) leaves 1e-5 after three epochs.

Command (prepare once, then train and evaluate on validation):

    python main.py --config=configs/default.py --mode=prepare \
        --config.data.manual_dir=../shared/data/ferplus
    python main.py --config=configs/default.py --workdir=/tmp/fer_default \
        --config.data.manual_dir=../shared/data/ferplus

Runtime: a GPU or TPU job (bench/RESULTS.md estimates the 30 epochs from measured step
rates); on two CPU cores use `configs/cpu.py`. Expected result: the paper reports 87.91% on
the FERPlus test split; this config has not been run to completion here (no accelerator).

Every other config starts from this one and overrides what it must.

The keys, their defaults and what each means live in fer_jax/defaults.py (so that an installed
fer_jax needs no configs/ folder); this file is that config under its command-line name.
"""

import ml_collections

from fer_jax import defaults


def get_config() -> ml_collections.ConfigDict:
  return defaults.get_config()
