import pytest
import yaml

from cluster.core.config import Config, ConfigError, load_config


def write(tmp_path, data):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_defaults_and_quickstart_validate():
    assert isinstance(load_config(None), Config)
    cfg = load_config("configs/quickstart.yaml")
    assert cfg.trainer.mode == "evolving"


def test_unknown_key_names_file_and_path(tmp_path):
    p = write(tmp_path, {"trainer": {"iterationz": 3}})
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value) and "trainer.iterationz" in str(e.value) and "unknown key" in str(e.value)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="trainr: unknown key"):
        load_config(write(tmp_path, {"trainr": {}}))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.lr: expected float, got 'fast'"):
        load_config(write(tmp_path, {"learner": {"lr": "fast"}}))
    with pytest.raises(ConfigError, match=r"trainer\.iterations: expected int"):
        load_config(write(tmp_path, {"trainer": {"iterations": True}}))
    with pytest.raises(ConfigError, match=r"learner\.kl_coef\.solver: expected float"):
        load_config(write(tmp_path, {"learner": {"kl_coef": {"solver": "x"}}}))


def test_out_of_range_and_literal(tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.zero_stage"):
        load_config(write(tmp_path, {"learner": {"zero_stage": 5}}))
    with pytest.raises(ConfigError, match=r"trainer\.mode: expected one of"):
        load_config(write(tmp_path, {"trainer": {"mode": "ppo"}}))
    with pytest.raises(ConfigError, match=r"env\.reward: 'progress' is for Mind2Web only"):
        load_config(None, ["env.reward=progress"])  # the default env is ALFWorld
    assert load_config("configs/quickstart_mind2web.yaml", ["env.reward=progress"]).env.reward == "progress"


def test_overrides_apply_and_validate():
    cfg = load_config(None, ["trainer.iterations=7", "learner.lr=3e-6", "env.eval_splits=[a, b]"])
    assert cfg.trainer.iterations == 7 and cfg.learner.lr == 3e-6 and cfg.env.eval_splits == ["a", "b"]
    with pytest.raises(ConfigError, match=r"trainer\.iterations: expected int"):
        load_config(None, ["trainer.iterations=many"])
    with pytest.raises(ConfigError, match=r"trainer\.nope: unknown key"):
        load_config(None, ["trainer.nope=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["trainer.iterations"])


def test_int_widens_to_float_and_missing_file(tmp_path):
    assert load_config(None, ["rollout.temperature=1"]).rollout.temperature == 1.0
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", sorted(__import__("pathlib").Path("configs").glob("*.yaml")))
def test_shipped_configs_validate(path):
    load_config(path)


def test_cross_section_lengths_name_both_keys():
    with pytest.raises(
        ConfigError, match=r"skills\.extractor_max_tokens: 1800 .* model\.max_model_len \(2048\)"
    ):
        load_config(None, ["skills.extractor_max_tokens=1800", "model.max_model_len=2048"])
    with pytest.raises(ConfigError, match=r"rollout\.max_new_tokens: 512 .* model\.max_model_len \(512\)"):
        load_config(
            None, ["rollout.max_new_tokens=512", "model.max_model_len=512", "skills.extractor_max_tokens=1"]
        )


def test_config_reference_is_current():
    """docs/config.md is generated from the dataclasses: a new key or a changed comment regenerates it."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "scripts/config_doc.py", "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["trainer.checkpoint_every=0", "rollout.num_gpus_per_worker=-1", "learner.updates_per_batch=0",
                           "rollout.call_timeout_s=0", "trainer.eval_tasks=0", "engine.tensor_parallel_size=2"])  # fmt: skip
    msg = str(e.value)
    assert "6 problems" in msg
    for key in ("trainer.checkpoint_every", "rollout.num_gpus_per_worker", "learner.updates_per_batch",
                "rollout.call_timeout_s", "trainer.eval_tasks", "engine.tensor_parallel_size"):  # fmt: skip
        assert key in msg
    with pytest.raises(ConfigError, match="finite number"):
        load_config(None, ["learner.lr=.nan"])


def test_cli_errors_are_one_line_and_exit_2(capsys):
    from cluster.cli import main

    for argv in (["train", "--config", "nope.yaml"], ["train", "--config", "configs/quickstart.yaml", "trainer.iterations=-1"],
                 ["plot", "/nonexistent/run"], ["eval", "--config", "configs/quickstart.yaml", "--checkpoint", "/nonexistent"]):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and "Traceback" not in err, (argv, err)
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", "configs/quickstart.yaml", "--print-config", "trainer.iterations=7"])
    assert e.value.code == 0 and "iterations: 7" in capsys.readouterr().out
