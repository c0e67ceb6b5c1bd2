"""The ablation: a plain one-branch network, five branches without the constraint, five with it.

    python main.py --mode=study --config=configs/studies/ablation.py \
        --workdir=/tmp/fer_ablation --config.data.manual_dir=../shared/data/ferplus

Three cells (zipped axes), three seeds each, on configs/cpu.py cut to 3 epochs
(`configs/studies/__init__.py`):

- `one_branch`: the whole face only, no attention (`data.crops.branches=("face",)`,
  `model.fusion="none"`, no constraint): the plain ResNet baseline;
- `five_branches`: the five branches with attention, `loss.constraint_weight=0` (no hinge);
- `five_branches_constraint`: the paper's model (hinge weight 1, margin 0.03).

Each finished run is also evaluated under every occluder of `--mode=occlusion`
(`study.occlusion`), so WORKDIR/study.md and study.png give clean and occluded accuracy per
cell (mean +- std over the seeds), with mean mu per branch and the fraction of faces whose
hinge is active.

Runtime, estimated from the per-step rate (not measured as a study): cpu.py's recipe ran 50
steps in about 23 s at batch 64 on two cores, with a ~20 s evaluation per epoch (the first
epochs of a cpu.py run, 2026-12-02), so a five-branch run of 3 epochs (1,308 steps) takes about
12 min with its evaluations, plus about 4 min for its occlusion evaluation (one validation pass
per occluder, 14); a one-branch run cuts one crop per face instead of five, so roughly a fifth
of that. About 2 h for the 9 runs.
Expected result: not yet run.
"""

from configs import studies
from fer_jax.data import crops

LABELS = ("one_branch", "five_branches", "five_branches_constraint")


def get_config():
  config = studies.small_cpu()
  five = tuple(crops.DEFAULT_BRANCHES)
  config.study = studies.section(
      axes=(("data.crops.branches", (("face",), five, five)),
            ("model.fusion", ("none", "weighted_sum", "weighted_sum")),
            ("loss.constraint_weight", (0.0, 0.0, 1.0))),
      combine="zip", seeds=(0, 1, 2), occlusion=True, labels=LABELS)
  return config
