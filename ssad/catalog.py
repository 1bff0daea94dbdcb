"""The vocabulary of datasets, categories and models: the one place every other module asks.

A model is named by a dataset and a category, ``mvtec/bottle``, ``kolektorsdd/commutator``,
``oct/retina`` (:class:`ModelId`); a dataset folder's layout and place say which (``ssad.data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssad.errors import WeightsError


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset the leaderboard and the model cards know: its categories, labels and licence."""

    name: str
    label: str
    categories: tuple[str, ...]
    license: str
    credit: str
    hub_id: str | None = None
    category_labels: dict[str, str] = field(default_factory=dict)


_MVTEC_CREDIT = (
    "MVTec AD (Bergmann et al., CVPR 2019), © MVTec Software GmbH, CC BY-NC-SA 4.0: non-commercial use only, and "
    "derived works under the same licence. These weights were trained on its images, so they carry that licence."
)
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "mvtec", "MVTec AD",
            (
                "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
                "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
            ),
            "cc-by-nc-sa-4.0", _MVTEC_CREDIT, "Voxel51/mvtec-ad",
            category_labels={"cable": "cable, this copy's split", "toothbrush": "toothbrush, this copy's split"},
        ),
        DatasetInfo(
            "kolektorsdd", "KolektorSDD", ("commutator",), "cc-by-nc-sa-4.0",
            "KolektorSDD (Tabernik et al., J. Intell. Manuf. 2020), ViCoS Lab, University of Ljubljana, CC BY-NC-SA 4.0. "
            "These weights were trained on its images, so they carry that licence.",
        ),
        DatasetInfo(
            "magnetic_tile", "Magnetic-tile defects", ("tile",), "other",
            "Magnetic-tile defect dataset (Huang, Qiu, Yuan, The Visual Computer 2020); no licence is stated by the "
            "source: cite the paper.",
        ),
        DatasetInfo(
            "oct", "Retinal-OCT", ("retina", "retina-official"), "cc-by-4.0",
            "Retinal OCT scans of Kermany, Zhang, Goldbaum (Mendeley Data rscbjbr9sj, doi:10.17632/rscbjbr9sj.2), "
            "CC BY 4.0. These weights were trained on its scans and are shared under the same licence, with that "
            "attribution.",
            category_labels={"retina": "Kermany OCT, this split", "retina-official": "OCT2017 official split"},
        ),
    )
}
MVTEC_LAYOUT_DATASETS = ("mvtec", "kolektorsdd", "magnetic_tile")
"""Datasets laid out like MVTec AD: a category folder under them is ``<dataset>/<category>``."""
SURFACE_MODELS = frozenset({
    "mvtec/carpet", "mvtec/grid", "mvtec/leather", "mvtec/tile", "mvtec/wood", "kolektorsdd/commutator", "magnetic_tile/tile",
})
"""Models of a textured surface that fills the image, with no object on a background: MVTec AD's five texture
categories (its own split of its fifteen) and the two surface-inspection datasets."""
OCT_MODEL = "oct/retina"
"""What every OCT2017-layout folder is, whatever it is called."""
BENCHMARK_FOLDERS = (
    "mvtec/bottle", "mvtec/cable", "mvtec/pill", "mvtec/toothbrush", "kolektorsdd/commutator", "magnetic_tile/tile", "oct/kermany",
)
"""The dataset folders of ``../shared/data`` that the leaderboard measures every method on (``rebuild``'s default)."""
CUSTOM = "custom"
"""The dataset of a plain folder of normal images (``custom/<folder name>``)."""


@dataclass(frozen=True, order=True)
class ModelId:
    """``dataset/category``: what a model was trained on, and its place in ``weights/`` and on the Hub."""

    dataset: str
    category: str

    @classmethod
    def parse(cls, text: str) -> ModelId:
        """``mvtec/bottle`` as a ModelId; a clear error for anything that is not two plain names."""
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) != 2 or not all(_plain(part) for part in parts):
            raise WeightsError(f"model {text!r} is not of the form dataset/category (e.g. mvtec/bottle)")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.dataset}/{self.category}"


def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and name.replace("_", "").replace("-", "").isalnum()
