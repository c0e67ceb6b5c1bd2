"""The paper's Figure 3: accuracy against the constraint's margin, over three seeds.

    python main.py --mode=study --config=configs/studies/margin.py --workdir=/tmp/fer_claims \
        --config.data.manual_dir=../shared/data/ferplus

Margins 0 (the hinge still asks mu_eyes >= mu_occluded), 0.01, 0.03 (the paper's), 0.05 and
0.1 (the paper's figure has 0.07 in place of 0), seeds 0, 1, 2: 15 runs of configs/cpu.py cut to
8 epochs (`configs/studies/__init__.py`), each in WORKDIR/loss.margin=<m>/seed=<s>/ and also
evaluated under every occluder of `--mode=occlusion`. WORKDIR/margin.png is the figure (final
validation accuracy against the margin, mean +- std over the seeds, and under each occluder);
margin.md and margin.csv hold the numbers, mean mu per branch and the hinge-active fraction
included. Given the ablation study's --workdir (configs/studies/ablation.py), the three runs of
the 0.03 cell are shared with it: run there, they are not run again. The same command continues
the study after a stop.

Runtime, measured (2026-12-06, two AVX-512 cores): 16.6 to 20.3 min a run with its occluded
evaluations, 3 h 38 min for the 12 runs outside the 0.03 cell (about 4.5 h for all 15 without
the ablation's runs).
Result (studies/README.md): no margin is distinguishable from another, clean (75.93 to 76.29%,
F(4, 10) = 0.25, p = 0.91) or occluded; the eyes' mean mu rises from 0.38 to 0.46 with the
margin.
"""

from configs import studies


def get_config(scale: str = "cpu"):
  """`scale`: the base (configs/studies/__init__.py: cpu, paper or smoke)."""
  config = studies.base(scale)
  config.study = studies.section(
      axes=(("loss.margin", (0.0, 0.01, 0.03, 0.05, 0.1)),), seeds=(0, 1, 2), occlusion=True,
      name="margin")
  return config
