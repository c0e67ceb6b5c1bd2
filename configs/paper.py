"""The paper's recipe taken literally: ResNet-50, lr 0.01 multiplied by 0.1 after every epoch,
30 epochs, margin 0.03 (METHOD.md section 6).

    python main.py --config=configs/paper.py --workdir=/tmp/fer_paper \
        --config.data.manual_dir=../shared/data/ferplus

As printed, the schedule leaves a learning rate of 1e-5 after three epochs and 1e-31 at the
end: the network stops learning early. `configs/default.py` keeps everything else and decays
by 10x every 10 epochs instead. Runtime: an accelerator job (not run here, no accelerator).
Expected result: below default.py's, for the reason above.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.optimizer.schedule = "paper_literal"
  return config
