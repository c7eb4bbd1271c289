"""`evorl export`: a real checkpoint folder (the embedded model laid out as the trainer writes it, with
DeepSpeed and learner state beside the HF files) becomes a clean HF folder that transformers and vLLM
load, with the run's skills at the checkpoint's library version and a model card holding the eval
table; torn checkpoints, bad paths and occupied output folders are refused with exit code 2."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from cluster.core.config import Config, dump_config
from cluster.core.storage import write_json, write_json_plain, write_manifest
from skills.library import Provenance, SkillLibrary
from skills.schema import validate_skill_dict

CORPUS = Path(__file__).parent / "data" / "skill_outputs.jsonl"
CKPT = "checkpoints/iter-00002"
EVAL = {
    "eval/valid_seen/no_skill/success": 0.25,
    "eval/valid_seen/no_skill/episodes": 4.0,
    "eval/valid_seen/no_skill/pick_and_place_simple": 0.5,
    "eval/valid_seen/with_skill/success": 0.75,
    "eval/valid_seen/with_skill/episodes": 4.0,
    "eval/valid_seen/with_skill/pick_and_place_simple": 1.0,
    "eval/valid_seen/paired/both": 1.0,
    "eval/valid_seen/paired/with_skill_only": 2.0,
    "eval/valid_seen/paired/no_skill_only": 0.0,
    "eval/valid_seen/paired/neither": 1.0,
    "eval/valid_seen/paired/mcnemar_p": 0.5,
    "eval/valid_unseen/no_skill/success": 0.125,
    "eval/valid_unseen/with_skill/success": 0.375,
    "eval/protocol_online": 1.0,
}


def embedded() -> Path:
    from cluster.core.model_store import resolve_model

    try:
        return Path(resolve_model("embedded"))
    except FileNotFoundError as e:
        pytest.skip(str(e))


def make_skill(name: str):
    base = next(json.loads(x)["text"] for x in CORPUS.read_text().splitlines() if '"id": "plain"' in x)
    d = json.loads(base)
    d["name"], d["description"] = name, f"The {name} skill."
    return validate_skill_dict(d)


def build_run(run: Path, generation_config: bool = False) -> Path:
    """A run folder as `evorl train` leaves it, checkpoint written the way CheckpointManager.save does."""
    ckpt = run / CKPT
    model = ckpt / "model"
    shutil.copytree(embedded(), model)  # a real copy: tests below alter weight files
    if not generation_config:
        (model / "generation_config.json").unlink()
    ds = model / "deepspeed" / "state"
    ds.mkdir(parents=True)
    (ds / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 64)
    (ds / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"\1" * 64)
    (model / "deepspeed" / "latest").write_text("state")
    (model / "learner_state.json").write_text(
        json.dumps({"steps": 2, "base_model": "embedded", "world_size": 1})
    )
    lib = SkillLibrary(run / "skills")
    sid = lib.add(
        make_skill("find-and-clean"), Provenance("train/task-1", 1, 1, "pick_clean_then_place"), [1.0, 0.0]
    )
    lib.record_trials(sid, 8, 6, 8, 2)
    lib.save()  # version 1: the checkpoint's
    write_json(
        ckpt / "trainer_state.json",
        {"iteration": 2, "policy_version": 2, "sampler": {}, "library_version": 1},
    )
    write_manifest(ckpt)
    (run / "checkpoints" / "latest").write_text("iter-00002\n")
    lib.add(make_skill("later-skill"), Provenance("train/task-9", 3, 3), [0.0, 1.0])
    lib.save()  # version 2: saved after the checkpoint (an iteration that never checkpointed)
    (run / "config.yaml").write_text(dump_config(Config()))
    rows = [{"iteration": i, "time": 0.0, "source/success": 0.1 * i, "learner/loss": 1.0 / i} for i in (1, 2)]
    rows.append({"iteration": 2, "time": 0.0, **EVAL})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_json_plain(
        run / "summary.json", {"mode": "evolving", "iteration": 2, "policy_version": 2, "final_eval": EVAL}
    )
    return run


def evorl(*argv: str, capsys) -> tuple[int, str, str]:
    from cluster.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", *argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def exported(run) -> Path:
    from cluster.export import export

    out = run.parent / "hf"
    info = export(run, out)
    assert info["checkpoint"].endswith("iter-00002") and info["library_version"] == 1
    return out


def test_output_is_a_clean_hf_folder_with_the_checkpoint_weights(run, exported):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert not [n for n in names if "deepspeed" in n or n.endswith((".pt", ".bin")) or "learner_state" in n]
    top = {n for n in names if "/" not in n}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "README.md", "skills.jsonl", "skills.md"} <= top  # fmt: skip
    assert not list(exported.parent.glob(".tmp-*"))  # the temp folder was renamed into place
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    params = model.state_dict()
    ckpt_weights = load_file(run / CKPT / "model" / "model.safetensors")
    assert ckpt_weights
    for k, v in ckpt_weights.items():
        assert torch.equal(params[k], v.float()), k
    # generation_config.json was made from the tokenizer (the checkpoint had none)
    tok = AutoTokenizer.from_pretrained(exported)
    gen = json.loads((exported / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.eos_token_id and gen["pad_token_id"] == tok.pad_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    info = json.loads((exported / "evorl_export.json").read_text())
    assert info["generation_config_made"] and "deepspeed/" in info["left_out"]


def test_skills_at_the_checkpoint_library_version(exported):
    records = [json.loads(x) for x in (exported / "skills.jsonl").read_text().splitlines()]
    assert [r["skill"]["name"] for r in records] == ["find-and-clean"]  # not v2's later-skill
    assert records[0]["stats"]["trials"] == 8 and records[0]["provenance"]["source_task_id"] == "train/task-1"
    cards = (exported / "skills.md").read_text()
    assert "# Skill: find-and-clean" in cards and "later-skill" not in cards
    lib = SkillLibrary.open(exported / "skill_library")
    assert [e.skill.name for e in lib] == ["find-and-clean"] and next(iter(lib)).stats.wins == 6


def test_model_card_has_config_metrics_and_eval_table(exported):
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "checkpoint `iter-00002`" in card and "skill library version 1" in card
    assert "| valid_seen | no_skill | 0.250 |" in card
    assert "| valid_seen | with_skill | 0.750 |" in card
    assert "| valid_unseen | with_skill | 0.375 |" in card
    assert "| valid_seen | 1 | 2 | 0 | 1 | 0.500 |" in card  # the paired table
    assert "| pick_and_place_simple | 0.500 | 1.000 |" in card  # per task type
    assert "protocol `online`" in card
    assert '"mode": "evolving"' in card  # summary.json
    assert "| source/success | 0.1 | 0.2 |" in card  # the last metrics.jsonl records
    assert "```yaml" in card and "gate_confidence" in card  # config.yaml
    assert (exported / "evorl_config.yaml").read_text() == dump_config(Config())


@pytest.mark.slow
def test_vllm_loads_the_export_and_agrees_with_transformers(exported):
    import torch
    from transformers import AutoModelForCausalLM

    from actors.engine import VLLMEngine
    from cluster.core.config import EngineConfig
    from cluster.core.generation import GenParams
    from cluster.core.text import encode_messages

    engine = VLLMEngine(str(exported), EngineConfig(kv_cache_gib=0.25), 0, 512)
    try:
        prompt = encode_messages(engine.tokenizer, [{"role": "user", "content": "Name a colour."}])
        got = engine.generate([prompt], GenParams(temperature=0.0, max_tokens=6))[0][0].token_ids
    finally:
        engine.close()
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)[0, len(prompt) :]
    assert len(got) > 0 and list(got) == ref.tolist()[: len(got)]


def test_torn_checkpoint_and_bad_paths_are_refused(run, tmp_path, capsys):
    torn = tmp_path / "torn"
    shutil.copytree(run, torn)
    weights = torn / CKPT / "model" / "model.safetensors"
    with open(weights, "r+b") as f:  # flip one byte of the weights, size unchanged
        f.seek(1 << 20)
        b = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([b[0] ^ 0xFF]))
    for source in (torn, torn / CKPT, torn / CKPT / "model"):
        rc, _, err = evorl(str(source), "--out", str(tmp_path / "out"), capsys=capsys)
        assert rc == 2 and err.splitlines()[-1].startswith("error: ") and str(weights) in err, err
        assert "Traceback" not in err and not (tmp_path / "out").exists()
    rc, _, err = evorl(str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), capsys=capsys)
    assert rc == 2 and "no such file or folder" in err
    (torn / CKPT / "MANIFEST.json").unlink()  # a checkpoint whose manifest was never written
    rc, _, err = evorl(str(torn / CKPT / "model"), "--out", str(tmp_path / "out"), capsys=capsys)
    assert rc == 2 and "MANIFEST.json" in err and "Traceback" not in err
    assert not list(tmp_path.glob(".tmp-*"))


def test_existing_generation_config_is_kept(tmp_path):
    from cluster.export import export

    run = build_run(tmp_path / "run", generation_config=True)
    info = export(run / CKPT, tmp_path / "hf")
    assert not info["generation_config_made"]
    src = run / CKPT / "model" / "generation_config.json"
    assert (tmp_path / "hf" / "generation_config.json").read_bytes() == src.read_bytes()


def test_overwrite(run, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()  # an empty folder is fine
    rc, stdout, _ = evorl(str(run / "checkpoints"), "--out", str(out), capsys=capsys)
    assert rc == 0 and "iteration 2" in stdout and "skills: 1 (1 accepted)" in stdout
    (out / "stale.txt").write_text("from before")
    rc, _, err = evorl(str(run), "--out", str(out), capsys=capsys)
    assert rc == 2 and "--overwrite" in err and (out / "stale.txt").exists()
    rc, _, _ = evorl(str(run), "--out", str(out), "--overwrite", capsys=capsys)
    assert rc == 0 and not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    # --overwrite never replaces the folder it exports from
    rc, _, err = evorl(str(run), "--out", str(run), "--overwrite", capsys=capsys)
    assert rc == 2 and "holds the source" in err and (run / CKPT / "MANIFEST.json").exists()
    assert not list(tmp_path.glob(".tmp-*"))
