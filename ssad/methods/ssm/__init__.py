"""SSM: Self-Supervised Masking with progressive mask refinement."""

from ssad.methods.ssm.method import SSM, SSMConfig

__all__ = ["SSM", "SSMConfig"]
