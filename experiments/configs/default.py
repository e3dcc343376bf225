"""Defaults shared by every experiment config (ml_collections), and its schema.

Every field can be overridden on the command line, e.g. `--config.num_epochs=10`.

The schema: the keys of `get_config()` are the keys an experiment config may have
(`experiments/configs/schema.py` checks every config that `experiments/train.py`,
`experiments/reproduce.py` and `experiments/demo.py` run, before anything is trained: a
misspelt key such as `config.learnng_rate = 0.01` is an error naming the key, the
closest known key and the known ones). A config may add keys only inside the free-form
dicts, `FREE_FORM`, whose keys are another object's keywords and are checked there:

  model_kwargs    attributes of the model class of `config.model` (`adacorr.models.MODELS`)
  augment_kwargs  keywords of the augmentation `config.augment` (`adacorr.data.augment`)
  method_kwargs   keywords of the method factory of `config.method` (`adacorr.methods`;
                  AdA's `backbones` specs hold pretraining configs, checked against
                  `experiments/configs/corruption_nets/__init__.py`'s schema)

Values are checked too (`adacorr.train.config_checks.check_classifier_config`): e.g. a
learning rate must be finite and > 0, num_steps >= 1 or -1 (then num_epochs > 0).
"""

import ml_collections

# The dicts of `get_config()` whose keys are free (see the module doc).
FREE_FORM = ("model_kwargs", "augment_kwargs", "method_kwargs")


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Data.
  config.dataset = "cifar10"            # a key of adacorr.data.DATASETS
  config.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir
  # Fashion-MNIST IDX files (default $ADACORR_FASHION_MNIST_DIR, else Debian's path).
  config.fashion_mnist_dir = ml_collections.config_dict.placeholder(str)
  config.download = False               # let tfds download missing data (needs internet)
  config.augment = "pad_crop_flip"      # standard augmentation, on device
  # DeepAugment: directories of stored distorted copies of the training set (written by
  # experiments/make_deepaugment.py); training samples uniformly from clean + copies.
  config.deepaugment_dirs = ()
  config.augment_kwargs = ml_collections.ConfigDict()
  config.eval_center_crop = 0           # > 0: center-crop test images to this size
  config.prefetch = 2                   # batches prepared ahead on a background thread
  # Model.
  config.model = "preact_resnet18"      # a name for adacorr.models.get_model
  config.model_kwargs = ml_collections.ConfigDict()
  config.compute_dtype = "float32"      # or "bfloat16" on GPU/TPU
  # Method: a key of adacorr.methods.FACTORIES ("nominal", "rlat", "ada", ...);
  # method_kwargs: the factory's keywords (paper defaults otherwise; an unknown key is an error).
  config.method = "nominal"
  config.method_kwargs = ml_collections.ConfigDict()
  # Optimisation: SGD with Nesterov momentum, coupled weight decay.
  config.global_batch_size = 128
  config.num_epochs = 150.0
  config.num_steps = -1                 # > 0 overrides num_epochs
  config.learning_rate = 0.1
  config.scale_learning_rate = True     # max(lr * batch / 256, lr)
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = 5e-4
  config.weight_decay_on = "all"        # or "kernels"
  config.clip_grad_value = 0.0          # > 0: clip each gradient element (PAT: 1.0)
  config.schedule = "cosine"            # cosine | piecewise | constant
  config.warmup_epochs = 0.0
  config.piecewise_boundaries = (0.34, 0.67)
  config.piecewise_factor = 0.1
  # Bookkeeping.
  config.seed = 0
  config.log_every_steps = 50
  config.eval_every_steps = -1          # <= 0: once per epoch
  config.eval_batch_size = -1           # <= 0: global_batch_size
  config.checkpoint_every_steps = 1000  # <= 0: only at the end
  config.keep_checkpoints = 3
  config.tensorboard = True
  # Resume a workdir whose recorded config differs (not equal to an unbroken run; an
  # error otherwise, naming the fields).
  config.force_resume = False
  return config
