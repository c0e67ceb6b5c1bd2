"""One ResNet-10 on the whole face at FERPlus' native 48 px, trained with lower-half
occluders: the product recipe (issue 28: >= 85% validation in <= 2 h of training on two CPU
cores, robust under the lower-half occluder), the default released model's.

    python3 main.py --config=configs/face.py --workdir=/tmp/fer_face \
        --config.data.manual_dir=../shared/data/ferplus

configs/face_fast.py (the ablation study's A': 83.39% in 13 min at 32 px) changed where the
study and the literature point: the faces at their native 48 px rather than resized to 32
(2.25x the pixels), 50 epochs rather than 22, and a quarter of the training faces with the
occluded branch's lower-half occluder painted over them (`data.crops.occlude_face`: the
study's A+occ, at 0.5, raised lower-half accuracy from 35.5% to 51.1% and cost 3.3 points
clean at 8 epochs). 8% of the training split is held out as the confirmation set
(`data.holdout`).

Measured (2026-12-07, two Intel Xeon cores, the recipe search of configs/studies/recipes.py,
`studies/runs/recipes/face/seed=N`; final checkpoint, majority vote over 3,191 validation faces,
mirror average), two seeds:
- seed 0: 20,000 steps in **58.3 min** of training with an evaluation per epoch (61.8 min with
  its occluded evaluations), the cores shared with short test runs at times; validation
  **86.46%** (best 86.65%), **86.53%** on the 2,079 held-out training faces, lower half
  occluded 68.07% (the paper's model: 44.00%). Released as `fer_face_r10`, the default model.
- seed 1: validation **86.74%** (best 86.78%), 87.01% held out, lower half 68.60%. Its wall
  time (80.4 min) is not a timing: it was stopped for 23.7 min of benchmarks and shared the
  cores with test suites.
Mean 86.60% over the two seeds; both curves first passed 85% at epoch 34.
"""

from configs import face_fast


def get_config():
  config = face_fast.get_config()
  config.data.crops.size = 48
  config.num_epochs = 50.0
  config.data.crops.occlude_face = 0.25
  return config
