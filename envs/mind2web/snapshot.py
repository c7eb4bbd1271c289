"""A compact text view of one Mind2Web step: page elements with short refs, plus the task.

Two views (`env.observation`):
- page (the paper's): every interactive element of the step's cleaned_html (control tags,
  interactive ARIA roles, click handlers) in page order, cut after `env.max_page_elements` by
  position alone, never by the gold; `Snapshot.gold_visible` says whether the cut kept it;
- candidates (MindAct's multiple choice): only the step's candidates, positives plus sampled
  negatives, shuffled with a seeded RNG so position leaks nothing. The gold is always included:
  an easier task whose numbers do not compare with the paper's.
Each element shows as `[ref] role "visible text"`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from envs.mind2web.loader import ActionStep, Candidate

_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "param",
    "source",
    "track",
    "wbr",
}
_HIDDEN = {"script", "style", "noscript", "template"}
_TEXT_ATTRS = ("aria_label", "aria-label", "placeholder", "title", "alt", "value", "name")
_TYPABLE_INPUTS = {"", "text", "search", "email", "tel", "url", "number", "password", "date"}
MAX_TEXT = 80
MAX_OPTIONS = 20


@dataclass
class PageElement:
    backend_node_id: str
    tag: str
    attrs: dict[str, str]
    text: str = ""
    options: list[str] = field(default_factory=list)


class _Collector(HTMLParser):
    """Collects tag, attributes, inner text and <option> texts of the wanted backend_node_ids."""

    def __init__(self, wanted: set[str] | None) -> None:
        super().__init__(convert_charrefs=True)
        self.wanted = wanted
        self.found: dict[str, PageElement] = {}
        self.parts: dict[str, list[str]] = {}
        self.stack: list[tuple[str, str | None]] = []  # (tag, wanted node id or None)
        self.option: list[str] | None = None
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        nid = a.get("backend_node_id")
        wanted = nid in self.wanted if self.wanted is not None else bool(nid) and is_interactive(tag, a)
        keep = nid if wanted and nid not in self.found and not self.hidden else None
        if keep:
            self.found[keep] = PageElement(keep, tag, a)
            self.parts[keep] = []
        if tag in _VOID:
            return
        if tag == "option":
            self.option = []
        if tag in _HIDDEN:
            self.hidden += 1
        self.stack.append((tag, keep))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if not any(t == tag for t, _ in self.stack):
            return  # stray end tag
        while self.stack:
            t, _ = self.stack.pop()
            if t in _HIDDEN:
                self.hidden -= 1
            if t == "option" and self.option is not None:
                text = _collapse(" ".join(self.option))
                for st, nid in reversed(self.stack):
                    if st == "select":
                        if nid is not None and text:
                            self.found[nid].options.append(text)
                        break
                self.option = None
            if t == tag:
                return

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        for _, nid in self.stack:
            if nid is not None:
                self.parts[nid].append(data)
        if self.option is not None:
            self.option.append(data)

    def elements(self) -> dict[str, PageElement]:
        for nid, el in self.found.items():
            el.text = _collapse(" ".join(self.parts[nid]))
        return self.found


def _collapse(s: str) -> str:
    return " ".join(s.split())


_INTERACTIVE_TAGS = {"a", "button", "input", "select", "textarea", "summary"}
_INTERACTIVE_ROLES = {"button", "link", "checkbox", "radio", "tab", "menuitem", "option", "combobox", "textbox",
                      "searchbox", "switch", "slider", "spinbutton", "listbox", "menuitemcheckbox", "treeitem"}  # fmt: skip


def is_interactive(tag: str, attrs: dict[str, str]) -> bool:
    """An element a user can act on: a control tag, an interactive ARIA role, or a click handler."""
    return (tag in _INTERACTIVE_TAGS or attrs.get("role", "").lower() in _INTERACTIVE_ROLES
            or "onclick" in attrs)  # fmt: skip


def find_elements(cleaned_html: str, node_ids: set[str] | None) -> dict[str, PageElement]:
    """The elements of `cleaned_html` whose backend_node_id is in node_ids (missing ones are absent);
    `None`: every interactive element, in page order."""
    p = _Collector(node_ids)
    p.feed(cleaned_html)
    p.close()
    return p.elements()


def role_of(tag: str, attrs: dict[str, str]) -> str:
    if attrs.get("role"):
        return attrs["role"]
    if tag == "a":
        return "link"
    if tag == "select":
        return "combobox"
    if tag == "textarea":
        return "textbox"
    if tag == "input":
        kind = attrs.get("type", "").lower()
        if kind in ("checkbox", "radio"):
            return kind
        if kind in ("submit", "button", "reset", "image"):
            return "button"
        return "searchbox" if kind == "search" else "textbox"
    return tag


def is_typable(tag: str, attrs: dict[str, str]) -> bool:
    if tag == "textarea" or "contenteditable" in attrs:
        return True
    if tag == "input":
        return attrs.get("type", "").lower() in _TYPABLE_INPUTS
    return tag != "select" and attrs.get("role") in ("textbox", "searchbox", "combobox")


def _label(text: str, attrs: dict[str, str]) -> str:
    if not text:
        text = next((attrs[k] for k in _TEXT_ATTRS if attrs.get(k)), "")
    text = _collapse(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


@dataclass(frozen=True)
class SnapElement:
    ref: int
    backend_node_id: str
    tag: str
    role: str
    text: str
    options: tuple[str, ...]
    typable: bool
    is_positive: bool  # gold information: never rendered into the text

    def render(self) -> str:
        line = f"[{self.ref}] {self.role}"
        if self.text:
            line += f' "{self.text}"'
        if self.options:
            line += " options: " + " | ".join(self.options)
        return line


@dataclass(frozen=True)
class Snapshot:
    task: str
    previous_actions: tuple[str, ...]
    elements: tuple[SnapElement, ...]
    page_elements: int = 0  # interactive elements on the page before the cut (page observation)

    @property
    def gold_visible(self) -> bool:
        return any(e.is_positive for e in self.elements)

    def render(self) -> str:
        prev = "\n".join(f"- {a}" for a in self.previous_actions) or "None"
        elems = "\n".join(e.render() for e in self.elements)
        return (
            f"Task: {self.task}\nPrevious actions:\n{prev}\nPage elements:\n{elems}\n"
            "Actions: CLICK [ref] | TYPE [ref] <text> | SELECT [ref] <option>"
        )

    def by_ref(self, ref: int) -> SnapElement | None:
        return self.elements[ref] if 0 <= ref < len(self.elements) else None


def _from_candidate(c: Candidate, el: PageElement | None) -> tuple[str, dict[str, str], str, list[str]]:
    if el is not None:
        return el.tag, el.attrs, el.text, el.options
    # Not found in cleaned_html: fall back to the candidate's own tag and attributes JSON.
    attrs = {k: str(v) for k, v in json.loads(c.attributes).items() if isinstance(v, str | int | float)}
    return c.tag, attrs, "", []


def _element(ref: int, nid: str, tag: str, attrs: dict[str, str], text: str, options: list[str],
             positive: bool) -> SnapElement:  # fmt: skip
    if tag == "select":  # its inner text is the option list; name it by its label attributes
        text = ""
    return SnapElement(ref=ref, backend_node_id=nid, tag=tag, role=role_of(tag, attrs), text=_label(text, attrs),
                       options=tuple(options[:MAX_OPTIONS]) if tag == "select" else (),
                       typable=is_typable(tag, attrs), is_positive=positive)  # fmt: skip


def build_page_snapshot(
    task: str,
    previous_actions: list[str] | tuple[str, ...],
    step: ActionStep,
    max_elements: int,
    previous_k: int = 5,
) -> Snapshot:
    """Every interactive element of the step's page with refs in page order (the paper's observation),
    cut after `max_elements` by position alone: the gold element is visible only when the cut keeps it."""
    found = list(find_elements(step.cleaned_html, None).values())
    pos = {c.backend_node_id for c in step.pos_candidates}
    elements = tuple(_element(ref, el.backend_node_id, el.tag, el.attrs, el.text, el.options, el.backend_node_id in pos)
                     for ref, el in enumerate(found[:max_elements]))  # fmt: skip
    prev = tuple(previous_actions[-previous_k:]) if previous_k > 0 else ()
    return Snapshot(task=task, previous_actions=prev, elements=elements, page_elements=len(found))


def build_snapshot(
    task: str,
    previous_actions: list[str] | tuple[str, ...],
    step: ActionStep,
    max_candidates: int,
    rng: random.Random,
    previous_k: int = 5,
) -> Snapshot:
    """Candidates of `step` (every positive, negatives sampled up to max_candidates in all), shuffled."""
    pos_ids = list(dict.fromkeys(c.backend_node_id for c in step.pos_candidates))
    by_id: dict[str, Candidate] = {}
    for c in (*step.pos_candidates, *step.neg_candidates):
        by_id.setdefault(c.backend_node_id, c)
    neg_ids = [i for i in dict.fromkeys(c.backend_node_id for c in step.neg_candidates) if i not in pos_ids]
    room = max(0, max_candidates - len(pos_ids))
    if len(neg_ids) > room:
        neg_ids = rng.sample(neg_ids, room)
    ids = pos_ids + neg_ids
    rng.shuffle(ids)
    found = find_elements(step.cleaned_html, set(ids))
    pos = set(pos_ids)
    elements = []
    for ref, nid in enumerate(ids):
        tag, attrs, text, options = _from_candidate(by_id[nid], found.get(nid))
        elements.append(_element(ref, nid, tag, attrs, text, options, nid in pos))
    prev = tuple(previous_actions[-previous_k:]) if previous_k > 0 else ()
    return Snapshot(task=task, previous_actions=prev, elements=tuple(elements), page_elements=len(ids))


# Words that separate value phrases in a task text ("from New York to London for 2 adults").
_STOP = set(
    """a an the to from for in on at of with and or by near under over into onto than then
