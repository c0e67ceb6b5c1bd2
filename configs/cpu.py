"""The fast CPU recipe: 80% validation accuracy in under 45 minutes on two CPU cores.

    python main.py --config=configs/cpu.py --workdir=/tmp/fer_cpu \
        --config.data.manual_dir=../shared/data/ferplus

A ResNet-10 of width 1/2 (small strided stem) over five 32 px branches, of which the eyes, nose
and mouth are resized to 16 px inside the model (`model.part_size`: the backbone runs on the
two whole-face crops at 32 px and on the three part crops at 16 px, about half the
convolutions' pixels), folded into the batch (measured faster than vmap on CPU), stride-1 3x3
convolutions in the `shifted` lowering (the rest as im2col matmuls), soft-label training
(FERPlus' crossentropy mode; evaluation stays majority vote), SGD with warmup and cosine decay
over 20 epochs, the training split resident in memory (`data.source="memory"`: no host
pipeline in the loop), and evaluation that averages each face's probabilities with its mirror
image's (`eval_flip`). `configs/cpu_long.py` spends about two hours on a ResNet-18.

Measured on this machine (2 cores with AVX-512, 2026-12-06, nothing else running), under
`/usr/bin/time -v`: 20 epochs = 8,720 steps of 64 faces at about 3.9 steps/s (250 faces/s),
with a ~17 s validation pass (with its mirror images) and a checkpoint per epoch: 38 min 50 s
wall clock end to end, peak resident memory 1.7 GiB, after a one-off ~3 min `--mode=prepare`.
Majority-vote validation accuracy (3,191 faces) by epoch: 59.8, 63.5, 68.5, 70.8, 71.3, 73.6,
74.9, 74.2, 75.0, 77.4, 77.0, 78.2, 78.4, 80.2, 78.3, 80.9, 80.5, 81.3, 81.0, **81.35 (final,
step 8,720)**. One seed. What was tried on the way (the same recipe at 10 and 16 epochs, a
ResNet-18, progressive resizing, weight averages, bfloat16) is in bench/RESULTS.md ("Time to
accuracy"). The machine matters: on an AVX2 machine without AVX-512 the step is about 25%
slower, so this config takes about 50 minutes there.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.tfds_dir = "~/tensorflow_datasets"
  config.data.label_mode = "crossentropy"
  config.data.source = "memory"
  config.data.crops.size = 32
  config.model.depth = 10
  config.model.width = 0.5
  config.model.stem = "small_strided"
  config.model.part_size = 16
  config.model.attention_hidden = 64
  config.lowering.branch_axis = "fold"
  config.lowering.conv_impl = "shifted"
  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_epochs = 20
  config.optimizer.learning_rate = 0.05
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_epochs = 0.3
  config.eval_flip = True
  config.log_every_steps = 50
  return config
