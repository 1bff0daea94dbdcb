"""ST-SSAD's tuning rule: gradient steps on the augmentation strengths, down a landscape that holds still.

A landscape is the validation loss on a grid of strengths, with the same images and the same augmentation
randomness at every point, so that neighbouring points differ only by the strengths. The tuning follows
the gradient of exactly that function (the same images and randomness at every step, with Adam on the
strength logits), so its path can be drawn on the landscape and ends in one of its minima.

The loss is read through the detector as it was initialised (its seed's random convolutional features),
frozen, not through the detector being trained (our choice; the paper reads the current detector, and
does not say what keeps the tuning from chasing it). Measured on all seven committed models trained the
other way: the frozen landscape of a trained detector is lowest where the detector has learnt least
(the smallest area on bottle, cable, pill, KolektorSDD and OCT), because training pushes exactly the
augmented embeddings it sees away from every real image; so the strengths slid into the bounds and the
loss rose while the detector trained. The initial network's landscape does not move while the detector
trains; on bottle, pill and cable it is lowest inside the area range (``docs/st-ssad-tuning.md``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ssad.methods.st_ssad.augment import LearnableAugmentation


@dataclass(frozen=True)
class Landscape:
    """The validation loss at every point of a grid of strengths: ``losses`` has one axis per parameter."""

    axes: tuple[tuple[float, ...], ...]
    losses: np.ndarray

    def minimum(self) -> tuple[tuple[float, ...], float]:
        """The strengths of the grid's lowest point and its loss."""
        index = np.unravel_index(int(np.argmin(self.losses)), self.losses.shape)
        return tuple(self.axes[i][k] for i, k in enumerate(index)), float(self.losses[index])

    def to_state(self, names: tuple[str, ...], physical_axes: dict[str, list[float]]) -> dict[str, Any]:
        """The landscape as JSON values for ``config.json``."""
        return {
            "names": list(names),
            "strengths": [list(axis) for axis in self.axes],
            "physical": physical_axes,
            "loss": np.round(self.losses, 5).tolist(),
        }


def strength_axis(points: int) -> tuple[float, ...]:
    """``points`` strengths spread evenly over [0, 1], bounds included."""
    return tuple(round(float(v), 4) for v in np.linspace(0.0, 1.0, points))


def evaluate_landscape(augmentation: LearnableAugmentation, loss_at: Callable[[], float], points: int) -> Landscape:
    """The loss ``loss_at()`` at every grid point of the strengths; the strengths are restored afterwards."""
    axis = strength_axis(points)
    saved = augmentation.logits.detach().clone()
    losses = np.zeros((points,) * len(augmentation.names))
    for index in itertools.product(range(points), repeat=len(augmentation.names)):
        augmentation.set_strengths([axis[i] for i in index])
        losses[index] = loss_at()
    with torch.no_grad():
        augmentation.logits.copy_(saved)
    return Landscape((axis,) * len(augmentation.names), losses)


class Tuner:
    """Adam on the strength logits; records the trajectory of strengths and the loss at each step."""

    def __init__(self, augmentation: LearnableAugmentation, lr: float):
        self.augmentation = augmentation
        self.optimizer = torch.optim.Adam(augmentation.parameters(), lr=lr)
        self.trajectory: list[list[float]] = [self.strengths()]
        self.losses: list[float] = []

    def strengths(self) -> list[float]:
        return [round(v, 5) for v in self.augmentation.strengths.tolist()]

    def step(self, loss: torch.Tensor) -> float:
        """One gradient step on the strengths from a validation loss that depends on them."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())
        self.trajectory.append(self.strengths())
        return self.losses[-1]


def first_and_last_sixth(losses: list[float]) -> tuple[float, float]:
    """Means of the first and the last sixth of a list of losses (at least one value each)."""
    share = max(1, len(losses) // 6)
    return float(np.mean(losses[:share])), float(np.mean(losses[-share:]))
