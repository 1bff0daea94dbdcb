"""SGSF: saliency-guided forged anomalies, normal-image guidance and a segmentation network."""

from ssad.methods.sgsf.method import SGSF, SGSFConfig, forged_examples

__all__ = ["SGSF", "SGSFConfig", "forged_examples"]
