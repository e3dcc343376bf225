"""The run layer: what reads and writes run directories around the engine.

Reading a workdir's config, loading a trained classifier or corruption net, pretraining
a corruption net on first use, and turning an experiment config into a training method
(`make_method`, `train_and_evaluate`), a run's robustness report
(`adacorr.run.report.robustness_report`), and writing DeepAugment copies of a dataset
(`adacorr.run.deepaugment`). Nothing below this layer reads run directories (see
ARCHITECTURE.md).
"""

from adacorr.run.classifiers import load_classifier
from adacorr.run.corruption_nets import (
    ensure_pretrained, load_backbone, load_corruption_net, read_config)
from adacorr.run.methods import (
    ensure_trained, finished_summary, load_lpips_network, make_method, method_kwargs,
    train_and_evaluate)

__all__ = [
    "ensure_pretrained", "ensure_trained", "finished_summary", "load_backbone",
    "load_classifier", "load_corruption_net", "load_lpips_network", "make_method",
    "method_kwargs", "read_config", "train_and_evaluate",
]
