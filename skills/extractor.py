"""The extractor's prompt: one trajectory (with its outcome) in, analysis and one skill JSON out.

Frame after the authors' `format_extractor_messages`: one user message holding the task, the
trajectory between markers, the true outcome, then the extraction guidance and the schema (our own
words, shorter: small contexts). The transcript is the solver episode's readable text
(`EpisodeResult.text`); admissible-action lists are removed (long, environment-specific, teach
nothing reusable; a deliberate difference, docs/fidelity.md), control tokens are stripped, and the
middle is cut when the transcript is longer than `max_chars` (the head holds the task and the tail
the outcome).
"""

from __future__ import annotations

import re

from cluster.core.generation import GenParams
from cluster.core.records import EpisodeResult
from cluster.core.text import encode_messages, sanitize
from skills.schema import SKILL_JSON_SCHEMA

# A line that introduces an action list: "Admissible actions: ...", "## Available actions", "valid actions:".
_ACTION_LIST_HEAD = re.compile(
    r"^\s*(?:#+\s*)?(?:admissible|available|valid|possible)\s+(?:actions|commands)\b", re.I
)
# Transcript lines that end such a list (the next turn, observation, outcome or section).
_BLOCK_END = re.compile(r"^\s*(?:>|#|observation\b|outcome\b|task\b|action\b)", re.I)

GUIDANCE = (
    "Extract one reusable skill from this case: the general strategy behind it, when it applies and "
    "when it does not, the steps to follow, the decision rules, and how to recover from errors. Be "
    "abstract (no object numbers or other details of this one episode) and ground every point in "
    "the trajectory: from a success keep what worked, from a failure keep what went wrong and how "
    "to avoid it. You may write a short analysis first; end with one JSON object with these keys:"
)
SCHEMA_TEXT = (
    '{"name": "kebab-case-name", "description": "what it does and when, one sentence", '
    '"metadata": {"source_task_type": "...", "success_signal": "success or failure", '
    '"abstraction_level": "low|medium|high", "skill_category": "..."}, '
    '"skill_overview": ["..."], "when_to_use": ["..."], "when_not_to_use": ["..."], '
    '"inputs_to_identify": ["..."], '
    '"workflow": [{"step": 1, "goal": "...", "action": "...", "tools_or_strategy": "...", '
    '"completion_condition": "..."}], '
    '"decision_rules": ["..."], "error_handling": [{"error": "...", "cause": "...", "response": "..."}], '
    '"output_requirements": ["..."]}\n'
    "Only name and description are required; keep every item short."
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
        return f"False (the episode crashed after {episode.steps} steps: {sanitize(episode.error, 200)})"
    if episode.won:
        return f"True (the task was completed in {episode.steps} steps)"
    why = ", step limit reached" if episode.truncated else ""
    return f"False (the task was not completed after {episode.steps} steps{why})"


def extractor_messages(episode: EpisodeResult, max_chars: int = 3000) -> list[dict[str, str]]:
    """Chat messages asking for one skill from `episode` (a solver episode)."""
    transcript = cap_middle(strip_action_lists(sanitize(episode.text)).strip(), max_chars)
    user = (
        f"Task ({sanitize(episode.task.task_type, 100)}): {sanitize(episode.task.text, 500)}\n\n"
        f"Agent's trajectory:\n<<<BEGIN_TRAJECTORY>>>\n{transcript or '(empty)'}\n<<<END_TRAJECTORY>>>\n\n"
        f"True environment success: {outcome_line(episode)}\n\n"
        f"{GUIDANCE}\n{SCHEMA_TEXT}"
    )
    return [{"role": "user", "content": user}]


def extractor_prompt(
    tokenizer, episode: EpisodeResult, max_new_tokens: int, max_model_len: int
) -> tuple[list[int], bool]:
    """(prompt ids, cut): the extractor prompt, with the trajectory cut shorter until prompt + skill fit
    the context. A prompt that cannot fit even without a trajectory is a config error (named keys)."""
    for n, max_chars in enumerate((3000, 1500, 600, 0)):
        ids = encode_messages(tokenizer, extractor_messages(episode, max_chars))
        if len(ids) + max_new_tokens <= max_model_len:
            return ids, n > 0
    raise ValueError(
        f"extractor prompt of {len(ids)} tokens + skills.extractor_max_tokens ({max_new_tokens}) exceeds "
        f"model.max_model_len ({max_model_len}) even without the trajectory (episode {episode.episode_id})"
    )


def extractor_gen_params(
    skills_cfg, seed: int | None = None, greedy: bool = False, logprobs: bool = False
) -> GenParams:
    """GenParams for the extractor candidates of one trajectory (config section `skills`); `greedy`
    for evaluation (the authors extract one skill at temperature 0)."""
    return GenParams(
        temperature=0.0 if greedy else skills_cfg.extractor_temperature,
        top_p=1.0 if greedy else skills_cfg.extractor_top_p,
        max_tokens=skills_cfg.extractor_max_tokens,
        seed=seed,
        n=1 if greedy else skills_cfg.n_candidates,
        json_schema=SKILL_JSON_SCHEMA if skills_cfg.constrained_json else None,
        logprobs=logprobs,
    )
