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
