"""Tests for seres_jax.data.folders: the image-folder source's order and labels (torchvision's
rules), and every bad input it refuses before training, on real photographs."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest

from seres_jax.data import (
    IMAGE_SUFFIXES,
    DataError,
    ImageFolderSource,
    find_classes,
    image_problem,
)

from .photos import make_image_folder, photo_variants

JPEG, PNG, WEBP = (
    "c0_pagoda/train_0_000.jpg",
    "c0_pagoda/train_0_001.png",
    "c0_pagoda/train_0_002.webp",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("folder") / "photos")


@pytest.fixture
def folder(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the photo folder, for a test to spoil."""
    return Path(shutil.copytree(built, tmp_path / "photos", symlinks=True))


def _raises(match_path: Path | str, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        ImageFolderSource(*args, **kwargs)
    message = str(info.value)
    assert str(match_path) in message and "\n" not in message
    return message


# ---------------------------------------------------------------- order and labels


def test_elements_are_the_files_bytes_labels_and_names(built):
    train = ImageFolderSource(built)
    val = ImageFolderSource(built, "val", classes=train.classes)
    assert train.classes == val.classes == ["c0_pagoda", "c1_flower", "c2_sky"]
    assert (len(train), len(val)) == (12, 6)
    assert train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert train.skipped == []
    for i in range(len(train)):
        element = train[i]
        assert set(element) == {"image", "label", "name"}
        assert element["image"] == (built / "train" / element["name"]).read_bytes()
        assert element["label"] == train.classes.index(element["name"].split("/")[0])
    assert train[-1] == train[len(train) - 1]
    with pytest.raises(IndexError):
        train[len(train)]
    assert "12 images" in repr(train)


# Built by _odd_tree; torchvision 0.29.1's ImageFolder gives exactly this list (checked once in
# a scratch venv): classes by name (upper case first), files by sorted(os.walk(...)) then name,
# so "sub-a" comes before "sub/a" ("-" < "/"); hidden images and symlinked directories count.
ODD_TREE = [
    ("C_upper/x.jpg", 0),
    ("a_cls/.hidden.jpg", 1),
    ("a_cls/B.jpg", 1),
    ("a_cls/_u.jpeg", 1),
    ("a_cls/a.JPG", 1),
    ("a_cls/Sub/x.jpg", 1),
    ("a_cls/sub/z.png", 1),
    ("a_cls/sub-a/a.jpeg", 1),
    ("a_cls/sub/a/b.PNG", 1),
    ("b_cls/only.webp", 2),
    ("b_cls/link/one.jpg", 2),
]


def _odd_tree(root: Path, built: Path) -> Path:
    images = {".jpg": JPEG, ".jpeg": JPEG, ".png": PNG, ".webp": WEBP}
    for name, _ in ODD_TREE:
        if "link/" not in name:
            path = root / "train" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(built / "train" / images[path.suffix.lower()], path)
    (root / "elsewhere").mkdir()
    shutil.copy(built / "train" / JPEG, root / "elsewhere" / "one.jpg")
    (root / "train" / "b_cls" / "link").symlink_to(root / "elsewhere", target_is_directory=True)
    (root / "train" / "b_cls" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / "stray.txt").write_text("files beside the class directories are ignored")
    return root


def test_order_and_labels_follow_torchvision(built, tmp_path):
    source = ImageFolderSource(_odd_tree(tmp_path, built))
    assert source.classes == ["C_upper", "a_cls", "b_cls"]
    assert list(zip(source.names, source.labels.tolist(), strict=True)) == ODD_TREE
    assert find_classes(tmp_path / "train") == source.classes


def test_order_and_labels_equal_torchvision_imagefolder(built, tmp_path):
    datasets = pytest.importorskip("torchvision.datasets")
    root = _odd_tree(tmp_path, built)
    theirs = datasets.ImageFolder(root / "train")
    ours = ImageFolderSource(root)
    assert theirs.classes == ours.classes
    expected = [(os.path.relpath(p, root / "train"), t) for p, t in theirs.samples]
    assert list(zip(ours.names, ours.labels.tolist(), strict=True)) == expected


def test_every_photo_variant_passes_the_checks(tmp_path):
    paths = photo_variants(tmp_path / "train" / "variants")
    assert [image_problem(os.fspath(p)) for p in paths] == [None] * len(paths)
    assert len(ImageFolderSource(tmp_path)) == len(paths)


def test_jpeg_padding_or_trailer_and_png_named_jpg_are_images(built, tmp_path):
    jpeg = (built / "train" / JPEG).read_bytes()
    (tmp_path / "padded.jpg").write_bytes(jpeg + b"\0" * 300)
    (tmp_path / "trailer.jpg").write_bytes(jpeg + b"camera trailer" * 20)
    shutil.copy(built / "train" / PNG, tmp_path / "png_inside.jpg")
    for name in ("padded.jpg", "trailer.jpg", "png_inside.jpg"):
        assert image_problem(os.fspath(tmp_path / name)) is None


def test_suffixes_are_torchvisions():
    assert set(IMAGE_SUFFIXES) == {
        ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
    }  # fmt: skip


def test_source_pickles_without_files(built):
    source = ImageFolderSource(built, "val")
    copy = pickle.loads(pickle.dumps(source))
    assert len(pickle.dumps(source)) < 4096
    assert [copy[i] for i in range(len(copy))] == [source[i] for i in range(len(source))]


# ---------------------------------------------------------------- layout errors


def test_missing_root_or_split(tmp_path, folder):
    _raises(tmp_path / "nowhere", tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("x")
    _raises(tmp_path / "a_file", tmp_path / "a_file")
    shutil.rmtree(folder / "val")
    message = _raises(folder / "val", folder, "val")
    assert "val not found" in message and "ROOT/val/<class>" in message


@pytest.mark.parametrize("name", ["validation", "valid", "eval", "evaluation"])
def test_the_validation_split_goes_by_timms_names(folder, name):
    """timm's image-folder reader (``-c args.yaml`` with ``dataset: ''``) finds the validation
    split under any of its names; ``val/`` wins when there are several."""
    from seres_jax.data import load_dataset

    expected = len(load_dataset("imagefolder", folder).val)
    (folder / "val").rename(folder / name)
    assert len(load_dataset("imagefolder", folder).val) == expected
    shutil.copytree(folder / name, folder / "val")
    next(next((folder / "val").iterdir()).iterdir()).unlink()
    assert len(load_dataset("imagefolder", folder).val) < expected


def test_no_class_directories(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "loose.jpg").write_bytes(b"")
    assert "no class directories" in _raises(tmp_path / "train", tmp_path)


def test_empty_class_directory(folder):
    (folder / "train" / "c9_empty").mkdir()
    assert "empty class directory" in _raises(folder / "train" / "c9_empty", folder)


@pytest.mark.parametrize("where", ["train", "val"])
def test_class_sets_must_agree(folder, where):
    (folder / where / "c9_extra").mkdir()
    shutil.copy(folder / "train" / JPEG, folder / where / "c9_extra" / "x.jpg")
    train = ImageFolderSource(folder)
    message = _raises("c9_extra", folder, "val", classes=train.classes)
    assert os.fspath(folder / "val") in message


def test_file_without_image_suffix_is_named(folder):
    (folder / "train" / "c1_flower" / "README.txt").write_text("about these photos")
    (folder / "train" / "c1_flower" / ".DS_Store").write_bytes(b"ignored: hidden")
    message = _raises(folder / "train" / "c1_flower" / "README.txt", folder)
    assert message.startswith("1 file without an image suffix") and ".DS_Store" not in message
    source = ImageFolderSource(folder, skip_bad_images=True)
    assert [f.name for f in source.skipped] == ["c1_flower/README.txt"]
    assert len(source) == 12


# ---------------------------------------------------------------- bad images


def _spoil(folder: Path) -> dict[str, str]:
    """Writes one bad file of each kind into ``folder``'s train split; ``{name: reason}``."""
    train = folder / "train"
    jpeg, png, webp = ((train / n).read_bytes() for n in (JPEG, PNG, WEBP))
    bad = {
        "c0_pagoda/corrupt.jpg": (b"not a photograph " * 20, "not a readable image"),
        "c0_pagoda/cut.jpg": (jpeg[: len(jpeg) // 2], "truncated JPEG"),
        "c1_flower/cut.png": (png[: len(png) // 2], "truncated PNG"),
        "c2_sky/cut.webp": (webp[: len(webp) // 2], "truncated WebP"),
        "c2_sky/empty.jpeg": (b"", "empty file"),
    }
    for name, (data, _) in bad.items():
        (train / name).write_bytes(data)
    return {name: reason for name, (_, reason) in bad.items()}


def test_each_bad_image_is_named_with_its_reason(folder):
    bad = _spoil(folder)
    message = _raises(folder / "train", folder)
    assert message.startswith("5 bad image files:") and "--skip-bad-images" in message
    for name, reason in bad.items():
        assert f"{folder / 'train' / name} ({reason}" in message


def test_one_bad_image(folder):
    (folder / "train" / PNG).write_bytes(b"")
    message = _raises(folder / "train" / PNG, folder)
    assert message.startswith("1 bad image file:")


def test_many_bad_images_list_five_and_count_the_rest(folder):
    for i in range(8):
        (folder / "train" / "c2_sky" / f"bad{i}.jpg").write_bytes(b"x")
    message = _raises(folder / "train" / "c2_sky" / "bad0.jpg", folder)
    assert "bad4.jpg" in message and "bad5.jpg" not in message and "and 3 more" in message


def test_skip_bad_images_lists_them_and_keeps_the_rest(folder, built, caplog):
    bad = _spoil(folder)
    source = ImageFolderSource(folder, skip_bad_images=True)
    assert {f.name: f.reason.split(" (")[0] for f in source.skipped} == bad
    [warning] = [r.getMessage() for r in caplog.records if r.name == "seres_jax.data.folders"]
    assert warning.startswith(f"skipped 5 bad files in {folder / 'train'}: c0_pagoda/corrupt.jpg")
    clean = ImageFolderSource(built)
    assert source.names == clean.names and source.labels.tolist() == clean.labels.tolist()


def test_a_class_of_bad_images_only(folder):
    for path in (folder / "val").rglob("*.*"):
        path.write_bytes(b"")
    assert "no readable images (6 skipped)" in _raises(
        folder / "val", folder, "val", skip_bad_images=True
    )


def test_file_gone_after_construction_is_named(folder):
    source = ImageFolderSource(folder)
    (folder / "train" / JPEG).unlink()
    with pytest.raises(DataError, match=r"train_0_000\.jpg: cannot be read"):
        source[0]
