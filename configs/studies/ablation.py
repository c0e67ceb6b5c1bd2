"""The ablation: does the five-branch model beat one network on the whole face, and does the
eyes-over-occluded constraint help? Five cells (zipped axes), three seeds each.

    python main.py --mode=study --config=configs/studies/ablation.py \
        --workdir=/tmp/fer_claims --config.data.manual_dir=../shared/data/ferplus

On configs/cpu.py cut to 8 epochs (`configs/studies/__init__.py`):

- `loss.margin=0.03` (C): the paper's model, five branches, hinge weight 1, margin 0.03. Its
  folder has the name the margin study (configs/studies/margin.py) gives its 0.03 cell, and
  the same config, so the two studies share these runs when given the same --workdir;
- `no_constraint` (B): the five branches with attention, `loss.constraint_weight=0`;
- `one_branch` (A): the whole face only, no attention (`data.crops.branches=("face",)`,
  `model.fusion="none"`, no constraint), the same 8 epochs: the plain ResNet baseline;
- `one_branch_x2.75` (A'): A given the five-branch model's compute in FLOPs, as epochs. The
  backbone runs on two 32 px crops and three 16 px ones per face, 2 + 3/4 = 2.75 times one 32 px
  crop; XLA's cost analysis of the two forward passes gives 838.9 against 304.4 MFLOPs per 8
  faces, 2.76 (2026-12-06). So A' trains 22 epochs;
- `one_branch_occlude_face` (A+occ): A trained with the occluded branch's lower-half occluder
  painted over half its faces (`data.crops.occlude_face=0.5`: of the five-branch model's two
  whole-face views one is occluded). The control that tells the five-branch model's gain under
  occlusion apart from having seen occluded faces in training;
- `one_branch_x2.75_occlude_face` (A'+occ, issue 27, pre-registered in studies/README.md):
  A' trained as A+occ is. The cell that decides the product question;
- `multi_view` (MV, issue 27, pre-registered): C plus a linear classifier on each branch's own
  pooled feature, their mean loss added with weight 1 (`loss.aux_weight`), evaluated on the face
  branch alone (`model.inference_branches=("face",)`): the branches as a training signal, one
  network's cost at inference. Its training FLOPs are C's, so A' is its equal-compute baseline.

Each finished run is also evaluated under every occluder of `--mode=occlusion`
(`study.occlusion`). WORKDIR/ablation.md and ablation.png give clean and occluded accuracy per
cell (mean +- std over the seeds) with mean mu per branch and the fraction of faces whose hinge
is active; ablation.csv has a row per run. studies/report.py turns them into the claims.

Runtime, estimated from the first 4-epoch trial (1,744 steps in 8 min 24 s with its
evaluations, 2026-12-06, two AVX-512 cores): a five-branch run of 8 epochs (3,488 steps) about
16 min, plus about 2 min for its 14 occluded evaluations; A about a third of that, A' about as
long as C. About 3 h for the first four cells' 12 runs (measured: 17-18 min a five-branch run
with its occluded evaluations, 7 min for A, 17 min for A'), 21 min more for A+occ: 3 h 21 min
for the 15 runs.
Results: studies/README.md (C is 1.5 points below A clean and 10 above it with the lower half
occluded; A+occ 7 above C there; C - B within noise).
"""

from configs import studies
from fer_jax.data import crops

# A' (one_branch_x2.75): the five-branch model's backbone FLOPs per face over one 32 px crop's.
COMPUTE_RATIO = 2.75
# A+occ: the probability that a training face is occluded (one of the five-branch model's two
# whole-face views is).
OCCLUDE_FACE = 0.5
# MV: the weight of the branches' own classifiers' mean loss (multi-view training).
AUX_WEIGHT = 1.0
# The arms, in cell order: short name (studies/README.md, studies/report.py) -> (the cell's
# folder, what it is).
ARMS = {
    "C": ("loss.margin=0.03", "five branches, margin 0.03 (the paper's)"),
    "B": ("no_constraint", "five branches, no constraint"),
    "A": ("one_branch", "one branch"),
    "A'": ("one_branch_x2.75", f"one branch, {COMPUTE_RATIO}x the epochs (same FLOPs)"),
    "A+occ": ("one_branch_occlude_face",
              f"one branch, {OCCLUDE_FACE:g} of its faces occluded in training"),
    "A'+occ": ("one_branch_x2.75_occlude_face",
               f"one branch, {COMPUTE_RATIO}x the epochs, {OCCLUDE_FACE:g} of its faces "
               "occluded in training"),
    "MV": ("multi_view", f"C trained with a classifier per branch (aux weight {AUX_WEIGHT:g}), "
                         "evaluated on the face branch alone"),
}
LABELS = tuple(folder for folder, _ in ARMS.values())


def get_config(scale: str = "cpu"):
  """`scale`: the base (configs/studies/__init__.py): cpu (the proxy above), paper (ResNet-50,
  112 px, 30 epochs: `bench/gpu.py --study`, A' then trains 5x the epochs, the five branches
  all being 112 px there; its folder keeps the proxy's name) or smoke (the tests' model)."""
  config = studies.base(scale)
  ratio = studies.compute_ratio(config)  # COMPUTE_RATIO at the cpu scale
  epochs = float(config.num_epochs)
  five = tuple(crops.DEFAULT_BRANCHES)
  one = ("face",)
  config.study = studies.section(
      axes=(("data.crops.branches", (five, five, one, one, one, one, five)),
            ("model.fusion", ("weighted_sum", "weighted_sum") + ("none",) * 4
             + ("weighted_sum",)),
            ("loss.constraint_weight", (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)),
            ("num_epochs", (epochs,) * 3 + (epochs * ratio, epochs, epochs * ratio, epochs)),
            ("data.crops.occlude_face", (0.0,) * 4 + (OCCLUDE_FACE,) * 2 + (0.0,)),
            ("loss.aux_weight", (0.0,) * 6 + (AUX_WEIGHT,)),
            ("model.inference_branches", ((),) * 6 + (("face",),)),
            # The paper's step schedule (x0.1 every 10 epochs) stretched over A''s longer runs,
            # as the cpu scale's cosine stretches by itself (an axis only where it steps).
            *((("optimizer.decay_epochs", tuple(config.optimizer.decay_epochs * e / epochs for
                                                 e in (epochs,) * 3 + (epochs * ratio, epochs,
                                                                       epochs * ratio, epochs))),)
              if config.optimizer.schedule == "step" else ())),
      combine="zip", seeds=(0, 1, 2), occlusion=True, labels=LABELS, name="ablation")
  return config
