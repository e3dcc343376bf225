"""The run layer: what reads and writes run directories around the engine.

Reading a workdir's config, loading a trained classifier or corruption net, making sure
a pretrained net exists, and turning an experiment config into a training method.
Nothing below this layer does file I/O on run directories (see ARCHITECTURE.md).
"""

from adacorr.run.classifiers import load_classifier

__all__ = ["load_classifier"]
