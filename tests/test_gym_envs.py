"""The gymnasium wrappers: created through gymnasium's registry and RLlib's, stepped to a win with the
planner (ALFWorld) or the gold actions (Mind2Web sample), and sampled by an RLlib EnvRunner."""

from __future__ import annotations

import gymnasium
import pytest

from envs.gym import ALFWORLD_ID, MIND2WEB_ID, TextGymEnv, register_rllib_envs, to_space_text


@pytest.fixture(scope="module")
def game_dir(tmp_path_factory):
    from envs.alfworld.generator import generate

    out = tmp_path_factory.mktemp("gym-games")
    generate(str(out), per_type=1, seed=5, preset="easy", splits=["train"],
             task_types=["pick_and_place_simple", "pick_clean_then_place_in_recep"])  # fmt: skip
    return out


def _check_info(env: gymnasium.Env, obs: str, info: dict) -> None:
    assert env.observation_space.contains(obs)
    assert isinstance(info["admissible_actions"], list) and isinstance(info["won"], bool)
    assert info["task"] and info["task_id"]


def test_alfworld_through_gymnasium_registry_wins_with_planner(game_dir):
    env = gymnasium.make(ALFWORLD_ID, data_dir=str(game_dir), max_steps=30)
    try:
        assert isinstance(env.unwrapped, TextGymEnv)
        tasks = env.unwrapped.tasks
        assert {t.task_type for t in tasks} == {"pick_and_place_simple", "pick_clean_then_place_in_recep"}
        for task in tasks:
            obs, info = env.reset(seed=0, options={"task_id": task.task_id})
            _check_info(env, obs, info)
            assert info["task_type"] == task.task_type and not info["won"]
            plan = env.unwrapped.expert_actions()
            assert plan, task.task_id
            for i, action in enumerate(plan):
                assert action in info["admissible_actions"], (task.task_id, action)
                assert env.action_space.contains(action)
                obs, reward, terminated, truncated, info = env.step(action)
                _check_info(env, obs, info)
                if i < len(plan) - 1:
                    assert not (terminated or truncated) and reward == 0.0
            assert terminated and not truncated and info["won"] and reward == 1.0, task.task_id
        # an inadmissible action is counted, not fatal
        env.reset(options={"task_index": 0})
        obs, reward, terminated, truncated, info = env.step("fly to the moon")
        assert info["invalid_action"] and not info["won"] and reward == 0.0
    finally:
        env.close()


def test_alfworld_seeded_task_draw_and_truncation(game_dir):
    a = gymnasium.make(ALFWORLD_ID, data_dir=str(game_dir), max_steps=2)
    try:
        ids = [a.reset(seed=s)[1]["task_id"] for s in (1, 2, 3)]
        assert ids == [a.reset(seed=s)[1]["task_id"] for s in (1, 2, 3)]
        a.reset(options={"task_index": 0})
        a.step("look")
        _, _, terminated, truncated, info = a.step("look")
        assert truncated and not terminated and not info["won"]
    finally:
        a.close()
    with pytest.raises(ValueError, match="data_dir"):
        gymnasium.make(ALFWORLD_ID)
    with pytest.raises(FileNotFoundError):
        gymnasium.make(ALFWORLD_ID, data_dir=str(game_dir), split="valid_seen")


def test_mind2web_through_gymnasium_registry_wins_with_gold(tmp_path):
    env = gymnasium.make(MIND2WEB_ID, split="train", cache_dir=str(tmp_path))
    try:
        tasks = env.unwrapped.tasks
        assert len(tasks) >= 2
        for task in tasks[:3]:
            obs, info = env.reset(options={"task_id": task.task_id})
            _check_info(env, obs, info)
            done, steps = False, 0
            while not done:
                gold = env.unwrapped.gold_action()
                assert gold in info["admissible_actions"]
                obs, reward, terminated, truncated, info = env.step(gold)
                done, steps = terminated or truncated, steps + 1
            assert terminated and info["won"] and reward == 1.0 and steps == info["step"] + 1
        # paper mode: a wrong step ends the episode (terminated, not won)
        env.reset(options={"task_index": 0})
        _, reward, terminated, _, info = env.step("CLICK [9999]")
        assert terminated and not info["won"] and reward == 0.0
    finally:
        env.close()


def test_rllib_registry_and_env_runner(tmp_path):
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.tune.registry import ENV_CREATOR, _global_registry

    assert register_rllib_envs() == [ALFWORLD_ID, MIND2WEB_ID]
    creator = _global_registry.get(ENV_CREATOR, MIND2WEB_ID)
    env = creator({"split": "train", "cache_dir": str(tmp_path)})
    obs, info = env.reset(seed=0)
    assert obs and info["admissible_actions"]
    env.close()

    # An EnvRunner (no RLModule: AlgorithmConfig has none) steps it with random Text actions.
    config = AlgorithmConfig().environment(MIND2WEB_ID, env_config={"cache_dir": str(tmp_path)})
    runner = SingleAgentEnvRunner(config=config)
    try:
        episodes = runner.sample(num_episodes=2, random_actions=True)
        assert len(episodes) == 2 and all(e.is_done for e in episodes)
        assert all("admissible_actions" in e.get_infos()[0] for e in episodes)
    finally:
        runner.stop()


def test_to_space_text_replaces_and_caps():
    text, n = to_space_text("caf\u00e9 \u2014 ok", 100)
    assert text == "caf? ? ok" and n == 2
    text, n = to_space_text("x" * 50, 10)
    assert text == "xxxxxxx..." and n == 0
