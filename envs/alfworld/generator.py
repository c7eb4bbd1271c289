"""Offline procedural generator of ALFWorld games from what the `alfworld` package ships.

The official game files cannot be downloaded here, but alfworld ships the ALFRED PDDL domain, the
TextWorld grammar, the object/receptacle constants (what fits where, what can be cleaned, heated,
cooled, toggled, opened), the goal library (PDDL goal + task sentences for every task type) and the
receptacle layouts of all 120 AI2-THOR rooms. A game here is one of those rooms, a subset of its
receptacles, objects placed in receptacles that can hold them, and a goal from the goal library,
written in the official layout `<split>/<task-folder>/trial_N/{traj_data.json, game.tw-pddl}`.

Every game is played to the goal by the Fast Downward planner on the real engine before it is
written. Each game draws from its own RNG seeded by (seed, preset, split, task type, index), so the
output is byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

from cluster.core.storage import atomic_write_text
from envs.alfworld.tasks import SPLITS, TASK_TYPES

GENERATOR_VERSION = 1
MANIFEST = "evorl_alfworld.json"
MAX_ATTEMPTS = 40

# The appliance each task type needs, as a receptacle type.
APPLIANCE = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}
ACTION_PROPERTY = {
    "pick_clean_then_place_in_recep": "Cleanable",
    "pick_heat_then_place_in_recep": "Heatable",
    "pick_cool_then_place_in_recep": "Coolable",
}
LAMPS = ("DeskLamp", "FloorLamp")
# Furniture a lamp may stand on (alfworld's constants do not list lamps as contents of anything).
LAMP_HOSTS = ("Desk", "SideTable", "Dresser", "Shelf", "CoffeeTable", "TVStand", "Bed", "Sofa", "ArmChair")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """Difficulty knobs. Ranges are inclusive; the drawn values are recorded in each game's metadata."""

    name: str
    receptacles: tuple[int, int]  # receptacles kept from the room
    distractors: tuple[int, int]  # non-target objects placed in them
    targets: tuple[int, int]  # instances of the target object (pick_two: at least 2)
    hidden_prob: float  # probability that the targets start inside closed (openable) receptacles


PRESETS: dict[str, Preset] = {
    # A small model can win some of these: few places to look, target in plain sight.
    "easy": Preset("easy", receptacles=(4, 6), distractors=(0, 3), targets=(1, 1), hidden_prob=0.0),
    # Like real ALFWorld rooms: 6-26 receptacles, cluttered, targets often behind doors.
    "standard": Preset("standard", receptacles=(6, 26), distractors=(8, 20), targets=(1, 3), hidden_prob=0.5),
}


@dataclass(frozen=True)
class Receptacle:
    id: str  # AI2-THOR object id, e.g. "Cabinet|+00.68|+00.50|-02.20"
    type: str  # e.g. "Cabinet", "SinkBasin"
    location: str  # e.g. "loc|0|-5|180|30"


@dataclass
class GameSpec:
    """One sampled game before it is rendered to PDDL."""

    task_type: str
    scene: int
    object_target: str
    parent_target: str  # "" for look_at_obj_in_light
    toggle_target: str  # lamp type for look_at_obj_in_light, else ""
    receptacles: list[Receptacle]
    objects: list[tuple[str, str, str]]  # (object id, type, receptacle id)
    task_desc: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    seed: int
    preset: str
    split: str
    task_type: str
    index: int


# --- what alfworld ships ----------------------------------------------------------------------------
@cache
def _alfworld() -> tuple[Any, Any, str, str, str]:
    os.environ.setdefault("ALFWORLD_DATA", os.path.join(os.getcwd(), ".cache", "alfworld"))
    import alfworld.gen.constants as constants
    import alfworld.gen.goal_library as goals
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    with open(ALFRED_PDDL_PATH, encoding="utf-8") as f:
        domain = f.read()
    with open(ALFRED_TWL2_PATH, encoding="utf-8") as f:
        grammar = f.read()
    layouts = os.path.join(os.path.dirname(constants.__file__), "layouts")
    return constants, goals, domain, grammar, layouts


@cache
def pickupable_types() -> frozenset[str]:
    """Object types some receptacle can hold (lamps and sliced variants excluded)."""
    c = _alfworld()[0]
    held = set().union(*c.VAL_RECEPTACLE_OBJECTS.values())
    return frozenset(t for t in held if t in c.OBJECTS and "Sliced" not in t and t not in LAMPS)


