"""Tests for seres_jax.data.records: ArrayRecord packs of a real-photo image folder, read back
record for record, and every damaged or refused pack named in one line."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from array_record.python.array_record_module import ArrayRecordWriter

from seres_jax.data import (
    MANIFEST,
    PACK_FORMAT,
    ArrayRecordSource,
    DataError,
    ImageFolderSource,
    decode_record,
    encode_record,
    pack,
    read_manifest,
)

from .photos import make_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("folder") / "photos")


@pytest.fixture(scope="module")
def packed(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packs") / "packed"
    pack(folder, out, shards=2)
    return out


@pytest.fixture
def damaged(packed: Path, tmp_path: Path) -> Path:
    """A fresh copy of a two-shard pack, for a test to damage."""
    return Path(shutil.copytree(packed, tmp_path / "packed"))


def _error(*args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        ArrayRecordSource(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def _entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def _shards(manifest: dict) -> list[str]:
    return [s for entry in manifest["splits"].values() for s in entry["shards"]]


@pytest.mark.parametrize("shards", [1, 3])
def test_pack_round_trip_equals_the_folder(folder, tmp_path, shards):
    manifest = pack(folder, tmp_path / "out", shards=shards)
    assert read_manifest(tmp_path / "out") == manifest
    assert manifest["format"] == PACK_FORMAT
    assert manifest["classes"] == ["c0_pagoda", "c1_flower", "c2_sky"]
    for split, count in (("train", 12), ("val", 6)):
        names = [f"{split}-{k:05d}-of-{shards:05d}.array_record" for k in range(shards)]
        assert manifest["splits"][split] == {"count": count, "shards": names, "skipped": 0}
        records = ArrayRecordSource(tmp_path / "out", split)
        images = ImageFolderSource(folder, split)
        assert len(records) == len(images) == count and records.classes == images.classes
        assert [records[i] for i in range(count)] == [images[i] for i in range(count)]
        assert records[-1] == images[count - 1]
    assert _entries(tmp_path / "out") == sorted([MANIFEST, *_shards(manifest)])
    assert _entries(tmp_path) == ["out"]  # no staging directory left


def test_more_shards_than_images_gives_one_per_image(folder, tmp_path):
    manifest = pack(folder, tmp_path / "out", shards=50, splits=("val",))
    assert list(manifest["splits"]) == ["val"]
    assert len(manifest["splits"]["val"]["shards"]) == 6
    assert len(ArrayRecordSource(tmp_path / "out", "val")) == 6


def test_source_pickles_for_grain_workers(packed):
    source = ArrayRecordSource(packed, "train")
    first = source[3]  # readers open now; the copy must open its own
    copy = pickle.loads(pickle.dumps(source))
    assert copy[3] == first and copy[11] == source[11] and len(copy) == 12
    assert "12 records in 2 shards" in repr(copy)
    with pytest.raises(IndexError):
        source[12]


def test_record_encoding_round_trips_any_name():
    name = "c\udcff/odd name\u00e9.jpg"  # a file name that is not UTF-8, as os gives it
    record = encode_record(b"\xff\xd8 jpeg bytes", 2, name)
    assert decode_record(record, 3) == {"image": b"\xff\xd8 jpeg bytes", "label": 2, "name": name}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b"SRS1", "shorter than a record's header"),
        (b"XXXX" + bytes(6) + b"image", "not a seres-arrayrecord-v1 record"),
        (encode_record(b"image", 7, "a.jpg"), "label 7 outside the 3 classes"),
        (encode_record(b"", 0, "a.jpg"), "no image bytes"),
        (encode_record(b"image", 0, "a.jpg")[:8] + b"\xff\xff" + b"a.jpg", "no image bytes"),
    ],
)
def test_malformed_records_are_refused(record, reason):
    with pytest.raises(ValueError, match=reason):
        decode_record(record, 3)


# ---------------------------------------------------------------- writing: refusals


def test_pack_refuses_an_existing_directory_unless_a_previous_pack_and_force(folder, tmp_path):
    out = tmp_path / "out"
    pack(folder, out, splits=("val",))
    with pytest.raises(DataError, match="exists; pass --force"):
        pack(folder, out, shards=3)
    assert _entries(out) == [MANIFEST, "val-00000-of-00001.array_record"]
    pack(folder, out, shards=3, force=True)
    assert len(read_manifest(out)["splits"]["train"]["shards"]) == 3
    assert _entries(tmp_path) == ["out"]

    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"holds files other than a pack's: notes\.txt"):
        pack(folder, out, force=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.bin").write_bytes(b"precious")
    with pytest.raises(DataError, match="is not a seres-arrayrecord-v1 pack"):
        pack(folder, other, force=True)
    assert (other / "data.bin").read_bytes() == b"precious"
    with pytest.raises(DataError, match="contains the source"):
        pack(folder, folder.parent, force=True)
    with pytest.raises(DataError, match="inside"):
        pack(folder, folder / "train" / "packed")
    assert not (folder / "train" / "packed").exists()


def test_pack_over_a_bad_folder_writes_nothing(folder, tmp_path):
    bad = Path(shutil.copytree(folder, tmp_path / "bad"))
    cut = bad / "val" / "c2_sky" / "val_2_000.webp"
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(DataError, match=f"{cut} \\(truncated WebP"):
        pack(bad, tmp_path / "out")
    assert _entries(tmp_path) == ["bad"]
    manifest = pack(bad, tmp_path / "out", skip_bad_images=True)
    assert manifest["splits"]["val"] == {
        "count": 5,
        "shards": ["val-00000-of-00001.array_record"],
        "skipped": 1,
    }
    names = [element["name"] for element in ArrayRecordSource(tmp_path / "out", "val")]
    assert "c2_sky/val_2_000.webp" not in names and len(names) == 5


def test_pack_needs_a_shard(folder, tmp_path):
    with pytest.raises(DataError, match="at least 1"):
        pack(folder, tmp_path / "out", shards=0)
    assert _entries(tmp_path) == []


# ---------------------------------------------------------------- reading: damage


@pytest.mark.parametrize("kept", [0.5, 0.6, 0.1])  # 0.5: cut at a 64 KiB block's end
def test_truncated_shard_is_named(damaged, kept):
    shard = damaged / "train-00001-of-00002.array_record"
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * kept)])
    message = _error(damaged, "train")
    assert message.startswith(f"{shard}: not a readable ArrayRecord shard, cut short?")
    assert len(ArrayRecordSource(damaged, "val")) == 6  # the other split still reads


def test_missing_shard_is_named(damaged):
    shard = damaged / "val-00000-of-00002.array_record"
    shard.unlink()
    assert _error(damaged, "val").startswith(f"{shard}: shard missing")


def test_shard_from_another_pack_is_named(damaged):
    manifest = json.loads((damaged / MANIFEST).read_text())
    manifest["splits"]["val"]["count"] = 8
    (damaged / MANIFEST).write_text(json.dumps(manifest))
    shard = damaged / "val-00000-of-00002.array_record"
    assert _error(damaged, "val").startswith(f"{shard}: holds 3 records, classes.json implies 4")


def test_damaged_record_is_named_on_read(damaged):
    shard = damaged / "train-00000-of-00002.array_record"
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0xFF  # in the records (the file's first 64 KiB block): a checksum catches it
    shard.write_bytes(bytes(data))
    source = ArrayRecordSource(damaged, "train")
    with pytest.raises(DataError) as info:
        [source[i] for i in range(len(source))]
    assert str(info.value).startswith(f"{shard}: record ")


def test_malformed_record_is_named_with_shard_and_index(damaged):
    shard = damaged / "val-00001-of-00002.array_record"
    shard.unlink()
    writer = ArrayRecordWriter(os.fspath(shard), "group_size:1")
    for record in (encode_record(b"ok", 0, "a.jpg"), b"garbage!!!!!", b"more"):
        writer.write(record)
    writer.close()
    source = ArrayRecordSource(damaged, "val")
    assert source[3]["name"] == "a.jpg"
    with pytest.raises(DataError, match=f"{shard}: record 1 unreadable \\(not a seres"):
        source[4]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ('{"format": "someone-else"}', "not a seres-arrayrecord-v1 manifest"),
        ('{"format": "seres-arrayrecord-v1", "classes": []}', "'classes' is not"),
        ('{"format": "seres-arrayrecord-v1", "classes": ["a", "a"]}', "names a class twice"),
        ('{"format": "seres-arrayrecord-v1", "classes": ["a"], "splits": {}}', "'splits' is not"),
        (
            '{"format": "seres-arrayrecord-v1", "classes": ["a"], "splits": '
            '{"val": {"count": 1, "shards": ["../../etc/passwd.array_record"]}}}',
            "not a \\*.array_record file name",
        ),
        (
            '{"format": "seres-arrayrecord-v1", "classes": ["a"], "splits": '
            '{"val": {"count": 1, "shards": ["a.array_record", "b.array_record"]}}}',
            "'shards' is not a list of 1 to 1",
        ),
    ],
)
def test_bad_manifest_is_named(tmp_path, content, reason):
    if content is not None:
        (tmp_path / MANIFEST).write_text(content)
    message = _error(tmp_path, "val")
    assert message.startswith(f"{tmp_path / MANIFEST}: ") and reason.replace("\\", "") in message


def test_missing_split_is_named(folder, tmp_path):
    pack(folder, tmp_path / "out", splits=("train",))
    message = _error(tmp_path / "out", "val")
    assert message == f"{tmp_path / 'out' / MANIFEST}: no split 'val' in this pack (it holds train)"


def test_oversized_manifest_is_refused_unread(tmp_path):
    with open(tmp_path / MANIFEST, "wb") as file:
        file.truncate(17 << 20)  # sparse: costs no disk
    assert "more than a pack's classes.json holds" in _error(tmp_path)
