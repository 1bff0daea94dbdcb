"""ST-SSAD's tuning rule: gradient steps on the augmentation strengths, restarted from a loss landscape.

A landscape is the validation loss on a grid of strengths, with the same images and the same augmentation
randomness at every point, so that neighbouring points differ only by the strengths. The rule (our
choice; the paper tunes by gradient from a candidate chosen by a score-variance heuristic, and its
step counts are not given):

* the start is the lowest point of a coarse landscape in which the loss at each point is read from a
  detector trained a few steps *at that point* (from one shared warm-up);
* then, every ``tune_every`` detector steps, one Adam step on the strength logits follows the gradient
  of the validation loss of the frozen detector on fresh random batches (the paper's alternating updates).

Why the start trains at each point: a frozen detector's landscape is lowest away from the strengths it
was trained at, because training pushes exactly those augmented embeddings away from the normals
(measured on pill, 64 steps: after training at the largest area, the frozen landscape's minimum moved
to area strength 0.25, and at the end to the lower corner). A landscape of one frozen detector therefore always
points away from where the detector is, and the gradient of the alternating updates carries the same
bias; it is why the committed models' strengths slid into the lower bounds and their loss rose.
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
    """Adam on the strength logits, with restarts at a landscape's minimum; records the trajectory."""

    def __init__(self, augmentation: LearnableAugmentation, lr: float):
        self.augmentation, self.lr = augmentation, lr
        self.optimizer = torch.optim.Adam(augmentation.parameters(), lr=lr)
        self.trajectory: list[list[float]] = [self.strengths()]
        self.losses: list[float] = []
        self.restarts: list[dict[str, Any]] = []

    def strengths(self) -> list[float]:
        return [round(v, 5) for v in self.augmentation.strengths.tolist()]

    def restart_if_lower(self, landscape: Landscape, current_loss: float, step: int) -> bool:
        """Move to the landscape's minimum when it beats ``current_loss``; True when the strengths moved."""
        best, best_loss = landscape.minimum()
        moved = best_loss < current_loss
        self.restarts.append({"step": step, "grid_minimum": list(best), "grid_loss": round(best_loss, 5),
                              "current_loss": round(current_loss, 5), "moved": moved})
        if moved:
            self.augmentation.set_strengths(best)
            self.optimizer = torch.optim.Adam(self.augmentation.parameters(), lr=self.lr)
            self.trajectory.append(self.strengths())
        return moved

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
