"""One ResNet-10 on the whole face, fast: the recipe for tests of the whole path (issue 28's
fast variant, >= 82% validation in <= 15 minutes of training on two CPU cores).

    python3 main.py --config=configs/face_fast.py --workdir=/tmp/fer_face_fast \
        --config.data.manual_dir=../shared/data/ferplus

It is the ablation study's A' (`one_branch_x2.75`, configs/studies/ablation.py): configs/cpu.py
with the whole face alone (`data.crops.branches=("face",)`, no attention, no constraint) for 22
epochs, the five-branch model's training FLOPs in epochs of one 32 px crop. A' itself (the
whole training split) scored 83.39% final validation (majority vote, mirror average) in 13 min
of training on two AVX-512 cores (seed 0, 2026-12-07, studies/runs/claims/one_branch_x2.75);
lower half occluded (realistic protocol), 31.24%: not a robust model. Here 8% of the training
split is held out (`data.holdout`) as the confirmation set.

Measured (the recipe search, configs/studies/recipes.py, studies/runs/recipes/face_fast,
2026-12-07, two Intel Xeon cores; final checkpoint, majority vote over 3,191 validation faces,
mirror average), two seeds:
- seed 1, the cores to itself: 8,800 steps in **11.1 min** of training (13.0 min for the whole
  run: start, compilation, an evaluation per epoch, the final and occluded evaluations),
  **82.98%** validation, 82.40% on the 2,079 held-out training faces, lower half 26.26%;
- seed 0, the cores shared with another training run for 5 min and with test runs: 18.9 min,
  **83.01%** validation, 83.45% held out, lower half 26.76%.
"""

from configs import cpu


def get_config():
  config = cpu.get_config()
  config.data.crops.branches = ("face",)
  config.model.fusion = "none"
  config.loss.constraint_weight = 0.0
  config.num_epochs = 22.0
  config.data.holdout = 0.08
  return config