@cache
def room(scene: int) -> tuple[tuple[Receptacle, ...], frozenset[str]]:
    """(receptacles, object types present) of AI2-THOR room FloorPlan<scene>."""
    c, _, _, _, layouts = _alfworld()
    with open(os.path.join(layouts, f"FloorPlan{scene}-openable.json"), encoding="utf-8") as f:
        points = json.load(f)
    with open(os.path.join(layouts, f"FloorPlan{scene}-objects.json"), encoding="utf-8") as f:
        types = frozenset(json.load(f))
    receps = []
    for rid in sorted(points):
        parts = rid.split("|")
        rtype = parts[-1] if parts[-1].endswith("Basin") else parts[0]
        if rtype not in c.VAL_RECEPTACLE_OBJECTS or rtype in c.MOVABLE_RECEPTACLES_SET:
            continue
        x, z, rot, hor = points[rid]
        loc = f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{int(rot)}|{int(hor)}"
        receps.append(Receptacle(rid, rtype, loc))
    return tuple(receps), types


def scene_type(scene: int) -> str:
    for name, numbers in _alfworld()[0].SCENE_TYPE.items():
        if scene in numbers:
            return name
    raise ValueError(f"scene {scene}: not in alfworld's SCENE_TYPE")


def scenes_for(split: str, task_type: str) -> list[int]:
    """Rooms of a split where the task type is valid: train/valid_seen share rooms, valid_unseen is held out."""
    c = _alfworld()[0]
    pool = c.TEST_SCENE_NUMBERS if split == "valid_unseen" else c.TRAIN_SCENE_NUMBERS
    valid = c.GOALS_VALID[task_type]
    return sorted(s for s in pool if scene_type(s) in valid)


def can_hold(rtype: str, otype: str) -> bool:
    return otype in _alfworld()[0].VAL_RECEPTACLE_OBJECTS.get(rtype, ())


# --- sampling ---------------------------------------------------------------------------------------
def _targets(
    task_type: str, receps: Sequence[Receptacle], types: frozenset[str]
) -> list[tuple[str, str, str]]:
    """All feasible (object, parent, toggle) choices in a room, sorted."""
    c = _alfworld()[0]
    rtypes = sorted({r.type for r in receps})
    objs = sorted(types & pickupable_types())
    if task_type in ACTION_PROPERTY:
        if APPLIANCE[task_type] not in rtypes:
            return []
        objs = [o for o in objs if o in c.VAL_ACTION_OBJECTS[ACTION_PROPERTY[task_type]]]
    out = []
    if task_type == "look_at_obj_in_light":
        lamps = [lamp for lamp in LAMPS if lamp in types]
        if not lamps or not any(t in LAMP_HOSTS for t in rtypes):
            return []
        for o in objs:
            if any(can_hold(t, o) for t in rtypes):
                out += [(o, "", lamp) for lamp in lamps]
        return out
    for o in objs:
        for p in rtypes:
            if p == APPLIANCE.get(task_type) or not can_hold(p, o):
                continue
            # the targets must start somewhere other than the goal receptacle type
            starts = [t for t in rtypes if t != p and can_hold(t, o) and not _spoils(task_type, t)]
            if starts:
                out.append((o, p, ""))
    return out


def _spoils(task_type: str, rtype: str) -> bool:
    # an object found in the fridge reads as already cold to a player; keep cool tasks honest
    return task_type == "pick_cool_then_place_in_recep" and rtype == "Fridge"


def _object_id(rng: random.Random, otype: str, used: set[str]) -> str:
    while True:
        oid = f"{otype}|{rng.randrange(16**6):06x}"
        if oid not in used:
            used.add(oid)
            return oid


