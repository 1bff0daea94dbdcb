"""Gaussian scoring: Ledoit-Wolf shrunk covariance, stored as a whitening matrix, and Mahalanobis distances.

The whitener W = L^-1 (with covariance = L L^T) is stored instead of the precision matrix: its entries
are square roots of the precision's, so they stay well inside float16 storage range.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf


def fit_gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and whitener [D, D] of [N, D] features, with Ledoit-Wolf shrinkage."""
    samples = features.double().cpu().numpy()
    mean = samples.mean(axis=0)
    covariance, _ = ledoit_wolf(samples - mean, assume_centered=True)
    cholesky = np.linalg.cholesky(covariance + 1e-10 * np.trace(covariance) / len(covariance) * np.eye(len(covariance)))
    whitener = np.linalg.inv(cholesky)
    return torch.from_numpy(mean).float(), torch.from_numpy(whitener).float()


def mahalanobis(features: torch.Tensor, mean: torch.Tensor, whitener: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distances of [..., D] features to a Gaussian given by mean and whitener: [...]."""
    return ((features - mean) @ whitener.T).norm(dim=-1)
