"""Serving: request validation (no Ray), then one Ray Serve app on the embedded model with a two-skill
library, asked for actions on a generated ALFWorld game, fed malformed requests, and played through by
`evorl play`. One Ray + Serve start for the module (~20 s)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cluster.serving.agent import model_from_checkpoint
from cluster.serving.api import RequestError, decode_body, parse_chat, parse_request

TOKEN = "test-token-0123456789abcdef"

GOOD = {
    "task": "put a cloth in countertop",
    "observation": "You are in the middle of a room.",
    "admissible_actions": ["go to countertop 1", "go to toilet 1", "look"],
    "history": [["look", "You see a toilet 1."]],
}


def _skill(name: str, task_type: str, desc: str, when: str, steps: list[tuple[str, str]]) -> dict:
    return {
        "name": name,
        "description": desc,
        "metadata": {
            "source_task_type": task_type,
            "success_signal": "the game reports the task done",
            "abstraction_level": "medium",
            "skill_category": "object manipulation",
        },
        "skill_overview": [desc],
        "when_to_use": [when],
        "inputs_to_identify": ["target object", "target receptacle"],
        "workflow": [
            {
                "step": i + 1,
                "goal": g,
                "action": a,
                "tools_or_strategy": "admissible commands only",
                "completion_condition": f"{g} done",
            }
            for i, (g, a) in enumerate(steps)
        ],  # fmt: skip
        "decision_rules": ["Visit receptacles you have not checked yet before revisiting others."],
        "error_handling": [
            {"error": "Nothing happens", "cause": "action not admissible", "response": "pick another"}
        ],
        "output_requirements": ["One admissible action per turn."],
    }


HAND_SKILLS = [
    _skill(
        "find-take-and-place",
        "pick_and_place_simple",
        "Find an object, take it, and put it in or on the target receptacle.",
        "The task asks to put some object in or on a receptacle.",
        [
            ("find the object", "go to receptacles until the object is seen"),
            ("take it", "take the object from where it lies"),
            ("place it", "go to the target receptacle and move the object to it"),
        ],
    ),  # fmt: skip
    _skill(
        "heat-with-microwave",
        "pick_heat_then_place_in_recep",
        "Heat an object with the microwave before placing it.",
        "The task asks to put a hot or heated object somewhere.",
        [
            ("find and take the object", "take it from its receptacle"),
            ("heat it", "go to microwave 1 and heat the object with it"),
            ("place it", "go to the target and move the object to it"),
        ],
    ),  # fmt: skip
]


def build_library(directory: str | Path) -> list[tuple[str, str]]:
    """A library with HAND_SKILLS marked accepted (embedded like the trainer does); (name, id) pairs."""
    from skills.library import Provenance, SkillLibrary
    from skills.retrieval import Embedder, skill_key
    from skills.schema import validate_skill_dict

    lib = SkillLibrary(directory)
    emb = Embedder("minilm")
    out = []
    for d in HAND_SKILLS:
        skill = validate_skill_dict(d)
        vec = emb.embed([skill_key(skill)])[0].tolist()
        sid = lib.add(skill, Provenance("hand-written", 0, 0, skill.metadata.source_task_type), vec,
                      status="accepted")  # fmt: skip
        out.append((skill.name, sid))
    lib.save()
    return out


# ------------------------------------------------------------------------------ validation (no Ray)


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ([1, 2], 422, "JSON object"),
        ({k: v for k, v in GOOD.items() if k != "task"}, 422, "'task'"),
        ({**GOOD, "task": 3}, 422, "'task': expected a string"),
        ({**GOOD, "task": "  "}, 422, "'task' is empty"),
        ({k: v for k, v in GOOD.items() if k != "observation"}, 422, "'observation'"),
        (
            {k: v for k, v in GOOD.items() if k != "admissible_actions"},
            422,
            "'admissible_actions' is required",
        ),
        ({**GOOD, "admissible_actions": "look"}, 422, "list of strings"),
        ({**GOOD, "admissible_actions": ["look", 3]}, 422, "list of strings"),
        ({**GOOD, "admissible_actions": []}, 422, "is empty"),
        ({**GOOD, "history": [["look"]]}, 422, "history[0]"),
        ({**GOOD, "history": [{"action": "look", "observation": 5}]}, 422, "history[0]"),
        ({**GOOD, "env": "atari"}, 422, "'env'"),
        ({**GOOD, "admissable_actions": []}, 422, "unknown field"),
        ({**GOOD, "seed": "1"}, 422, "'seed'"),
        ({**GOOD, "seed": 2**70}, 422, "'seed'"),
        ({**GOOD, "seed": -1}, 422, "'seed'"),
        ({**GOOD, "admissible_actions": [f"go to shelf {i}" for i in range(2001)]}, 413, "2001"),
    ],
)
def test_parse_request_rejects(body, status, needle):
    with pytest.raises(RequestError) as e:
        parse_request(body)
    assert e.value.status == status
    assert needle in str(e.value)


def test_parse_request_accepts_both_envs():
    r = parse_request({**GOOD, "admissible_actions": ["look", " look ", "go to toilet 1"]})
    assert r.env == "alfworld" and r.admissible_actions == ["look", "go to toilet 1"]
    assert r.history == [("look", "You see a toilet 1.")]
    r = parse_request({"env": "mind2web", "task": "Find flights", "page": "[1] <button> Search"})
    assert r.observation == "[1] <button> Search" and r.admissible_actions == []
    r = parse_request({**GOOD, "history": [{"action": "look", "observation": "ok"}]})
    assert r.history == [("look", "ok")]


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({**CHAT, "temperature": 3}, 422, "'temperature'"),
        ({**CHAT, "temperature": float("nan")}, 422, "finite number"),
        ({**CHAT, "temperature": "hot"}, 422, "'temperature'"),
        ({**CHAT, "top_p": 0}, 422, "'top_p'"),
        ({**CHAT, "max_tokens": 10**6}, 422, "'max_tokens'"),
        ({**CHAT, "max_tokens": 2.5}, 422, "integer"),
        ({**CHAT, "seed": 2**64}, 422, "'seed'"),
        ({**CHAT, "n": 2}, 422, "'n'"),
        ({**CHAT, "stop": ["a"] * 5}, 422, "'stop'"),
        ({**CHAT, "stream": True}, 400, "streaming is not supported"),
        ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, 422, "messages[0]"),
        ({**CHAT, "messages": [{"role": "user", "content": {"nested": [1]}}]}, 422, "messages[0].content"),
        ({**CHAT, "frobnicate": 1}, 422, "unknown field"),
    ],
)
def test_parse_chat_rejects_every_bad_field(body, status, needle):
    with pytest.raises(RequestError) as e:
        parse_chat(body)
    assert e.value.status == status and needle in str(e.value)
    ok = parse_chat({**CHAT, "temperature": 0.7, "seed": 3, "stop": "x", "stream": False})
    assert (ok.temperature, ok.seed, ok.stop, ok.max_tokens) == (0.7, 3, ["x"], 128)


def test_decode_body_limits():
    with pytest.raises(RequestError) as e:
        decode_body(b"x" * 2000, 1024)
    assert e.value.status == 413
    with pytest.raises(RequestError) as e:
        decode_body(b"{not json", 1024)
    assert e.value.status == 400
    with pytest.raises(RequestError) as e:
        decode_body(b'{"a": ' + b"[" * 500 + b"]" * 500 + b"}", 10_000)
    assert e.value.status == 400 and "nested deeper" in str(e.value)


def test_model_from_checkpoint_layouts(tmp_path):
    from cluster.core.storage import write_json, write_manifest

    ckpt = tmp_path / "run" / "checkpoints" / "iter-00002"
    hf = ckpt / "model"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    write_json(ckpt / "trainer_state.json", {"iteration": 2})
    write_manifest(ckpt)
    assert model_from_checkpoint(str(hf)) == str(hf)
    assert model_from_checkpoint(str(ckpt)) == str(hf)  # a checkpoint (iter-N)
    assert model_from_checkpoint(str(tmp_path / "run")) == str(hf)  # run folder: its newest complete one
    assert model_from_checkpoint(str(ckpt.parent)) == str(hf)  # checkpoints root
    (hf / "config.json").write_text('{"torn": true}')  # no longer matches its manifest
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        model_from_checkpoint(str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        model_from_checkpoint(str(tmp_path / "missing"))


def test_play_refuses_an_unusable_token_file(tmp_path, monkeypatch, capsys):
    """A token file that is missing, empty or not text stops `evorl play` before any request (an
    empty one would otherwise send no token and get 401 on every episode)."""
    from cluster.cli import main

    empty, binary = tmp_path / "empty", tmp_path / "binary"
    empty.write_text("\n")
    binary.write_bytes(b"\xff\xfe\x00token")
    for path, needle in ((empty, "empty"), (binary, "decode"), (tmp_path / "missing", "No such file")):
        monkeypatch.setenv("EVORL_TOKEN_FILE", str(path))  # the default of --token-file
        with pytest.raises(SystemExit) as e:
            main(["play", "--endpoint", "http://127.0.0.1:9", "--env", "mind2web"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"--token-file {path}" in err and needle in err, err


@pytest.mark.parametrize("context", ["sequence", "window"])
def test_serving_prompt_is_the_rollout_prompt(context):
    """/act builds the prompt the episode loop built at the same point of the same episode."""
    from transformers import AutoTokenizer

    from actors.episode import EpisodeRunner, EpisodeSettings
    from cluster.core.config import load_config
    from cluster.core.model_store import resolve_model
    from cluster.core.records import EpisodeJob, TaskSpec
    from cluster.serving.agent import AgentCore
    from tests.test_sft import DEMO_B, ReplayEngine, ReplayEnv

    try:
        tok = AutoTokenizer.from_pretrained(resolve_model("embedded"))
    except FileNotFoundError as e:
        pytest.skip(str(e))
    cfg = load_config(None, [f"env.context={context}", "env.history_window=2"])

    class Recording(ReplayEngine):
        prompts: list = []

        def generate(self, prompts, params):
            self.prompts.append(prompts[0])
            return super().generate(prompts, params)

    engine = Recording(tok, DEMO_B, True)
    task = TaskSpec("t2", "alfworld", DEMO_B["task_type"], DEMO_B["task_text"], "ref")
    from cluster.core.generation import GenParams

    EpisodeRunner(engine, EpisodeSettings.from_config(cfg)).run(
        [ReplayEnv(DEMO_B)], [EpisodeJob(task)], GenParams(), ["x"]
    )
    core = AgentCore(cfg, "unused", engine=engine)
    steps = DEMO_B["steps"]
    for k, rollout_prompt in enumerate(engine.prompts):
        history = [[steps[i]["action"], steps[i + 1]["observation"]] for i in range(k)]
        req = parse_request({"task": DEMO_B["task_text"], "observation": steps[k]["observation"],
                             "admissible_actions": steps[k]["admissible_actions"], "history": history,
                             "steps": steps[:k]})  # fmt: skip
        ids, _ = core.prompt(req, None, 16)
        assert tok.decode(ids) == tok.decode(rollout_prompt), k
        assert ids == rollout_prompt, k


# ------------------------------------------------------------------------------------ the Serve app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: bytes | dict, token: str | None = TOKEN) -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def game_dir(tmp_path_factory):
    from envs.alfworld.generator import generate

    out = tmp_path_factory.mktemp("games")
    generate(str(out), per_type=1, seed=3, preset="easy", splits=["train"],
             task_types=["pick_and_place_simple", "pick_heat_then_place_in_recep"])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory, game_dir):
    """(base URL, [(skill name, id)]) of a running app; Ray with 2 CPUs and no dashboard."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from cluster.core.config import load_config
    from cluster.core.model_store import resolve_model
    from cluster.placement import actor_env
    from cluster.serving.app import start

    try:
        model = resolve_model("embedded")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    lib_dir = tmp_path_factory.mktemp("library")
    skills = build_library(lib_dir)
    token_file = lib_dir / "token"
    token_file.write_text(TOKEN + "\n")
    cfg = load_config(None, [f"serve.port={_free_port()}", "engine.kv_cache_gib=0.5",
                             "model.max_model_len=1536", "serve.max_request_chars=20000",
                             f"serve.token_file={token_file}", "serve.max_queue=2"])  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": actor_env(cfg)})  # fmt: skip
    try:
        url = start(cfg, model, str(lib_dir))
        yield url, skills
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def alf_task(game_dir):
    from envs.alfworld.tasks import list_tasks

    return next(t for t in list_tasks(str(game_dir), "train") if t.task_type == "pick_and_place_simple")


