"""Training engine: state, optimizer, data-parallel steps, checkpoints, the loop."""

from adacorr.train.checkpoint import Checkpointer, restore_params
from adacorr.train.optim import make_optimizer, make_schedule, scaled_learning_rate
from adacorr.train.state import TrainState, create_train_state
from adacorr.train.step import (Batch, LossFn, cross_entropy_loss_fn, make_eval_step,
                                make_train_step)

# The loop imports adacorr.data (and, lazily, TensorFlow Datasets); import it explicitly:
#   from adacorr.train.loop import train_and_evaluate
