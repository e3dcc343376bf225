"""Data augmentation methods that run on device: AugMix (+JSD), ANT's noise generator and
clipping-aware rescaling, DeepAugment's network distortions."""
