"""The fast CPU recipe: as much accuracy as two CPU cores reach in about 40 minutes.

    python main.py --config=configs/cpu.py --workdir=/tmp/fer_cpu \
        --config.data.manual_dir=../shared/data/ferplus

A ResNet-10 of width 1/2 (small strided stem) over five 32 px branches, folded into the batch
(measured faster than vmap on CPU), stride-1 3x3 convolutions in the `shifted` lowering (the
rest as im2col matmuls), soft-label training (FERPlus' crossentropy mode; evaluation stays
majority vote), SGD with warmup and cosine decay over 10 epochs, the training split resident in
memory (`data.source="memory"`: no host pipeline in the loop), and evaluation that averages each
face's probabilities with its mirror image's (`eval_flip`). `configs/cpu_long.py` spends two
hours on the ResNet-18 of the same shape.

Measured on this machine (2 cores, 2026-12-02, nothing else running), under `/usr/bin/time -v`:
10 epochs = 4,360 steps of 64 faces at about 2.1 steps/s (134 faces/s), with a ~20 s validation
pass (with its mirror images) and a checkpoint per epoch: 38 min 08 s wall clock end to end,
peak resident memory 1.9 GiB, after a one-off ~3 min `--mode=prepare`. That run also kept weight
moving averages (`optimizer.ema_decay=0.998`), which change no training step, and evaluated
them: majority-vote validation accuracy (3,191 faces) by epoch 59.5, 66.6, 70.4, 72.9, 74.6,
75.8, 77.1, 77.8, 78.2, 78.4. The final checkpoint's own weights, as this config evaluates them
(`--mode=eval --config.optimizer.ema_decay=0.998 --config.eval_ema=False` on that run):
**78.7% final** (77.6% without the mirror average). One seed.

Not reached: the 80.0% final in 45 minutes that issue 16 asks for. The recipe is underfitting
(training accuracy 0.77 at the end); what was tried, each against the previous recipe in the
same conditions, is in bench/RESULTS.md ("Time to accuracy"). The machine matters: on an AVX2
machine without AVX-512 (a later session the same day) the step is about 25% slower, ten epochs
take about 48 minutes, and progressive resizing (`data.train_sizes`, most epochs at 24 px) did
not buy the time back (75.2% final, bench/RESULTS.md R3).
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
  config.model.attention_hidden = 64
  config.lowering.branch_axis = "fold"
  config.lowering.conv_impl = "shifted"
  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_epochs = 10
  config.optimizer.learning_rate = 0.05
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_epochs = 0.3
  config.eval_flip = True
  config.log_every_steps = 50
  return config
