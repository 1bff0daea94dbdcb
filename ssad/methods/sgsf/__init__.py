"""SGSF: saliency-guided forged anomalies, normal-image guidance and a segmentation network."""

from ssad.methods.sgsf.config import SGSFConfig
from ssad.methods.sgsf.forge import forge_images
from ssad.methods.sgsf.method import SGSF, forged_examples

__all__ = ["SGSF", "SGSFConfig", "forge_images", "forged_examples"]