@pytest.mark.slow
def test_act_returns_admissible_action_and_skills(served, alf_task):
    from envs.alfworld.env import AlfWorldEnv

    url, skills = served
    env = AlfWorldEnv(max_steps=10)
    obs = env.reset(alf_task)
    history: list[list[str]] = []
    try:
        for _ in range(3):
            body = {"task": obs.task_text, "task_type": alf_task.task_type, "observation": obs.text,
                    "admissible_actions": obs.admissible_actions, "history": history}  # fmt: skip
            status, ans = _post(f"{url}/act", body)
            assert status == 200, ans
            assert ans["action"] in obs.admissible_actions
            assert ans["constrained"] and ans["raw_text"].strip() == ans["action"]
            # top-1 retrieval over the two accepted skills picks the pick-and-place one for this type
            assert [(s["name"], s["skill_id"]) for s in ans["skills_used"]] == [skills[0]]
            step = env.step(ans["action"])
            history.append([ans["action"], step.observation.text])
            obs = step.observation
            if step.done:
                break
    finally:
        env.close()
    status, ans = _post(f"{url}/act", {**GOOD, "task": "heat some egg and put it in the fridge",
                                       "task_type": "pick_heat_then_place_in_recep"})  # fmt: skip
    assert status == 200 and ans["skills_used"][0]["name"] == "heat-with-microwave"


