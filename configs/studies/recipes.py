"""The product recipe search (issue 28): candidate recipes for the default released model, one
cell each, every run also evaluated under the occluders (the realistic protocol) and on the
confirmation slice of the training split (`data.holdout`, which no choice is made on).

    python3 main.py --mode=study --config=configs/studies/recipes.py \
        --workdir=studies/runs/recipes --config.data.manual_dir=../shared/data/ferplus

Cells (zipped axes over configs/face_fast.py):
- `face_fast`: configs/face_fast.py, the fast variant (32 px, 22 epochs);
- `face`: configs/face.py, the first product candidate (48 px, 50 epochs, a quarter of the
  faces lower-half occluded in training).

Decision rule, fixed before the runs: the product recipe is the cell with the highest mean
final validation accuracy over its seeds among those whose lower-half accuracy (realistic
protocol) is at least the paper's model's under the same protocol in the ablation study
(cell `loss.margin=0.03`); it ships only if its confirmation accuracy is within 2 points of its
validation accuracy (otherwise validation flatters it, and the search says so). One seed first
(a screen); the chosen recipe is then run with a second seed to show the spread. The same
command continues the search after a stop; new cells are added at the end of the axes.

Seed 0 (2026-12-07; bench/RESULTS.md, "Product recipes"): face_fast 83.01% validation, 83.45%
confirmation, lower half 26.76% (under the bar, the paper's model's 44.00%); face 86.46%,
86.53%, 68.07%: the rule's choice, released as fer_face_r10. Seed 1: face_fast 82.98%,
82.40%, 26.26% (11.1 min of training with the cores to itself); face 86.74%, 87.01%, 68.60%.
Over the two seeds face scores 86.60% validation and 86.77% confirmation (0.17 points apart:
it ships under the rule).
"""

from configs import face_fast
from configs import studies

LABELS = ("face_fast", "face")


def get_config():
  config = face_fast.get_config()
  config.study = studies.section(
      axes=(("data.crops.size", (32, 48)),
            ("num_epochs", (22.0, 50.0)),
            ("data.crops.occlude_face", (0.0, 0.25))),
      combine="zip", seeds=(0, 1), occlusion=True, labels=LABELS, name="recipes")
  return config
