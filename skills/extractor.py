"""The extractor's prompt: one trajectory (with its outcome) in, one skill JSON out.

The transcript is the solver episode's readable text (`EpisodeResult.text`). Admissible-action lists
are removed (they are long, environment-specific and teach nothing reusable), control tokens are
stripped, and the middle is cut when the transcript is longer than `max_chars` (the task at the head
and the outcome at the tail are what the skill needs most).
"""

from __future__ import annotations

import re

from cluster.records import EpisodeResult
from skills.parse import ParseResult, score_candidates
from skills.schema import SKILL_JSON_SCHEMA, clean_text

# A line that introduces an action list: "Admissible actions: ...", "## Available actions", "valid actions:".
_ACTION_LIST_HEAD = re.compile(
    r"^\s*(?:#+\s*)?(?:admissible|available|valid|possible)\s+(?:actions|commands)\b", re.I
)
# Transcript lines that end such a list (the next turn, observation, outcome or section).
_BLOCK_END = re.compile(r"^\s*(?:>|#|observation\b|outcome\b|task\b|action\b)", re.I)

SYSTEM = (
    "You are a skill extractor. You read one agent trajectory and write one reusable skill: "
    "general advice that helps an agent solve similar tasks, not a replay of this episode's exact "
    "object numbers. From a success, capture the strategy that worked; from a failure, capture what "
    "went wrong and how to avoid it. Answer with one JSON object only, with exactly these keys:\n"
    '{"name": "kebab-case-name", "description": "...", '
    '"metadata": {"source_task_type": "...", "success_signal": "...", "abstraction_level": "low|medium|high", '
    '"skill_category": "..."}, "skill_overview": "...", "when_to_use": "...", '
    '"inputs_to_identify": ["..."], '
    '"workflow": [{"step": 1, "goal": "...", "action": "...", "tools_or_strategy": "...", '
    '"completion_condition": "..."}], '
    '"decision_rules": ["..."], "error_handling": [{"error": "...", "cause": "...", "response": "..."}], '
    '"output_requirements": "..."}\n'
    "Keep every string short (one sentence); at most 5 workflow steps."
)


def strip_action_lists(text: str) -> str:
    """Remove admissible-action list headers and the list lines that follow them."""
    out, skipping = [], False
    for line in text.splitlines():
        if _ACTION_LIST_HEAD.match(line):
            skipping = True
            continue
        if skipping:
            if not line.strip() or _BLOCK_END.match(line):
                skipping = False
            else:
                continue
        out.append(line)
    return "\n".join(out)


def cap_middle(text: str, max_chars: int) -> str:
    """Keep the first third and the last two thirds of the budget, marking the cut."""
    if len(text) <= max_chars:
        return text
    marker = f"\n[... {len(text) - max_chars} characters omitted ...]\n"
    budget = max(0, max_chars - len(marker))
    head = budget // 3
    return text[:head] + marker + text[len(text) - (budget - head) :]


def outcome_line(episode: EpisodeResult) -> str:
    if episode.failed:
        return f"FAILURE: the episode crashed after {episode.steps} steps ({clean_text(episode.error, 200)})."
    if episode.won:
        return f"SUCCESS: the task was completed in {episode.steps} steps."
    why = " (step limit reached)" if episode.truncated else ""
    return f"FAILURE: the task was not completed after {episode.steps} steps{why}."


def extractor_messages(episode: EpisodeResult, max_chars: int = 3000) -> list[dict[str, str]]:
    """Chat messages asking for one skill from `episode` (a solver episode)."""
    if episode.role != "solver":
        raise ValueError(f"extractor_messages: episode {episode.episode_id} has role {episode.role!r}")
    transcript = cap_middle(strip_action_lists(clean_text(episode.text)).strip(), max_chars)
    user = (
        f"## Task type\n{clean_text(episode.task.task_type, 100)}\n\n"
        f"## Task\n{clean_text(episode.task.text, 500)}\n\n"
        f"## Outcome\n{outcome_line(episode)}\n\n"
        f"## Trajectory\n{transcript or '(empty)'}\n\n"
        "Write the skill JSON now."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def extractor_prompt(
    tokenizer, episode: EpisodeResult, max_new_tokens: int, max_model_len: int
) -> tuple[list[int], bool]:
    """(prompt ids, cut): the extractor prompt, with the trajectory cut shorter until prompt + skill fit
    the context. A prompt that cannot fit even without a trajectory is a config error (named keys)."""
    from actors.prompts import encode_messages

    for n, max_chars in enumerate((3000, 1500, 600, 0)):
        ids = encode_messages(tokenizer, extractor_messages(episode, max_chars))
        if len(ids) + max_new_tokens <= max_model_len:
            return ids, n > 0
    raise ValueError(
        f"extractor prompt of {len(ids)} tokens + skills.extractor_max_tokens ({max_new_tokens}) exceeds "
        f"model.max_model_len ({max_model_len}) even without the trajectory (episode {episode.episode_id})"
    )


def extractor_gen_params(skills_cfg, seed: int | None = None):
    """GenParams for the N extractor candidates of one trajectory (config section `skills`)."""
    from actors.engine import GenParams

    return GenParams(
        temperature=skills_cfg.extractor_temperature,
        max_tokens=skills_cfg.extractor_max_tokens,
        seed=seed,
        n=skills_cfg.n_candidates,
        json_schema=SKILL_JSON_SCHEMA if skills_cfg.constrained_json else None,
    )


def format_scores(texts: list[str], max_skill_chars: int) -> list[ParseResult]:
    """Format score per candidate: `.score` is 1.0 for a valid skill, 0.0 otherwise (with `.reason`)."""
    return score_candidates(texts, max_chars=max_skill_chars)
