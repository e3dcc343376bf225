"""The bottom layer: types, input checks, keys and tree helpers shared by every layer.

It imports nothing else of adacorr (see ARCHITECTURE.md).
"""

from adacorr.core.keys import per_example_keys
from adacorr.core.types import AugmentFn, Batch, LossFn, PyTree, StatefulLoss

__all__ = ["AugmentFn", "Batch", "LossFn", "PyTree", "StatefulLoss", "per_example_keys"]
