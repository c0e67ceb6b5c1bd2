"""The best accuracy two CPU cores reach in at most two hours on FERPlus.

    python main.py --config=configs/cpu.py --workdir=/tmp/fer_cpu \
        --config.data.manual_dir=../shared/data/ferplus --config.data.tfds_dir=/tmp/tfds_ferplus

A ResNet-18 of width 1/2 (small strided stem) over five 40 px branches, folded into the batch
(measured faster than vmap on CPU), im2col matmul convolutions, soft-label training
(FERPlus' crossentropy mode; evaluation stays majority vote), SGD with warmup and cosine decay.

Measured on this machine (2 cores): RUNTIME_TBD. Expected result: RESULT_TBD.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.tfds_dir = "~/tensorflow_datasets"
  config.data.label_mode = "crossentropy"
  config.data.crops.size = 40
  config.model.depth = 18
  config.model.width = 0.5
  config.model.stem = "small_strided"
  config.model.attention_hidden = 64
  config.model.branch_axis = "fold"
  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_epochs = 7
  config.optimizer.learning_rate = 0.05
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_epochs = 0.3
  config.log_every_steps = 50
  return config
