"""Configs for pretraining the AdA corruption nets (`experiments/train_corruption_net.py`).

Each module has `get_config()`; every field can be overridden on the command line, e.g.
`--config.num_epochs=2`. `get_base_config()` holds the shared defaults.

  fashion_mnist_edsr_tiny  EDSR(features=8, num_blocks=1): the AdA quickstart's net (~1 min)
  fashion_mnist_edsr       EDSR(features=16, num_blocks=2)               (quickstart)
  fashion_mnist_cae        a narrow CAE                                  (quickstart)
  fashion_mnist_vqvae      a small VQ-VAE (num_hiddens=32)               (quickstart)
  fashion_mnist_unet       the paper's U-Net (58k params at 3 channels)  (quickstart)
  cifar10_vqvae, cifar10_unet   the paper's nets and hyperparameters (App. E.6)
  cifar10_edsr, cifar10_cae     the full nets (the paper uses DeepAugment's released
                                weights; these configs train them ourselves)

The schema: the keys of `get_base_config()` are the keys a corruption-net config may have
(`experiments/configs/schema.py` checks every config `experiments/train_corruption_net.py`
runs, and the `pretrain` configs of AdA's backbone specs, before anything is trained; a
misspelt key is an error with a "did you mean"). A config may add keys only inside the
free-form dicts, `FREE_FORM`: `net_kwargs` (attributes of the net class of `config.net`,
`adacorr.models.corruption.CORRUPTION_NETS`) and `augment_kwargs` (keywords of the
augmentation `config.augment`), each checked against its class or function.
"""

import ml_collections

# The dicts of `get_base_config()` whose keys are free (see the module doc).
FREE_FORM = ("net_kwargs", "augment_kwargs")

CONFIGS = ("fashion_mnist_edsr_tiny", "fashion_mnist_edsr", "fashion_mnist_cae",
           "fashion_mnist_vqvae", "fashion_mnist_unet", "cifar10_vqvae", "cifar10_unet",
           "cifar10_edsr", "cifar10_cae", "imagenet100_edsr", "imagenet100_cae")


def get_base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every corruption-net config."""
  config = ml_collections.ConfigDict()
  config.name = ""                      # the config's module name (for messages only)
  # Net: a key of adacorr.models.corruption.CORRUPTION_NETS and its constructor kwargs.
  config.net = "edsr"
  config.net_kwargs = ml_collections.ConfigDict()
  # Module paths whose parameters start at zero (e.g. ("head",): the U-Net's output conv,
  # so that it does not start with a saturated, gradient-free output clip).
  config.zero_init = ()
  # Data.
  config.dataset = "cifar10"            # a key of adacorr.data.DATASETS
  config.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir
  # Fashion-MNIST IDX files (default $ADACORR_FASHION_MNIST_DIR, else Debian's path).
  config.fashion_mnist_dir = ml_collections.config_dict.placeholder(str)
  config.download = False               # let tfds download missing data (needs internet)
  config.augment = "flip"               # 'none' | 'flip' | 'pad_crop_flip' ...
  config.augment_kwargs = ml_collections.ConfigDict()
  config.prefetch = 2
  # Optimisation: Adam (optax), schedule from adacorr.train.optim.make_schedule.
  config.global_batch_size = 128
  config.num_epochs = 90.0
  config.num_steps = -1                 # > 0 overrides num_epochs
  config.learning_rate = 3e-3
  config.scale_learning_rate = False    # True: max(lr * batch / 256, lr)
  config.schedule = "cosine"            # cosine | piecewise | constant
  config.warmup_epochs = 0.0
  config.piecewise_boundaries = (0.34, 0.67)
  config.piecewise_factor = 0.1
  # Bookkeeping.
  config.seed = 0
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1000  # <= 0: only at the end
  config.keep_checkpoints = 2
  config.eval_every_epochs = -1.0       # <= 0: only at the end
  config.num_eval_examples = -1         # <= 0: the whole test split
  config.eval_batch_size = 512
  config.tensorboard = False
  return config


def get_fashion_mnist_config() -> ml_collections.ConfigDict:
  """The base config on Fashion-MNIST, for the CPU quickstarts."""
  config = get_base_config()
  config.dataset = "fashion_mnist"
  config.checkpoint_every_steps = 500
  config.num_eval_examples = 2000
  return config


def get_cifar10_config() -> ml_collections.ConfigDict:
  """The base config on CIFAR-10, for the paper-size runs."""
  config = get_base_config()
  config.dataset = "cifar10"
  config.eval_every_epochs = 10.0
  config.eval_batch_size = 1024
  return config

