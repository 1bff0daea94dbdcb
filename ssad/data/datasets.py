"""The three dataset layouts, told apart by their folders.

* MVTec AD category: ``train/good``, ``test/<type>``, ``ground_truth/<type>/<stem>_mask.png``; model
  ``<parent folder>/<folder>`` when the parent names a dataset of that layout (``.../kolektorsdd/commutator``
  is ``kolektorsdd/commutator``), else ``mvtec/<folder>``.
* OCT2017: class folders ``NORMAL``, ``CNV``, ``DME``, ``DRUSEN`` under ``train/`` and ``test/``;
  training uses ``train/NORMAL`` only, evaluation is NORMAL against any disease; model ``oct/retina``.
  Class folders directly in the root are accepted too: ``NORMAL`` then serves for training *and* the
  whole folder for testing, which is fine for a demo and not a fair evaluation (say so when reporting).
* A plain folder of normal images (training only); model ``custom/<folder name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssad.catalog import CUSTOM, MVTEC_LAYOUT_DATASETS, OCT_MODEL, ModelId
from ssad.data.images import load_image, load_mask
from ssad.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
OCT_NORMAL = "NORMAL"
OCT_CLASSES = (OCT_NORMAL, "CNV", "DME", "DRUSEN")


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: label 0 = normal, 1 = anomalous; ``defect_type`` is its test folder."""

    path: Path
    label: int
    defect_type: str
    mask_path: Path | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def load_image(self) -> np.ndarray:
        return load_image(self.path)

    def load_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Ground truth as bool HxW at ``shape``; all False for normal images."""
        return load_mask(self.mask_path, shape)


@dataclass(frozen=True)
class AnomalyDataset:
    """A dataset folder: normal training samples and (possibly no) labelled test samples."""

    root: Path
    dataset: str  # "mvtec", "oct" or "custom"
    category: str
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]

    @property
    def name(self) -> str:
        """The model this folder maps to: ``mvtec/bottle``, ``oct/retina``, ``custom/<folder>``."""
        return str(ModelId(self.dataset, self.category))

    @property
    def has_masks(self) -> bool:
        """Whether pixel ground truth exists (MVTec, synthetic), so pixel metrics can be computed."""
        return any(sample.mask_path is not None for sample in self.test)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _subfolders(folder: Path) -> dict[str, Path]:
    return {p.name.upper(): p for p in sorted(folder.iterdir()) if p.is_dir()} if folder.is_dir() else {}


def _mvtec(root: Path) -> AnomalyDataset:
    train = tuple(Sample(p, 0, "good") for p in image_files(root / "train" / "good"))
    test = []
    for type_folder in sorted(p for p in (root / "test").glob("*") if p.is_dir()):
        defect = type_folder.name
        for path in image_files(type_folder):
            if defect == "good":
                test.append(Sample(path, 0, defect))
                continue
            mask = root / "ground_truth" / defect / f"{path.stem}_mask.png"
            test.append(Sample(path, 1, defect, mask if mask.is_file() else None))
    dataset = root.resolve().parent.name if root.resolve().parent.name in MVTEC_LAYOUT_DATASETS else "mvtec"
    return AnomalyDataset(root, dataset, root.name, train, tuple(test))


def _oct_samples(folder: Path) -> list[Sample]:
    samples = []
    for name, class_folder in _subfolders(folder).items():
        if name in OCT_CLASSES:
            samples += [Sample(p, int(name != OCT_NORMAL), name) for p in image_files(class_folder)]
    return samples


def _oct(root: Path) -> AnomalyDataset:
    if (root / "train").is_dir() or (root / "test").is_dir():
        train_classes = _subfolders(root / "train")
        train = [Sample(p, 0, OCT_NORMAL) for p in image_files(train_classes[OCT_NORMAL])] if OCT_NORMAL in train_classes else []
        test = _oct_samples(root / "test")
    else:
        test = _oct_samples(root)
        train = [s for s in test if s.label == 0]
    return AnomalyDataset(root, *OCT_MODEL.split("/"), tuple(train), tuple(test))


def _is_oct(root: Path) -> bool:
    return any(OCT_NORMAL in _subfolders(folder) for folder in (root, root / "train", root / "test"))


def open_dataset(path: str | Path) -> AnomalyDataset:
    """Open a dataset folder of any of the three layouts; a clear error when it is none of them."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if (root / "train" / "good").is_dir():
        dataset = _mvtec(root)
    elif _is_oct(root):
        dataset = _oct(root)
    elif image_files(root):
        dataset = AnomalyDataset(root, CUSTOM, root.name, tuple(Sample(p, 0, "good") for p in image_files(root)), ())
    else:
        raise DataError(
            f"{root}: not a dataset folder (expected an MVTec category with train/good, an OCT2017 folder "
            f"with NORMAL/CNV/DME/DRUSEN, or a folder of images)"
        )
    if not dataset.train and not dataset.test:
        raise DataError(f"{root}: the {dataset.dataset} layout was found but it holds no images")
    return dataset