that which who whose what where when is are be was my me i you your it its this these those all any
some find search show book buy get browse check look see add open view go select choose pick set
sorted showing leaving posted named called
please want need also only just using use via as about between within without per""".split()
)
_WORD = re.compile(r"[\w$€£.'’/:+@#&-]+|[,;!?()\"]")


def _entity_like(tok: str) -> bool:
    return tok[:1].isupper() or any(c.isdigit() for c in tok) or any(c in tok for c in "$€£@#")


def value_phrases(task: str, limit: int = 16) -> list[str]:
    """Gold-free guesses at what a TYPE step may type: quoted strings, runs of task words between
    stopwords and punctuation, and runs of name- or number-like words ("FA 3321", "April 12").
    Used only to offer TYPE choices for constrained decoding."""
    out = re.findall(r"[\"“]([^\"”]{2,60})[\"”]", task)
    toks = [*_WORD.findall(task), ","]
    for keep in (lambda t: t.lower() not in _STOP, _entity_like):
        run: list[str] = []
        for i, tok in enumerate(toks):
            sentence_start = i == 0 and keep is _entity_like  # "Find ..." is capitalised, not a name
            if tok in ',;!?()"' or sentence_start or not keep(tok) or tok.lower() in _STOP:
                if run:
                    out.append(" ".join(run).strip(".:"))
                run = []
            else:
                run.append(tok)
    seen: dict[str, None] = {}
    for p in out:
        p = _collapse(p)
        if p and p.lower() not in {s.lower() for s in seen}:
            seen[p] = None
    return list(seen)[:limit]
