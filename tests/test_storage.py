import json

import pytest

from cluster.core.storage import CorruptFileError, atomic_write_bytes, read_json, write_json


def test_round_trip_and_checksum(tmp_path):
    p = tmp_path / "s.json"
    write_json(p, {"iteration": 3, "rng": [1, 2]})
    assert read_json(p) == {"iteration": 3, "rng": [1, 2]}
    doc = json.loads(p.read_text())
    doc["payload"]["iteration"] = 4
    p.write_text(json.dumps(doc))
    with pytest.raises(CorruptFileError, match="checksum mismatch"):
        read_json(p)


def test_truncated_file_named(tmp_path):
    p = tmp_path / "s.json"
    write_json(p, {"a": 1})
    p.write_bytes(p.read_bytes()[:10])
    with pytest.raises(CorruptFileError, match=str(p)):
        read_json(p)


def test_failed_write_keeps_old_version(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]
