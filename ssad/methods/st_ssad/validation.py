"""ST-SSAD's unsupervised validation loss: how well normal + augmented embeddings explain unlabelled data.

The data it compares: ``normal`` are embeddings of normals the detector was *not* trained on (the
held-out training normals), ``augmented`` the embeddings of the same images augmented, ``validation``
those of the unlabelled validation images. Training normals are not used as the reference: the
detector has fitted them, so a faint augmentation of a training normal looks like an unseen normal
and the loss preferred the faintest augmentation (measured on the committed bottle model: with
training normals the loss at the lower area bound was 0.47 against 0.34 at the minimum; with held-out
normals 0.71 against 0.51, the minimum at 1/6 of both ranges).

All embeddings are centred together and scaled by sqrt(N) / ||Z_c||_F (the paper's Eq. 2 factor), so
their mean squared norm is 1: the loss cannot be lowered by shrinking or inflating the embedding space.

Aggregation (our choice; the paper's exact formula is not available): a symmetric mean distance
between the two reference means (normal, augmented) and the validation set,

    L = mean_v min_k ||z_v - mu_k||^2  +  mean_k min_v ||mu_k - z_v||^2,

the first term charges each validation embedding its distance to the nearer mean (every validation
image should look normal or augmented), the second charges each mean its distance to the nearest
validation embedding (the augmentation should look like something that occurs). Neither term depends
on the share of anomalies in the validation set (the "ratio invariance" the authors claim). Without
the second term an augmentation that the detector embeds far away from everything lowers the loss
by inflating the scale, so tuning drifts to the easiest (largest) augmentation.

Measured alternatives that we did not keep (frozen committed detectors, 7 x 7 strength grids): a
Gaussian-kernel MMD between the validation set and the best mixture of normals and augmented copies,
relative to normals alone, and the same with an energy distance or with nearest means only. On bottle
and pill their landscapes were flat to 1 % (the augmented embeddings lie away from every validation
embedding), so they give the tuning no direction.
"""

from __future__ import annotations

import torch


def centred_and_scaled(embeddings: torch.Tensor) -> torch.Tensor:
    """Centre [N, D] embeddings and scale them to mean squared norm 1 (total pairwise squared distance N^2)."""
    centred = embeddings - embeddings.mean(dim=0, keepdim=True)
    return centred * (embeddings.shape[0] ** 0.5 / centred.norm().clamp_min(1e-12))


def mean_distance_loss(normal: torch.Tensor, augmented: torch.Tensor, validation: torch.Tensor) -> torch.Tensor:
    """Symmetric mean squared distance between the normal and augmented means and the validation embeddings."""
    scaled = centred_and_scaled(torch.cat([normal, augmented, validation]))
    normal_part, augmented_part, validation_part = scaled.split([len(normal), len(augmented), len(validation)])
    centres = torch.stack([normal_part.mean(dim=0), augmented_part.mean(dim=0)])
    distances = torch.cdist(validation_part, centres).pow(2)  # [V, 2]
    return distances.min(dim=1).values.mean() + distances.min(dim=0).values.mean()
