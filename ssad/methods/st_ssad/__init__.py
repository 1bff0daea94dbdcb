"""ST-SSAD: self-tuning self-supervised anomaly detection with differentiable augmentations."""

from ssad.methods.st_ssad.method import STSSAD, STSSADConfig

__all__ = ["STSSAD", "STSSADConfig"]
