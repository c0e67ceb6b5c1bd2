"""The paper's Figure 3: accuracy against the constraint's margin, over three seeds.

    python main.py --mode=study --config=configs/studies/margin.py --workdir=/tmp/fer_margin \
        --config.data.manual_dir=../shared/data/ferplus

Margins 0 (the hinge still asks mu_eyes >= mu_occluded), 0.01, 0.03 (the paper's), 0.05 and
0.1 (the paper's figure has 0.07 in place of 0), seeds 0, 1, 2: 15 runs of configs/cpu.py cut to
3 epochs (`configs/studies/__init__.py`), each in WORKDIR/loss.margin=<m>/seed=<s>/.
WORKDIR/study.png is the figure (final validation accuracy against the margin, mean +- std over
the seeds); study.md and study.csv hold the numbers, mean mu per branch included. The same
command continues the study after a stop; `--config.study.occlusion=True` later adds each
finished run's accuracy under the occluders of `--mode=occlusion` without retraining it.

Runtime, estimated from the per-step rate (not measured as a study): cpu.py's recipe ran 50
steps in about 23 s at batch 64 on two cores, with a ~20 s evaluation per epoch (the first
epochs of a cpu.py run, 2026-12-02), so 3 epochs (1,308 steps) take about 10 min, about 12 min
a run with its evaluations and start-up: about 3 h for the 15 runs.
Expected result: not yet run. The paper reports the best accuracy at 0.03, lower for larger
margins (the eyes over-weighted) and smaller ones (every branch weighted alike); at 3 epochs the
spread between seeds may be as large as the effect.
"""

from configs import studies


def get_config():
  config = studies.small_cpu()
  config.study = studies.section(
      axes=(("loss.margin", (0.0, 0.01, 0.03, 0.05, 0.1)),), seeds=(0, 1, 2))
  return config