@pytest.mark.slow
def test_malformed_requests_get_4xx_and_replica_survives(served):
    url, _ = served
    status, ans = _post(f"{url}/act", {"observation": "x", "admissible_actions": ["look"]})
    assert status == 422 and "'task'" in ans["error"]["message"]
    status, ans = _post(f"{url}/act", b"{oops")
    assert status == 400 and "not valid JSON" in ans["error"]["message"]
    status, ans = _post(f"{url}/act", {**GOOD, "observation": "y" * 30000})
    assert status == 413 and "max_request_chars" in ans["error"]["message"]
    status, ans = _post(f"{url}/act", {**GOOD, "admissible_actions": "look"})
    assert status == 422
    # the context limit is a 4xx too: a long action list that cannot fit in 1536 tokens
    many = [f"go to shelf {i} and then some more words here" for i in range(300)]
    status, ans = _post(f"{url}/act", {**GOOD, "admissible_actions": many})
    assert status == 422 and "model context" in ans["error"]["message"]
    status, ans = _post(f"{url}/act", GOOD)
    assert status == 200 and ans["action"] in GOOD["admissible_actions"]


@pytest.mark.slow
def test_openai_surface_with_the_official_client(served):
    import openai

    url, _ = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list()] and client.models.list().data[0].owned_by == "evorl"
    ans = client.chat.completions.create(
        model="evorl", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
    )
    assert ans.object == "chat.completion" and isinstance(ans.choices[0].message.content, str)
    assert 1 <= ans.usage.completion_tokens <= 8
    with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
        client.chat.completions.create(
            model="evorl", messages=[{"role": "user", "content": "x"}], stream=True
        )
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="evorl", messages=[{"role": "user", "content": "x"}], temperature=2.5
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-token-000000000", max_retries=0).models.list()


