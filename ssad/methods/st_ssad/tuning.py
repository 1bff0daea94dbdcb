"""ST-SSAD's tuning rule: a compass search on the augmentation strengths, and loss landscapes to draw it on.

A landscape is the validation loss on a grid of strengths, with the same images and the same augmentation
randomness at every point, so that neighbouring points differ only by the strengths. The rule (our
choice; the paper tunes by gradient from a candidate chosen by a score-variance heuristic, and its
step counts are not given):

* the loss of a strength is read *as trained there*: through a detector trained a few steps at that
  strength from one shared warm-up (a coarse landscape of it is stored and drawn);
* from the warm-up's strengths (the middle of each range), every ``tune_every`` detector steps, one poll
  of a compass search on that loss (the paper's alternating updates; the paper follows the gradient instead).

Why the loss is read as trained there: a frozen detector's landscape is lowest away from the strengths it
was trained at, because training pushes exactly those augmented embeddings away from the normals
(measured on pill, 64 steps: after training at the largest area, the frozen landscape's minimum moved
to area strength 0.25, and at the end to the lower corner). Followed through the detector being trained,
the gradient always pointed away from where the detector was: the strengths of the models trained that
way slid into the bounds while their loss rose. Read from a shared warm-up, the loss of each strength
includes what a detector learns there, and it does not move while the detector trains, so the search can
reach its minimum and the loss falls along the way.

Why a compass search and not the gradient: the loss as trained there is rough at small scales (every ReLU
that switches during the copy's steps makes a small jump in it). Its exact gradient, with the copy's steps
unrolled into the graph, did not lower it: on bottle the loss rose from 0.58 to 1.58 along that gradient
(docs/st-ssad-tuning.md). A poll at a step of a quarter of the range (halved down to 1/64) reads the
loss's trend, and a move is made only where the loss is lower, so the loss falls by construction and the
search ends in a minimum at the resolution of its last step. It starts in the middle rather than at the coarse landscape's lowest point,
so that what it finds is its own: started there, it found no lower point on bottle and never moved.
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


def strength_axis(points: int, centred: bool = False) -> tuple[float, ...]:
    """``points`` strengths spread evenly over [0, 1]: bounds included, or (``centred``) the centres of ``points`` equal cells."""
    values = (np.arange(points) + 0.5) / points if centred else np.linspace(0.0, 1.0, points)
    return tuple(round(float(v), 4) for v in values)


def evaluate_landscape(
    augmentation: LearnableAugmentation, loss_at: Callable[[], float], points: int, centred: bool = False
) -> Landscape:
    """The loss ``loss_at()`` at every grid point of the strengths; the strengths are restored afterwards."""
    axis = strength_axis(points, centred)
    saved = augmentation.logits.detach().clone()
    losses = np.zeros((points,) * len(augmentation.names))
    for index in itertools.product(range(points), repeat=len(augmentation.names)):
        augmentation.set_strengths([axis[i] for i in index])
        losses[index] = loss_at()
    with torch.no_grad():
        augmentation.logits.copy_(saved)
    return Landscape((axis,) * len(augmentation.names), losses)


class CompassSearch:
    """Compass search on the strengths, from where they are: poll one step either way along each parameter, move to
    the lowest point polled when it beats the current one, else halve the step (down to 1/``2**HALVINGS`` of the
    first). Records the path, the loss at the start and after each poll, and each poll's step.

    The loss must be a deterministic function of the strengths (fixed images, batches and randomness), so a
    move always lowers it and every point's loss is read once.
    """

    HALVINGS = 4
    """At 1/16 of the first step (1/64 of the range by default) the trained-there loss's jumps outweigh its trend."""

    def __init__(self, augmentation: LearnableAugmentation, loss_at: Callable[[], float], step: float):
        self.augmentation, self.loss_at, self.step_size = augmentation, loss_at, step
        self.min_step = step / 2**self.HALVINGS
        self.known: dict[tuple[float, ...], float] = {}
        self.trajectory: list[list[float]] = [self.strengths()]
        self.losses: list[float] = []
        self.steps: list[float] = []

    def strengths(self) -> list[float]:
        return [round(v, 5) for v in self.augmentation.strengths.tolist()]

    def remember(self, landscape: Landscape) -> None:
        """Keep a landscape's readings, so that a poll on one of its points does not read the loss again."""
        for index in itertools.product(*(range(len(axis)) for axis in landscape.axes)):
            self.known[tuple(round(landscape.axes[i][k], 5) for i, k in enumerate(index))] = float(landscape.losses[index])

    def loss(self, strengths: tuple[float, ...]) -> float:
        """The loss at given strengths (read once, then remembered); the strengths are left there."""
        key = tuple(round(v, 5) for v in strengths)
        self.augmentation.set_strengths(list(key))
        if key not in self.known:
            self.known[key] = self.loss_at()
        return self.known[key]

    def poll(self) -> float:
        """One poll around the current strengths; returns the loss where the search stands afterwards."""
        here = tuple(self.strengths())
        best, best_loss = here, self.loss(here)
        if not self.losses:
            self.losses.append(best_loss)
        for index, sign in itertools.product(range(len(here)), (-1, 1)):
            moved = list(here)
            moved[index] = here[index] + sign * self.step_size
            if 0.0 <= moved[index] <= 1.0:
                candidate_loss = self.loss(tuple(moved))
                if candidate_loss < best_loss:
                    best, best_loss = tuple(moved), candidate_loss
        self.steps.append(self.step_size)
        if best == here:
            self.step_size = max(self.step_size / 2, self.min_step)
        self.augmentation.set_strengths(list(best))
        self.losses.append(best_loss)
        self.trajectory.append(self.strengths())
        return best_loss


def first_and_last_sixth(losses: list[float]) -> tuple[float, float]:
    """Means of the first and the last sixth of a list of losses (at least one value each)."""
    share = max(1, len(losses) // 6)
    return float(np.mean(losses[:share])), float(np.mean(losses[-share:]))
