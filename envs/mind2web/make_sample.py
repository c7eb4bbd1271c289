"""Generate the bundled Mind2Web-format SAMPLE (not the benchmark) from hand-written templates.

    python -m envs.mind2web.make_sample [OUT_DIR]     # default: envs/mind2web/sample

The websites, tasks and pages are invented for this project (fictional sites) and written down in
sample/templates.yaml; this script renders them into the official release's format and layout
(`data/<split>/*.json`, arrays of task records) so every code path that reads the real data runs on
them. Deterministic: the same templates give byte-identical files. Splits mimic the release: train
and test_task share websites, test_website holds unseen websites of seen domains, test_domain an
unseen domain.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from cluster.core.storage import atomic_write_text

SEED = 20240611
TEMPLATES = Path(__file__).parent / "sample" / "templates.yaml"
FOOTER = ("About us", "Help center", "Privacy policy")


@dataclass(frozen=True)
class W:
    """A page widget: kind in input | select | button | link | checkbox | item."""

    kind: str
    key: str
    text: str
    type: str = "text"
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class StepT:
    page: str
    target: str  # widget key; "movie:<text>" / "time:<text>" pick a widget by its text
    op: str = "CLICK"
    value: str = ""
    original_op: str = ""  # default: op


@dataclass(frozen=True)
class Template:
    text: str
    slots: dict[str, str]  # slot -> pool (slots of one pool get distinct values)
    steps: tuple[StepT, ...]


@dataclass(frozen=True)
class Site:
    name: str
    title: str
    domain: str
    subdomain: str
    nav: tuple[str, ...]
    pages: dict[str, tuple[str, tuple[W, ...]]]  # name -> (heading, widgets)
    templates: tuple[Template, ...]


@dataclass(frozen=True)
class Spec:
    pools: dict[str, list[str]]
    split_sites: dict[str, list[str]]
    tasks_per_site: dict[str, int]  # a train site's last task goes to test_task
    sites: tuple[Site, ...]


def _widget(row: list[str]) -> W:
    kind, key, text, *extra = row
    if kind == "input":
        return W(kind, key, text, extra[0] if extra else "text")
    if kind == "select":
        return W(kind, key, text, options=tuple(o.strip() for o in extra[0].split("|")))
    return W(kind, key, text)


def load_spec(path: Path = TEMPLATES) -> Spec:
    d = yaml.safe_load(path.read_text())
    sites = tuple(
        Site(
            s["name"],
            s["title"],
            s["domain"],
            s["subdomain"],
            tuple(s["nav"]),
            {k: (p["heading"], tuple(_widget(w) for w in p["widgets"])) for k, p in s["pages"].items()},
            tuple(
                Template(t["text"], t["slots"], tuple(StepT(*st) for st in t["steps"]))
                for t in s["templates"]
            ),
        )
        for s in d["sites"]
    )
    return Spec(d["pools"], d["split_sites"], d["tasks_per_site"], sites)


def _title(s: str) -> str:
    return s[:1].upper() + s[1:]


# ------------------------------------------------------------------------------------------ rendering


def _uid(*parts: str) -> str:
    h = hashlib.sha256(":".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-")


class Page:
    """Renders one page's cleaned_html and remembers each interactive element's candidate record."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_id = rng.randint(40, 900)
        self.parts: list[str] = []
        self.elements: dict[str, dict] = {}  # key -> candidate + repr info
        self.order: list[str] = []
        self.y = 0.0

    def nid(self) -> str:
        self.next_id += self.rng.randint(1, 4)
        return str(self.next_id)

    def open(self, tag: str, **attrs: str) -> str:
        nid = self.nid()
        a = "".join(f' {k}="{_esc(v)}"' for k, v in attrs.items())
        self.parts.append(f'<{tag} backend_node_id="{nid}"{a}>')
        return nid

    def close(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")

    def text(self, s: str) -> None:
        self.parts.append(_esc(s))

    def leaf(self, tag: str, text: str, **attrs: str) -> str:
        nid = self.open(tag, **attrs)
        self.text(text)
        self.close(tag)
        return nid

    def void(self, tag: str, **attrs: str) -> str:
        nid = self.nid()
        a = "".join(f' {k}="{_esc(v)}"' for k, v in attrs.items())
        self.parts.append(f'<{tag} backend_node_id="{nid}"{a}/>')
        return nid

    def candidate(self, key: str, nid: str, tag: str, attrs: dict[str, str], role: str, label: str) -> None:
        self.y += self.rng.choice([24.0, 36.5, 48.0, 52.25])
        box = f"{self.rng.randint(16, 900)},{self.y},{self.rng.randint(40, 320)},{self.rng.choice([20, 32, 40, 44])}"
        full = {"backend_node_id": nid, "bounding_box_rect": box, **attrs}
        if key in self.elements:
            raise KeyError(f"widget key {key!r} used twice on one page")
        self.elements[key] = {
            "tag": tag,
            "attributes": json.dumps(full),
            "backend_node_id": nid,
            "role": role,
            "label": label,
        }
        self.order.append(key)

    def widget(self, w: W) -> None:
        if w.kind == "input":
            self.open("div", **{"class": "field"})
            self.leaf("label", w.text)
            attrs = {"type": w.type, "aria_label": w.text, "placeholder": w.text}
            nid = self.void("input", **attrs)
            self.close("div")
            self.candidate(
                w.key, nid, "input", attrs, "searchbox" if w.type == "search" else "textbox", w.text
            )
        elif w.kind == "select":
            self.open("div", **{"class": "field"})
            self.leaf("label", w.text)
            attrs = {"name": _slug(w.text), "aria_label": w.text}
            nid = self.open("select", **attrs)
            for o in w.options:
                self.leaf("option", o, value=_slug(o))
            self.close("select")
            self.close("div")
            self.candidate(w.key, nid, "select", attrs, "combobox", w.text)
        elif w.kind == "button":
            attrs = {"type": "button"}
            nid = self.open("button", **attrs)
            self.leaf("span", w.text)
            self.close("button")
            self.candidate(w.key, nid, "button", attrs, "button", w.text)
        elif w.kind == "link":
            attrs = {"href": "/" + _slug(w.text)}
            nid = self.leaf("a", w.text, **attrs)
            self.candidate(w.key, nid, "a", attrs, "link", w.text)
        elif w.kind == "checkbox":
            self.open("label")
            attrs = {"type": "checkbox", "name": _slug(w.text), "aria_label": w.text}
            nid = self.void("input", **attrs)
            self.leaf("span", w.text)
            self.close("label")
            self.candidate(w.key, nid, "input", attrs, "checkbox", w.text)
        elif w.kind == "item":
            attrs = {"role": "link", "class": "result-card"}
            nid = self.open("div", **attrs)
            self.leaf("span", w.text)
            self.close("div")
            self.candidate(w.key, nid, "div", attrs, "div", w.text)
        else:
            raise ValueError(f"unknown widget kind {w.kind!r}")

    def render(self, site: Site, heading: str, widgets: list[W]) -> str:
        self.open("html")
        self.open("body")
        self.open("header")
        attrs = {"href": "/", "aria_label": f"{site.title} home"}
        self.candidate("logo", self.leaf("a", site.title, **attrs), "a", attrs, "link", site.title)
        self.open("nav")
        for n in site.nav:
            attrs = {"href": "/" + _slug(n)}
            self.candidate(f"nav:{n}", self.leaf("a", n, **attrs), "a", attrs, "link", n)
        self.close("nav")
        attrs = {"type": "button", "aria_label": "Sign in"}
        nid = self.open("button", **attrs)
        self.leaf("span", "Sign in")
        self.close("button")
        self.candidate("signin", nid, "button", attrs, "button", "Sign in")
        self.close("header")
        self.open("main")
        self.leaf("h1", heading)
        self.open("div", **{"class": "content"})
        for w in widgets:
            self.widget(w)
        self.close("div")
        self.close("main")
        self.open("footer")
        for f in FOOTER:
            attrs = {"href": "/" + _slug(f)}
            self.candidate(f"footer:{f}", self.leaf("a", f, **attrs), "a", attrs, "link", f)
        self.close("footer")
        self.close("body")
        self.close("html")
        return "".join(self.parts)


def _fill(s: str, values: dict[str, str]) -> str:
    full = dict(values)
    full.update({k[:1].upper() + k[1:]: _title(v) for k, v in values.items()})
    return s.format(**full)


def _fill_w(w: W, values: dict[str, str]) -> W:
    return W(
        w.kind,
        _fill(w.key, values),
        _fill(w.text, values),
        w.type,
        tuple(_fill(o, values) for o in w.options),
    )


def _choose(slots: dict[str, str], pools: dict[str, list[str]], rng: random.Random) -> dict[str, str]:
    by_pool: dict[str, list[str]] = {}
    for slot, pool in slots.items():
        by_pool.setdefault(pool, []).append(slot)
    values = {}
    for pool, names in by_pool.items():
        picked = rng.sample(pools[pool], len(names))
        if pool == "date":  # keep a pick-up date before its drop-off date
            picked.sort(key=pools[pool].index)
        values.update(zip(names, picked))
    return values


def _candidate(page: Page, key: str, positive: bool) -> dict:
    e = page.elements[key]
    return {
        "tag": e["tag"],
        "attributes": e["attributes"],
        "backend_node_id": e["backend_node_id"],
        "is_original_target": positive,
        "is_top_level_target": positive,
    }


def make_task(site: Site, template: Template, values: dict[str, str], k: int, raw_html: bool) -> dict:
    aid = _uid(site.name, template.text, str(k), *sorted(values.values()))
    rng = random.Random(aid)
    actions, reprs = [], []
    for i, st in enumerate(template.steps):
        heading, widgets = site.pages[st.page]
        page = Page(rng)
        html = page.render(site, _fill(heading, values), [_fill_w(w, values) for w in widgets])
        target = _fill(st.target, values)
        if target.startswith("movie:"):  # a link chosen by its text
            target = next(key for key in page.order if page.elements[key]["label"] == target[6:])
        if target.startswith("time:"):
            target = next(key for key in page.order if page.elements[key]["label"] == target[5:])
        if target not in page.elements:  # a typo in a template, not a data problem
            raise KeyError(f"{site.name}: step {i} target {target!r} not on page {st.page!r}")
        value = _fill(st.value, values)
        el = page.elements[target]

        action = {
            "action_uid": _uid(aid, str(i)),
            "cleaned_html": html,
            "operation": {"original_op": st.original_op or st.op, "value": value, "op": st.op},
            "pos_candidates": [_candidate(page, target, True)],
            "neg_candidates": [_candidate(page, key, False) for key in page.order if key != target],
        }
        if raw_html:  # the release's raw_html: the full page; here the same page with a head and a script
            action["raw_html"] = html.replace(
                "<body",
                f"<head><title>{_esc(site.title)}</title><script>window.__APP__={{}}</script></head><body",
                1,
            )
        actions.append(action)
        reprs.append(f"[{el['role']}]  {el['label']} -> {st.op}" + (f": {value}" if st.op != "CLICK" else ""))
    return {
        "annotation_id": aid,
        "website": site.name,
        "domain": site.domain,
        "subdomain": site.subdomain,
        "confirmed_task": _fill(template.text, values),
        "action_reprs": reprs,
        "actions": actions,
    }


def build_splits(spec: Spec) -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    by_name = {s.name: s for s in spec.sites}
    out: dict[str, list[dict]] = {"train": [], "test_task": [], "test_website": [], "test_domain": []}
    for group, names in spec.split_sites.items():
        for name in names:
            site = by_name[name]
            seen: set[tuple] = set()
            for k in range(spec.tasks_per_site[group]):
                template = site.templates[k % len(site.templates)]
                while True:
                    values = _choose(template.slots, spec.pools, rng)
                    sig = (template.text, tuple(sorted(values.items())))
                    if sig not in seen:
                        seen.add(sig)
                        break
                last = k == spec.tasks_per_site[group] - 1
                split = group if group != "train" else ("test_task" if last else "train")
                out[split].append(make_task(site, template, values, k, raw_html=split == "train"))
    return out


def _write_json_atomic(path: Path, records: list[dict]) -> None:
    text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"
    atomic_write_text(path, text)


def write_sample(out_dir: str | Path) -> dict[str, int]:
    """Write data/<split>/<split>_<i>.json under out_dir; train goes into two files, as the release
    splits a split over several files."""
    out = Path(out_dir)
    counts = {}
    for split, records in build_splits(load_spec()).items():
        chunks = (
            [records[: len(records) // 2], records[len(records) // 2 :]] if split == "train" else [records]
        )
        for i, chunk in enumerate(chunks):
            _write_json_atomic(out / "data" / split / f"{split}_{i}.json", chunk)
        counts[split] = len(records)
    return counts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).parent / "sample"
    counts = write_sample(out)
    print(f"[make_sample] wrote {sum(counts.values())} tasks to {out}/data: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
