"""The training engine: state, optimizer, data-parallel steps, checkpoints, the one loop.

`loop.run(task, ...)` trains a `loop.Task`; `loop.train_and_evaluate` builds the
classifier task and `corruption_nets.pretrain` the corruption-net one. Methods come
from `adacorr.methods`; from a config, `adacorr.run.make_method` builds them.
"""

from adacorr.core.types import Batch, LossFn, StatefulLoss
from adacorr.train.checkpoint import Checkpointer, restore_params
from adacorr.train.optim import make_optimizer, make_schedule, scaled_learning_rate
from adacorr.train.state import TrainState, create_train_state
from adacorr.train.step import make_eval_step, make_train_step

# The loop imports adacorr.data (and, lazily, TensorFlow Datasets); import it explicitly:
#   from adacorr.train.loop import train_and_evaluate