@pytest.mark.slow
def test_auth_queue_bound_and_health(served):
    from concurrent.futures import ThreadPoolExecutor

    url, _ = served
    status, ans = _post(f"{url}/act", GOOD, token=None)
    assert status == 401 and "bearer token" in ans["error"]["message"]
    with urllib.request.urlopen(f"{url}/health", timeout=30) as r:  # no token needed: load balancers
        health = json.loads(r.read())
    assert health["status"] == "ok" and health["policy_version"] == 0  # the embedded model: no training yet
    slow = {
        "model": "evorl",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 200,
    }
    with ThreadPoolExecutor(6) as ex:
        codes = [c for c, _ in ex.map(lambda _: _post(f"{url}/v1/chat/completions", slow), range(6))]
    assert codes.count(200) >= 1 and 503 in codes and set(codes) <= {200, 503}  # serve.max_queue=2
    assert _post(f"{url}/act", GOOD)[0] == 200  # and the replica goes on


@pytest.mark.slow
def test_evorl_play_reports_success_rate(served, game_dir, tmp_path, capsys):
    from cluster.cli import build_parser

    url, _ = served
    out = tmp_path / "play.json"
    token = tmp_path / "token"
    token.write_text(TOKEN)
    argv = ["play", "--endpoint", url, "--env", "alfworld", "--games", str(game_dir), "--max-steps", "3",
            "--parallel", "2", "--out", str(out)]  # fmt: skip
    anonymous = build_parser().parse_args([*argv[:-2], "--max-games", "1"])
    assert anonymous.func(anonymous) == 1  # no token: the /act requests are refused (401), counted as errors
    args = build_parser().parse_args([*argv, "--token-file", str(token)])
    assert args.func(args) == 0
    report = json.loads(out.read_text())
    assert report["games"] == 2 and report["completed"] == 2 and report["errors"] == 0
    assert 0.0 <= report["success_rate"] <= 1.0
    assert report["won"] == sum(e["won"] for e in report["episodes"])
    assert all(1 <= e["steps"] <= 3 for e in report["episodes"])
    assert all(e["skills_used"] for e in report["episodes"])
    assert "success rate" in capsys.readouterr().out
