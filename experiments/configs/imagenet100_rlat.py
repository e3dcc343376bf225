"""RLAT (Kireev et al. 2022) on ImageNet-100: the paper's PreAct ResNet-18 with the RLAT
reference code's ImageNet stem (`PreActResNet18_I`: 7x7 stride-2 conv, padding 1, BN,
ReLU, 3x3 stride-2 max pool; RLAT perturbs the conv's output, see
`adacorr.models.preact_resnet`), eps 0.02, l2, all six points (input, stem conv, 4 stages).

Sources: eps 0.02 from the paper's Table 2 ImageNet-100 row and the reference's
`full_evaluation_results/imagenet100/rlat-eps=0.02-imagenet100.csv`; model and
perturbation points from the paper (Sec. 5, "PreAct ResNet-18") and the reference's
models.py. The training schedule (SGD Nesterov, lr 0.1 linearly scaled, cosine, wd 5e-4,
90 epochs, 128x128 crops of our 144x144 ImageNet-100) is our ImageNet-100 nominal one
(`imagenet100_resnet50`): the paper does not state an ImageNet-100 schedule.
"""

from experiments.configs import imagenet100_resnet50


def get_config():
  config = imagenet100_resnet50.get_config()
  config.model = "preact_resnet18"
  config.model_kwargs.stem = "imagenet"
  config.method = "rlat"
  config.method_kwargs.eps = 0.02
  config.method_kwargs.norm = "l2"
  return config
