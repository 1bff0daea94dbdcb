"""Loaders of the three layouts on synthetic and real data, and predictable image decoding."""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import real_data
from ssad.data import (
    MAX_PIXELS, image_to_tensor, input_shape, load_image, load_image_at_most, make_synthetic_mvtec, median_aspect, open_dataset, resize_image,
)
from ssad.catalog import DATASETS, ModelId
from ssad.errors import DataError, WeightsError


def encode(picture: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_synthetic_category_layout_and_masks(synthetic_category):
    dataset = open_dataset(synthetic_category)
    assert dataset.name == "mvtec/synth" and dataset.has_masks
    assert len(dataset.train) == 24 and len(dataset.test) == 12
    defective = [s for s in dataset.test if s.label == 1]
    assert {s.defect_type for s in defective} == {"blob", "scratch"}
    for sample in dataset.test:
        mask = sample.load_mask((64, 64))
        assert mask.dtype == bool and mask.any() == bool(sample.label)
    # The defect is where the mask says: pixels inside differ from the normal look of the disc.
    blob = next(s for s in defective if s.defect_type == "blob")
    image, mask = blob.load_image(), blob.load_mask((64, 64))
    assert image[mask].mean() < 30 < image[~mask & (image.mean(axis=2) > 60)].mean()


def test_plain_folder_and_oct_layouts(tmp_path):
    picture = Image.fromarray(np.full((16, 20), 100, np.uint8))
    plain = tmp_path / "normals"
    plain.mkdir()
    for i in range(3):
        picture.save(plain / f"{i}.png")
    (plain / "notes.txt").write_text("ignored")
    dataset = open_dataset(plain)
    assert dataset.name == "custom/normals" and len(dataset.train) == 3 and not dataset.test

    oct_root = tmp_path / "scans"
    for split, classes in (("train", ["NORMAL"]), ("test", ["NORMAL", "CNV", "DME"])):
        for name in classes:
            (oct_root / split / name).mkdir(parents=True)
            picture.save(oct_root / split / name / f"{name}-1-1.jpeg")
    dataset = open_dataset(oct_root)
    assert dataset.name == "oct/retina" and not dataset.has_masks
    assert [s.defect_type for s in dataset.train] == ["NORMAL"]
    assert sorted((s.defect_type, s.label) for s in dataset.test) == [("CNV", 1), ("DME", 1), ("NORMAL", 0)]


def test_unknown_layouts_and_missing_folders_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "odd" / "deeper").mkdir(parents=True)
    with pytest.raises(DataError, match="not a dataset folder"):
        open_dataset(tmp_path / "odd")
    (tmp_path / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        open_dataset(tmp_path / "empty")


@pytest.mark.parametrize(
    "mode, make",
    [
        ("L", lambda: Image.fromarray(np.full((10, 12), 204, np.uint8))),
        ("I;16", lambda: Image.fromarray(np.full((10, 12), 204 * 257, np.uint16))),
        ("RGBA", lambda: Image.new("RGBA", (12, 10), (204, 204, 204, 255))),
        ("CMYK", lambda: Image.new("RGB", (12, 10), (204, 204, 204)).convert("CMYK")),
        ("P", lambda: Image.new("RGB", (12, 10), (204, 204, 204)).convert("P")),
    ],
)
def test_every_mode_becomes_the_same_rgb(mode, make):
    pixels = load_image(encode(make(), "TIFF" if mode == "CMYK" else "PNG"))
    assert pixels.dtype == np.uint8 and pixels.shape == (10, 12, 3)
    assert np.abs(pixels.astype(int) - 204).max() <= 1


def test_transparency_exif_and_animation_rules():
    transparent = np.zeros((10, 10, 4), np.uint8)
    transparent[..., :3] = 255
    transparent[:5, :, 3] = 255
    pixels = load_image(encode(Image.fromarray(transparent)))
    assert (pixels[:5] == 255).all() and (pixels[5:] == 0).all()

    wide = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown upright as 10 wide, 30 high
    assert load_image(encode(wide, "JPEG", exif=exif)).shape == (30, 10, 3)

    frames = [Image.new("RGB", (12, 12), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    assert tuple(load_image(gif.getvalue())[0, 0]) == (255, 0, 0)


def test_arrays_of_any_type_are_scaled_by_their_range():
    assert load_image(np.full((9, 9), 65535, np.uint16)).max() == 255
    assert load_image(np.full((9, 9, 3), 0.5, np.float32))[0, 0, 0] == 128
    with pytest.raises(DataError, match="shape"):
        load_image(np.zeros((9, 9, 2)))


def test_bad_images_are_refused_with_the_reason(tmp_path):
    with pytest.raises(DataError, match="not an image"):
        load_image(b"definitely not an image")
    truncated = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_image(truncated[: len(truncated) // 2])
    with pytest.raises(DataError, match="too small"):
        load_image(encode(Image.new("RGB", (1, 1))))
    side = int(MAX_PIXELS**0.5) + 10
    huge = encode(Image.new("L", (side, side)), optimize=False)  # compresses to a few kB: a bomb
    with pytest.raises(DataError, match="above the limit"):
        load_image(huge)
    with pytest.raises(DataError, match="no such image file"):
        load_image(tmp_path / "nothing.png")


def test_a_large_jpeg_is_decoded_reduced_by_the_same_rules(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (15, 20, 3), dtype=np.uint8)).resize((2000, 1500), Image.BICUBIC))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown upright: 1500 wide, 2000 high
    Image.fromarray(smooth).save(tmp_path / "photo.jpg", quality=95, exif=exif)
    whole = load_image(tmp_path / "photo.jpg")
    reduced = load_image_at_most(tmp_path / "photo.jpg", 400)
    assert whole.shape == (2000, 1500, 3) and reduced.shape == (400, 300, 3)
    expected = resize_image(whole, (400, 300)).astype(int)
    assert np.abs(reduced.astype(int) - expected).mean() < 3  # the draft decode sees the same, upright picture
    Image.fromarray(smooth).save(tmp_path / "photo.png")
    assert load_image_at_most(tmp_path / "photo.png", 500).shape == (375, 500, 3)
    assert load_image_at_most(tmp_path / "photo.png", 5000).shape == (1500, 2000, 3)  # never enlarged
    (tmp_path / "broken.jpg").write_bytes((tmp_path / "photo.jpg").read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupt or truncated"):  # load_image's error, not the fast path's
        load_image_at_most(tmp_path / "broken.jpg", 400)


def test_resize_and_tensor():
    pixels = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    resized = resize_image(pixels, (16, 24))
    assert resized.shape == (16, 24, 3)
    tensor = image_to_tensor(resized)
    assert tensor.shape == (3, 16, 24) and 0 <= tensor.min() and tensor.max() <= 1


@pytest.mark.parametrize(
    ("aspect", "expected"), [(1.0, (128, 128)), (205 / 512, (208, 80)), (512 / 205, (80, 208)), (4 / 3, (112, 144))]
)
def test_input_shape_keeps_aspect_and_pixel_count(aspect, expected):
    height, width = input_shape(aspect, 128, 16)
    assert (height, width) == expected
    assert abs(width / height / aspect - 1) < 0.05
    assert abs(height * width / 128**2 - 1) < 0.05


def test_median_aspect_reads_headers_with_exif_rotation(tmp_path):
    Image.new("RGB", (60, 20)).save(tmp_path / "wide.png")
    upright = Image.new("RGB", (60, 20))
    exif = upright.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 20 wide, 60 high
    upright.save(tmp_path / "rotated.jpg", exif=exif)
    Image.new("RGB", (20, 60)).save(tmp_path / "tall.png")
    assert median_aspect([tmp_path / "wide.png", tmp_path / "rotated.jpg", tmp_path / "tall.png"]) == pytest.approx(1 / 3)


def test_generator_is_deterministic(tmp_path):
    a = make_synthetic_mvtec(tmp_path / "a", "x", n_train=2, n_test_per_type=1, size=32, seed=3)
    b = make_synthetic_mvtec(tmp_path / "b", "x", n_train=2, n_test_per_type=1, size=32, seed=3)
    for path in a.rglob("*.png"):
        assert (path.read_bytes() == (b / path.relative_to(a)).read_bytes())


@pytest.mark.slow
def test_real_mvtec_bottle_and_pill():
    for category, n_train, n_test, n_defective in (("bottle", 209, 83, 63), ("pill", 267, 167, 141)):
        dataset = open_dataset(real_data(f"mvtec/{category}"))
        assert dataset.name == f"mvtec/{category}"
        assert (len(dataset.train), len(dataset.test)) == (n_train, n_test)
        defective = [s for s in dataset.test if s.label == 1]
        assert len(defective) == n_defective and all(s.mask_path is not None for s in defective)
        assert defective[0].load_mask((256, 256)).any()
        assert defective[0].load_image().shape == (256, 256, 3)


@pytest.mark.slow
def test_real_oct_split():
    dataset = open_dataset(real_data("oct/kermany"))
    assert dataset.name == "oct/retina" and not dataset.has_masks
    assert len(dataset.train) == 1118
    counts = {t: sum(s.defect_type == t for s in dataset.test) for t in ("NORMAL", "CNV", "DME", "DRUSEN")}
    assert counts == {"NORMAL": 160, "CNV": 279, "DME": 32, "DRUSEN": 32}
    scan = dataset.test[0].load_image()
    assert scan.shape[0] == 248 and (scan[..., 0] == scan[..., 1]).all()  # grey copied to RGB


def test_the_folder_pair_names_the_model(tmp_path):
    for parent, expected in (("kolektorsdd", "kolektorsdd/part"), ("magnetic_tile", "magnetic_tile/part"), ("elsewhere", "mvtec/part")):
        folder = make_synthetic_mvtec(tmp_path / parent, "part", n_train=2, size=32, seed=0)
        assert open_dataset(folder).name == expected
    assert open_dataset(tmp_path / "kolektorsdd" / "part" / ".." / "part").name == "kolektorsdd/part"


def test_model_ids_parse_and_print():
    model = ModelId.parse("kolektorsdd/commutator")
    assert (model.dataset, model.category, str(model)) == ("kolektorsdd", "commutator", "kolektorsdd/commutator")
    for bad in ("bottle", "../etc", "mvtec/../x", "a/b/c", "mvtec/bot tle", "/bottle", None):
        with pytest.raises(WeightsError, match="not of the form dataset/category"):
            ModelId.parse(bad)


@pytest.mark.parametrize(
    "folder, n_train", [("kolektorsdd/commutator", 279), ("magnetic_tile/tile", 762)]
)
def test_real_kolektor_and_magnetic_tile_names(folder, n_train):
    dataset = open_dataset(real_data(folder))
    assert dataset.name == folder and len(dataset.train) == n_train and dataset.has_masks
    assert dataset.dataset in DATASETS and dataset.category in DATASETS[dataset.dataset].categories