def sample_game(rng: random.Random, task_type: str, scenes: Sequence[int], preset: Preset) -> GameSpec | None:
    """One random game; None when the drawn room cannot host the task (the caller redraws)."""
    c, goals, _, _, _ = _alfworld()
    scene = rng.choice(list(scenes))
    all_receps, types = room(scene)
    choices = _targets(task_type, all_receps, types)
    if not choices:
        return None
    obj, parent, toggle = rng.choice(choices)
    by_type: dict[str, list[Receptacle]] = {}
    for r in all_receps:
        by_type.setdefault(r.type, []).append(r)

    chosen: dict[str, Receptacle] = {}  # id -> receptacle, insertion-ordered

    def take(rtype_options: Sequence[str]) -> Receptacle:
        r = rng.choice([r for t in rtype_options for r in by_type[t]])
        chosen[r.id] = r
        return r

    if parent:
        take([parent])
    if task_type in APPLIANCE:
        take([APPLIANCE[task_type]])
    lamp_host = take(sorted(t for t in by_type if t in LAMP_HOSTS)) if toggle else None

    openable = set(c.OPENABLE_CLASS_SET)
    start_types = sorted(t for t in by_type if t != parent and can_hold(t, obj) and not _spoils(task_type, t))
    hidden_types = [t for t in start_types if t in openable]
    visible_types = [t for t in start_types if t not in openable]
    want_hidden = rng.random() < preset.hidden_prob
    if want_hidden and hidden_types:
        start_types = hidden_types
    elif visible_types:
        start_types = visible_types
    elif preset.hidden_prob == 0.0:
        return None  # the preset promises a visible target
    lo, hi = preset.targets
    pick_two = task_type == "pick_two_obj_and_place"
    n_targets = rng.randint(lo + 1, hi + 1) if pick_two else rng.randint(lo, hi)
    target_hosts = [take(start_types) for _ in range(n_targets)]

    lo, hi = preset.receptacles
    n_receps = max(len(chosen), min(rng.randint(lo, hi), len(all_receps)))
    rest = [r for r in all_receps if r.id not in chosen]
    rng.shuffle(rest)
    for r in rest[: n_receps - len(chosen)]:
        chosen[r.id] = r
    receps = sorted(chosen.values(), key=lambda r: r.id)

    used: set[str] = set()
    objects = [(_object_id(rng, obj, used), obj, h.id) for h in target_hosts]
    if toggle:
        objects.append((_object_id(rng, toggle, used), toggle, lamp_host.id))
    lo, hi = preset.distractors
    others = sorted(t for t in types & pickupable_types() if t != obj)
    n_distractors = 0
    for _ in range(rng.randint(lo, hi)):
        if not others:
            break
        otype = rng.choice(others)
        hosts = [r for r in receps if can_hold(r.type, otype)]
        if hosts:
            objects.append((_object_id(rng, otype, used), otype, rng.choice(hosts).id))
            n_distractors += 1

    template = rng.choice(goals.gdict[task_type]["templates"])
    desc = template.format(obj=obj.lower(), recep=parent.lower(), toggle=toggle.lower(), mrecep="")
    hidden = all(r.type in openable for r in target_hosts)
    meta = {
        "preset": preset.name,
        "num_receptacles": len(receps),
        "num_distractors": n_distractors,
        "num_targets": n_targets,
        "target_in_closed_receptacle": hidden,
        "scene_type": scene_type(scene),
    }
    return GameSpec(task_type, scene, obj, parent, toggle, receps, objects, desc, meta)


# --- rendering --------------------------------------------------------------------------------------
def pddl_name(thor_id: str) -> str:
    """alfworld's mangling of AI2-THOR ids into PDDL names (PlannedGameState.fix_pddl_str_chars)."""
    for a, b in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        thor_id = thor_id.replace(a, b)
    return thor_id


