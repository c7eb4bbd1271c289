"""Skill library: versioned atomic persistence with fallback, reload fidelity, the gate, merging, the CLI,
and the statistics behind the gate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from skills.library import (
    MANIFEST,
    GateConfig,
    LibraryError,
    Provenance,
    SkillLibrary,
    gate_status,
)
from skills.schema import validate_skill_dict
from skills.stats import SkillStats, wilson_interval

CORPUS = Path(__file__).parent / "data" / "skill_outputs.jsonl"
BASE = json.loads(
    next(json.loads(x)["text"] for x in CORPUS.read_text().splitlines() if '"id": "plain"' in x)
)


def make_skill(name: str, desc: str = "Clean an object and place it."):
    d = json.loads(json.dumps(BASE))
    d["name"], d["description"] = name, desc
    return validate_skill_dict(d)


def unit(i: int, dim: int = 8) -> list[float]:
    v = [0.0] * dim
    v[i] = 1.0
    return v


def filled_library(path: Path) -> SkillLibrary:
    lib = SkillLibrary(path, GateConfig(min_trials=4, confidence=0.9, merge_similarity=0.95))
    a = lib.add(make_skill("alpha-skill"), Provenance("task-1", 0, 0, "clean"), unit(0))
    b = lib.add(make_skill("beta-skill"), Provenance("task-2", 1, 3, "heat"), [0.6, 0.8, 0, 0, 0, 0, 0, 0.0])
    lib.record_trials(a, 20, 18, 20, 4)
    lib.record_trials(b, 6, 2, 6, 3, failed=1)
    return lib


# ------------------------------------------------------------------------------------------- statistics


def test_wilson_interval_known_values():
    # Two-sided 95% Wilson interval of 0/10 is [0, 0.2775]; ours is one-sided, so confidence 0.975.
    lo, hi = wilson_interval(0, 10, 0.975)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10, 0.975)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_gain_interval_newcombe():
    s = SkillStats(trials=20, wins=18, baseline_trials=20, baseline_wins=4)
    lo, hi = s.gain_interval(0.9)
    assert s.gain == pytest.approx(0.7) and lo < s.gain < hi
    assert lo > 0.4  # a clear gain stays clear
    tie = SkillStats(10, 5, 10, 5)
    lo, hi = tie.gain_interval(0.9)
    assert lo < 0 < hi and math.isclose(lo, -hi, abs_tol=1e-12)
    with pytest.raises(ValueError, match="wins"):
        SkillStats(trials=2, wins=3)


def test_gate_accepts_clear_gain_and_rejects_none():
    gate = GateConfig(min_trials=4, confidence=0.9)
    assert gate_status("candidate", SkillStats(20, 18, 20, 4), gate) == "accepted"
    assert gate_status("candidate", SkillStats(20, 8, 20, 8), gate) == "candidate"  # no gain
    assert gate_status("candidate", SkillStats(3, 3, 3, 0), gate) == "candidate"  # too few trials
    assert gate_status("accepted", SkillStats(30, 2, 30, 20), gate) == "retired"  # stopped paying
    assert gate_status("accepted", SkillStats(30, 12, 30, 14), gate) == "accepted"  # unclear: keep
    assert gate_status("candidate", SkillStats(30, 1, 30, 25), gate) == "retired"  # clearly harmful
    assert gate_status("retired", SkillStats(30, 30, 30, 0), gate) == "retired"  # final


def test_reload_gives_identical_skills_and_stats(tmp_path):
    lib = filled_library(tmp_path)
    path = lib.save()
    assert path.name == "library-v1.parquet"
    again = SkillLibrary.open(tmp_path)
    assert again.load_report.path == path and again.load_report.skipped == []
    assert list(again.entries) == list(lib.entries)
    for sid, e in lib.entries.items():
        r = again.entries[sid]
        assert (r.skill, r.provenance, r.stats, r.status, r.embedding, r.merged_ids) == (
            e.skill, e.provenance, e.stats, e.status, e.embedding, e.merged_ids
        )  # fmt: skip
    assert again.get("alpha-skill").status == "accepted"


def test_interrupted_write_leaves_previous_version_readable(tmp_path):
    lib = filled_library(tmp_path)
    lib.save()
    lib.add(make_skill("gamma-skill"), Provenance("task-3", 2, 5), unit(3))
    v2 = lib.save()
    good = v2.read_bytes()
    # 1) a save killed halfway through writing v3 (non-atomic writer or crash): truncated, uncommitted file
    (tmp_path / "library-v3.parquet").write_bytes(good[: len(good) // 2])
    r = SkillLibrary.open(tmp_path)
    assert r.load_report.path == v2 and len(r) == 3
    assert any("library-v3" in p for p, _ in r.load_report.skipped)
    # 2) the committed newest version is corrupted afterwards: checksum mismatch -> fall back to v1
    v2.write_bytes(good[: len(good) // 2])
    r = SkillLibrary.open(tmp_path)
    assert r.load_report.version == 1 and len(r) == 2
    assert any(p.endswith("library-v2.parquet") and "checksum" in why for p, why in r.load_report.skipped)
    # 3) the manifest is lost too: snapshot files are read newest first, unreadable ones skipped
    (tmp_path / MANIFEST).write_text("{not json")
    r = SkillLibrary.open(tmp_path)
    assert r.load_report.version == 1 and len(r) == 2
    # the next save never overwrites an existing version number
    assert r.save().name == "library-v4.parquet"
    assert SkillLibrary.open(tmp_path).load_report.version == 4


def test_no_readable_version_is_an_error(tmp_path):
    filled_library(tmp_path).save()
    p = tmp_path / "library-v1.parquet"
    p.write_bytes(b"garbage")
    with pytest.raises(LibraryError, match="no readable version"):
        SkillLibrary.open(tmp_path)


def test_empty_folder_is_an_empty_library(tmp_path):
    lib = SkillLibrary.open(tmp_path / "new")
    assert len(lib) == 0 and lib.load_report.path is None


# ---------------------------------------------------------------------------------------- merge / gate


def test_near_duplicates_merge_and_stats_add(tmp_path):
    lib = SkillLibrary(tmp_path, GateConfig(min_trials=4, merge_similarity=0.95))
    a = lib.add(make_skill("alpha-skill"), Provenance("t1", 0, 0), unit(0))
    lib.record_trials(a, 4, 3, 4, 1)
    near = [0.99, 0.1] + [0.0] * 6  # cosine 0.995 with alpha
    held = lib.add(make_skill("alpha-skill-two"), Provenance("t2", 1, 1), near, SkillStats(4, 4, 4, 1))
    assert held == a and len(lib) == 1
    assert lib.entries[a].stats == SkillStats(8, 7, 8, 2)
    dup_id = make_skill("alpha-skill-two").skill_id
    assert lib.entries[a].merged_ids == [dup_id]
    # trials recorded against the merged id land on the holder
    lib.record_trials(dup_id, 2, 2, 2, 0)
    assert lib.entries[a].stats.trials == 10
    # a dissimilar skill is a new entry; an exact re-add merges by id
    far = lib.add(make_skill("other-skill"), Provenance("t3", 1, 1), unit(5))
    assert far != a and len(lib) == 2
    assert lib.add(make_skill("other-skill"), Provenance("t4", 2, 2), unit(5), SkillStats(1, 1, 1, 0)) == far
    assert lib.entries[far].stats.trials == 1
    # merges survive a reload
    lib.save()
    again = SkillLibrary.open(tmp_path)
    assert again.resolve(dup_id) == a


def test_record_trials_runs_the_gate(tmp_path):
    lib = SkillLibrary(tmp_path, GateConfig(min_trials=4, confidence=0.9))
    good = lib.add(make_skill("good-skill"), Provenance("t", 0, 0), unit(0))
    flat = lib.add(make_skill("flat-skill"), Provenance("t", 0, 0), unit(1))
    for _ in range(3):
        lib.record_trials(good, 4, 4, 4, 1)
        lib.record_trials(flat, 4, 2, 4, 2)
    assert lib.get(good).status == "accepted"
    assert lib.get(flat).status == "candidate"
    assert [e.skill.name for e in lib.with_status("accepted")] == ["good-skill"]
    for _ in range(6):  # the accepted skill stops paying: retired
        lib.record_trials(good, 4, 0, 4, 4)
    assert lib.get(good).status == "retired"


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_list_show_export_import(tmp_path, capsys):
    from cluster.cli import main

    src = tmp_path / "lib"
    filled_library(src).save()

    def run(*argv: str) -> int:
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        return e.value.code

    assert run("skills", "list", "--library", str(src)) == 0
    out = capsys.readouterr().out
    assert "alpha-skill" in out and "accepted" in out and "beta-skill" in out
    assert run("skills", "show", "--library", str(src), "alpha-skill") == 0
    assert "# Skill: alpha-skill" in capsys.readouterr().out
    assert run("skills", "show", "--library", str(src), "nope") == 1
    assert run("skills", "export", "--library", str(src), "--out", str(tmp_path / "exp")) == 0
    lines = (tmp_path / "exp.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["stats"]["trials"] == 20
    assert "# Skill: beta-skill" in (tmp_path / "exp.md").read_text()
    dst = tmp_path / "copy"
    assert run("skills", "import", "--library", str(dst), str(tmp_path / "exp.jsonl")) == 0
    copy, orig = SkillLibrary.open(dst), SkillLibrary.open(src)
    assert set(copy.entries) == set(orig.entries)  # the same skills ...
    assert all(e.status == "candidate" and e.stats.trials == 0 for e in copy)  # ... earning nothing by import
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + '{"skill": {"name": "No Description"}}\n')
    assert run("skills", "import", "--library", str(dst), str(bad)) == 1
    assert f"refused {bad}:2: missing_field:description" in capsys.readouterr().err
