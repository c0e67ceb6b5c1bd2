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
split is held out (`data.holdout`) as the confirmation set; its figures are recorded in
bench/RESULTS.md ("Product recipes") once measured.
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