def render_problem(spec: GameSpec, name: str) -> str:
    """The PDDL problem: every object/receptacle type (the domain names some as constants), the
    room's receptacles at their locations, the objects in them, and the goal from the goal library."""
    c, goals, _, _, _ = _alfworld()
    rtypes = sorted(set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES))
    otypes = sorted((set(c.OBJECTS) | c.MOVABLE_RECEPTACLES_SET) - set(rtypes))
    start = "loc_bar_start"
    locs = sorted({pddl_name(r.location) for r in spec.receptacles})
    objs = [(pddl_name(oid), otype, pddl_name(host)) for oid, otype, host in spec.objects]
    held_types = sorted({o[1] for o in objs})

    decl = ["agent1 - agent", f"{start} - location"]
    decl += [f"{loc} - location" for loc in locs]
    decl += [f"{t}Type - otype" for t in otypes]
    decl += [f"{t}Type - rtype" for t in rtypes]
    decl += [f"{pddl_name(r.id)} - receptacle" for r in spec.receptacles]
    decl += [f"{o} - object" for o, _, _ in sorted(objs)]

    init = ["(= (total-cost) 0)", f"(atLocation agent1 {start})"]
    for r in spec.receptacles:
        rid = pddl_name(r.id)
        init += [
            f"(receptacleType {rid} {r.type}Type)",
            f"(receptacleAtLocation {rid} {pddl_name(r.location)})",
        ]
        if r.type in c.OPENABLE_CLASS_SET:
            init.append(f"(openable {rid})")
    actions = c.VAL_ACTION_OBJECTS
    for oid, otype, host in sorted(objs):
        init += [f"(objectType {oid} {otype}Type)", f"(inReceptacle {oid} {host})"]
        if otype in pickupable_types():
            init.append(f"(pickupable {oid})")
        if otype in c.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {oid})")
        for prop, pred in (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable")):
            if otype in actions[prop]:
                init.append(f"({pred} {oid})")
        if otype in actions["Toggleable"]:
            init.append(f"(toggleable {oid})")
    for rt in sorted({r.type for r in spec.receptacles}):
        init += [f"(canContain {rt}Type {ot}Type)" for ot in held_types if can_hold(rt, ot)]

    goal = goals.gdict[spec.task_type]["pddl"].format(
        obj=spec.object_target, recep=spec.parent_target, toggle=spec.toggle_target, mrecep=""
    )
    goal = goal.replace("#", "-").strip()
    indent = "\n        "
    return (
        f"(define (problem {name})\n    (:domain alfred)\n    (:objects{indent}{indent.join(decl)}\n    )\n"
        f"    (:init{indent}{indent.join(init)}\n    )\n    {goal}\n"
    )


def folder_name(spec: GameSpec) -> str:
    """Official naming: <task_type>-<object>-<movable recep>-<parent or lamp>-<scene>."""
    last = spec.toggle_target or spec.parent_target
    return f"{spec.task_type}-{spec.object_target}-None-{last}-{spec.scene}"


def render_game(spec: GameSpec, job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
    """(traj_data, game) JSON objects for a spec; the game's walkthrough is filled in by verify()."""
    _, _, domain, grammar, _ = _alfworld()
    traj = {
        "task_type": spec.task_type,
        "task_id": f"evorl_{job.preset}_{job.split}_{job.task_type}_{job.index}",
        "scene": {"floor_plan": f"FloorPlan{spec.scene}", "scene_num": spec.scene},
        "pddl_params": {
            "object_target": spec.object_target,
            "parent_target": spec.parent_target,
            "toggle_target": spec.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        },
        "turk_annotations": {"anns": [{"task_desc": spec.task_desc, "high_descs": [], "votes": []}]},
        "evorl": {**spec.meta, "generator_version": GENERATOR_VERSION, "seed": job.seed, "split": job.split},
    }
    game = {
        "pddl_domain": domain,
        # alfworld's add_task_to_grammar, with the template drawn from the game's own RNG
        "grammar": grammar.replace("UNKNOWN GOAL", spec.task_desc),
        "pddl_problem": render_problem(spec, f"evorl_{job.split}_{job.task_type}_{job.index}"),
        "solvable": True,
    }
    return traj, game


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


# --- verification and jobs --------------------------------------------------------------------------
def verify(env: Any, game: dict[str, Any], task_type: str) -> list[str] | None:
    """Play the planner's solution on the real engine; the plan if it reaches the goal, else None."""
    obs = env.reset_game(json.loads(dumps(game)), task_type=task_type)
    if env.won or not obs.admissible_actions:
        return None  # solved before the first move, or stuck
    plan = env.expert_actions()
    for i, action in enumerate(plan):
        if action not in env.admissible_actions:
            return None
        res = env.step(action)
        if res.won:
            return plan if i == len(plan) - 1 else None
    return None


_WORKER_ENV: Any = None  # one engine per worker process (a Fast Downward library copy each)


def _worker_env() -> Any:
    global _WORKER_ENV
    if _WORKER_ENV is None:
        from envs.alfworld.env import AlfWorldEnv

        _WORKER_ENV = AlfWorldEnv(max_steps=500)
    return _WORKER_ENV


def _close_worker_env() -> None:
    global _WORKER_ENV
    if _WORKER_ENV is not None:
        _WORKER_ENV.close()
    _WORKER_ENV = None


def run_job(job: Job) -> tuple[Job, str, str, str]:
    """Sample until a game verifies: (job, relative trial folder, traj_data text, game text)."""
    preset = PRESETS[job.preset]
    scenes = scenes_for(job.split, job.task_type)
    for attempt in range(MAX_ATTEMPTS):
        rng = random.Random(f"{job.seed}/{job.preset}/{job.split}/{job.task_type}/{job.index}/{attempt}")
        spec = sample_game(rng, job.task_type, scenes, preset)
        if spec is None:
            continue
        traj, game = render_game(spec, job)
        plan = verify(_worker_env(), game, job.task_type)
        if plan is None:
            continue
        game["walkthrough"] = plan
        traj["evorl"]["planner_steps"] = len(plan)
        traj["evorl"]["attempt"] = attempt
        rel = os.path.join(job.split, folder_name(spec), f"trial_{job.index}")
        return job, rel, dumps(traj), dumps(game)
    raise RuntimeError(
        f"alfworld generator: no solvable {job.task_type} game for {job} in {MAX_ATTEMPTS} attempts"
    )


@dataclass
class GenerationReport:
    out_dir: str
    counts: dict[str, dict[str, int]]  # split -> task type -> games
    total: int


def generate(
    out_dir: str,
    per_type: int,
    seed: int = 0,
    preset: str = "easy",
    workers: int = 1,
    splits: Sequence[str] = SPLITS,
    valid_per_type: int | None = None,
    task_types: Sequence[str] = TASK_TYPES,
    overwrite: bool = False,
) -> GenerationReport:
    """Write `per_type` verified games per task type to train (and `valid_per_type`, default the same,
    to each valid split). Refuses a folder holding other games unless `overwrite` (which only ever
    removes a folder this generator wrote, recognised by its manifest)."""
    if preset not in PRESETS:
        raise ValueError(f"alfworld generator: unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    if per_type < 1:
        raise ValueError(f"alfworld generator: per_type must be >= 1, got {per_type}")
    for s in splits:
        if s not in SPLITS:
            raise ValueError(f"alfworld generator: unknown split {s!r}; expected one of {SPLITS}")
    for t in task_types:
        if t not in TASK_TYPES:
            raise ValueError(f"alfworld generator: unknown task type {t!r}")
    _prepare_out(out_dir, overwrite)
    n_valid = per_type if valid_per_type is None else valid_per_type
    jobs = [
        Job(seed, preset, split, t, i)
        for split in splits
        for t in task_types
        for i in range(per_type if split == "train" else n_valid)
    ]
    counts: dict[str, dict[str, int]] = {s: dict.fromkeys(task_types, 0) for s in splits}
    log.info(
        "generating %d ALFWorld games (%s preset) into %s with %d worker(s)",
        len(jobs),
        preset,
        out_dir,
        workers,
    )
    if workers <= 1:
        try:
            _consume(out_dir, map(run_job, jobs), counts, len(jobs))
        finally:
            _close_worker_env()
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            _consume(out_dir, pool.imap_unordered(run_job, jobs), counts, len(jobs))
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "preset": asdict(PRESETS[preset]),
        "per_type": per_type,
        "valid_per_type": n_valid,
        "splits": list(splits),
        "task_types": list(task_types),
        "counts": counts,
    }
    atomic_write_text(os.path.join(out_dir, MANIFEST), dumps(manifest))
    return GenerationReport(out_dir, counts, sum(sum(v.values()) for v in counts.values()))


def _consume(out_dir: str, results: Any, counts: dict[str, dict[str, int]], total: int) -> None:
    """Write each finished game; a bar on a terminal (tqdm), a log line every 25 games elsewhere."""
    from tqdm import tqdm

    with tqdm(desc="games", unit="game", disable=None, total=total) as bar:
        for job, rel, traj_text, game_text in results:
            atomic_write_text(os.path.join(out_dir, rel, "traj_data.json"), traj_text)
            atomic_write_text(os.path.join(out_dir, rel, "game.tw-pddl"), game_text)
            counts[job.split][job.task_type] += 1
            bar.update(1)
            done = sum(sum(v.values()) for v in counts.values())
            if done % 25 == 0:
                log.info("generated %d games", done)


def _prepare_out(out_dir: str, overwrite: bool) -> None:
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
        return
    entries = [e for e in os.listdir(out_dir) if not e.startswith(".")]
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(f"{out_dir}: not empty; choose another --out or pass --overwrite")
    if MANIFEST not in entries:
        raise FileExistsError(
            f"{out_dir}: not written by this generator (no {MANIFEST}); refusing to overwrite"
        )
    for e in entries:
        p = os.path.join(out_dir, e)
        if os.path.isdir(p) and e in SPLITS:
            shutil.rmtree(p)
        elif e == MANIFEST:
            os.unlink(p)


def ensure_generated(
    data_dir: str, per_type: int, preset: str = "easy", seed: int = 0, workers: int = 1
) -> bool:
    """Generate games into `data_dir` when it holds none yet (the trainer's `env.generate_*` settings).
    Returns True when it generated. A folder with games (generated or official) is left untouched."""
    if os.path.isdir(data_dir):
        for _, _, files in os.walk(data_dir):
            if "game.tw-pddl" in files:
                return False
    generate(data_dir, per_type, seed=seed, preset=preset, workers=workers)
    return True
