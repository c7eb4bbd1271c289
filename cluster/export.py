"""`evorl export RUN_DIR|CHECKPOINT --out DIR`: a trained run as a clean Hugging Face model folder.

DIR holds
    config.json, *.safetensors, tokenizer files   copied from the checkpoint's model/ (each file checked
                                                   against the checkpoint manifest while it is copied)
    generation_config.json                         the checkpoint's, or made from the tokenizer's bos/eos/pad
    README.md                                      model card: source checkpoint, eval table, metrics, config
    skills.jsonl, skills.md                        the skill library as export records and Markdown cards
    skill_library/                                 the same skills as a one-version library (`evorl serve --skills`)
    evorl_config.yaml, evorl_export.json           the run's config; what was exported from where (sha256s)
and nothing of the optimizer: deepspeed/, learner_state.json and any other file are left out.

The source is any checkpoint form `cluster.checkpoint.resolve_model_dir` takes (run folder, checkpoints
root, iter-N folder, HF folder); a run folder gives its newest complete checkpoint, and the skill
library is the version that checkpoint recorded. The export is built in a temporary folder beside DIR
and renamed into place, so DIR is either the old one or the complete new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster.checkpoint import MODEL, STATE, CheckpointManager, resolve_model_dir
from cluster.core.storage import (
    MANIFEST,
    CorruptFileError,
    atomic_write_bytes,
    fsync_tree,
    publish_dir,
    read_json,
    verify_manifest,
    write_json_plain,
)

# The files of an HF model folder that are exported; anything else in model/ is left out.
HF_FILE = re.compile(
    r"^(config\.json|generation_config\.json|[\w.-]+\.safetensors|[\w.-]+\.safetensors\.index\.json"
    r"|tokenizer\.json|tokenizer_config\.json|tokenizer\.model|special_tokens_map\.json|added_tokens\.json"
    r"|vocab\.json|vocab\.txt|merges\.txt|spiece\.model|chat_template\.jinja|chat_template\.json)$"
)
ARMS = ("no_skill", "with_skill")
ARM_COLUMNS = ("success", "trained_success", "heldout_success", "episodes", "failed", "return")
PAIRED = ("both", "with_skill_only", "no_skill_only", "neither", "mcnemar_p")
COUNTS = {"episodes", "failed"}
GATE_KEYS = (("gate_min_trials", 4), ("gate_confidence", 0.9), ("merge_similarity", 0.95))  # config skills.*
SKILLS_OUT = "skills"  # skills.jsonl + skills.md
LIBRARY_OUT = "skill_library"


class ExportError(ValueError):
    """Bad input: a missing or incomplete source, an occupied --out. Reported as `error: ...`, exit 2."""


@dataclass
class Source:
    model_dir: Path
    checkpoint: Path | None = None  # the iter-N folder, None for a bare HF folder
    run_dir: Path | None = None
    state: dict = field(default_factory=dict)  # trainer_state.json
    manifest: dict[str, str] | None = None  # path inside the checkpoint -> sha256
    warnings: list[str] = field(default_factory=list)


def _in_checkpoint(model_dir: Path) -> Path | None:
    """The checkpoint folder holding this model folder (by the layout of cluster/checkpoint.py)."""
    parent = model_dir.parent
    looks = (parent / MANIFEST).exists() or (parent / STATE).exists() or re.search(r"iter-\d+$", parent.name)
    return parent if model_dir.name == MODEL and looks else None


def _why(e: Exception) -> str:
    """A missing manifest reads as what it means: a checkpoint that was never finished."""
    name = getattr(e, "filename", None)
    if isinstance(e, FileNotFoundError) and name and Path(name).name == MANIFEST:
        return f"{name} is missing (the checkpoint was never finished)"
    return str(e)


def _no_checkpoint_reason(path: Path) -> str | None:
    """Why each checkpoint under `path` (or its checkpoints/) is unusable, or None if it has none."""
    reasons = []
    for root in (path, path / "checkpoints"):
        for ckpt in CheckpointManager(root).published():
            try:
                verify_manifest(ckpt)
            except (CorruptFileError, OSError) as e:
                reasons.append(f"{ckpt.name}: {_why(e)}")
    if not reasons:
        return None
    return f"{path}: no complete checkpoint ({'; '.join(reasons)})"


def locate(path: str | Path) -> Source:
    """The model folder to export and where it came from; ExportError for anything unusable."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ExportError(f"{path}: no such file or folder")
    try:
        model_dir = resolve_model_dir(p).absolute()
    except CorruptFileError as e:
        raise ExportError(f"incomplete or corrupt checkpoint: {e}") from None
    except FileNotFoundError as e:
        raise ExportError(
            _no_checkpoint_reason(p) or f"incomplete or corrupt checkpoint: {_why(e)}"
        ) from None
    src = Source(model_dir)
    ckpt = _in_checkpoint(model_dir)
    if ckpt is None:
        if (model_dir / "learner_state.json").exists():
            src.warnings.append(f"{model_dir}: a learner folder outside a checkpoint (no manifest to check)")
        return src
    try:
        if model_dir == p.absolute():  # given the model folder itself: resolve_model_dir did not verify
            verify_manifest(ckpt)
        src.manifest = {str(e["path"]): str(e["sha256"]) for e in read_json(ckpt / MANIFEST)["files"]}
        src.state = read_json(ckpt / STATE)
    except FileNotFoundError as e:
        raise ExportError(f"incomplete checkpoint {ckpt}: {e.filename} is missing") from None
    except CorruptFileError as e:
        raise ExportError(f"incomplete or corrupt checkpoint: {e}") from None
    src.checkpoint = ckpt
    if ckpt.parent.name == "checkpoints":
        src.run_dir = ckpt.parent.parent
    published = [c.name for c in CheckpointManager(ckpt.parent).published()]
    newer = published[published.index(ckpt.name) + 1 :] if ckpt.name in published else []
    if newer and p.absolute() in (ckpt.parent, ckpt.parent.parent):  # a run folder or checkpoints root
        src.warnings.append(
            f"skipped newer checkpoint(s) {', '.join(newer)} (incomplete or corrupt); exporting {ckpt.name}"
        )
    return src


def _copy_hashing(src: Path, dest: Path) -> str:
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dest, "wb") as fo:
        for block in iter(lambda: fi.read(1 << 22), b""):
            h.update(block)
            fo.write(block)
    return h.hexdigest()


def copy_model(src: Source, dest: Path) -> tuple[dict[str, str], list[str]]:
    """Copy the HF files of the model folder, each checked against the checkpoint manifest as it is
    read (a file changed after the manifest was written is refused). Returns ({name: sha256}, left out)."""
    kept, left = [], []
    for f in sorted(src.model_dir.iterdir()):
        (kept if f.is_file() and HF_FILE.match(f.name) else left).append(f)
    names = [f.name for f in kept]
    if not any(n.endswith(".safetensors") for n in names):
        raise ExportError(f"{src.model_dir}: no safetensors weights (found {', '.join(names) or 'nothing'})")
    if not {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"} & set(names):
        raise ExportError(f"{src.model_dir}: no tokenizer files")
    digests = {}
    for f in kept:
        digest = _copy_hashing(f, dest / f.name)
        if src.manifest is not None:
            rel = f"{MODEL}/{f.name}"
            if rel not in src.manifest:
                raise ExportError(f"{f}: not listed in the checkpoint manifest {src.checkpoint / MANIFEST}")
            if src.manifest[rel] != digest:
                raise ExportError(f"{f}: does not match its manifest checksum (torn or altered checkpoint)")
        digests[f.name] = digest
    return digests, [f.name + ("/" if f.is_dir() else "") for f in left]


def ensure_generation_config(dest: Path) -> bool:
    """Write generation_config.json from the tokenizer's bos/eos/pad ids when the checkpoint has none
    (greedy by default, as the project evaluates). Returns whether one was made."""
    if (dest / "generation_config.json").exists():
        return False
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(dest))
    model_cfg = json.loads((dest / "config.json").read_text())
    cfg_eos = model_cfg.get("eos_token_id")
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    eos += [
        i for i in (cfg_eos if isinstance(cfg_eos, list) else [cfg_eos]) if i is not None and i not in eos
    ]
    if not eos:
        raise ExportError(f"{dest}: neither the tokenizer nor config.json names an eos token")
    bos = tok.bos_token_id if tok.bos_token_id is not None else model_cfg.get("bos_token_id")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    gen = GenerationConfig(bos_token_id=bos, eos_token_id=eos[0] if len(eos) == 1 else eos, pad_token_id=pad)
    gen.save_pretrained(str(dest))
    return True


# ---- run products -----------------------------------------------------------------------------


def _run_config(run_dir: Path | None) -> tuple[str, dict]:
    import yaml

    path = run_dir / "config.yaml" if run_dir else None
    if path is None or not path.exists():
        return "", {}
    text = path.read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    return text, doc if isinstance(doc, dict) else {}


def open_library(src: Source, folder: str | None, cfg: dict):
    """The skill library to export: --skills, else the run's skills/ at the checkpoint's version."""
    from skills.library import GateConfig, LibraryError, SkillLibrary

    if folder is None and src.run_dir is None:
        return None
    path = Path(folder) if folder else src.run_dir / "skills"
    if not path.is_dir():
        if folder:
            raise ExportError(f"--skills {folder}: no such folder")
        src.warnings.append(f"{path}: no skill library in this run; exporting the model only")
        return None
    s = cfg.get("skills") if isinstance(cfg.get("skills"), dict) else {}
    try:
        trials, conf, merge = (s.get(k, d) for k, d in GATE_KEYS)
        gate = GateConfig(int(trials), float(conf), float(merge))
    except (TypeError, ValueError):
        gate = GateConfig()
    version = None if folder else src.state.get("library_version")
    lib = SkillLibrary(path, gate)
    try:
        report = lib.load(version=None if version is None else int(version))
    except LibraryError as e:
        raise ExportError(str(e)) from None
    for p, why in report.skipped:
        src.warnings.append(f"skill library: skipped {p}: {why}")
    if version is not None and report.version != int(version):
        src.warnings.append(
            f"skill library: version {version} recorded by {src.checkpoint} is unreadable; "
            f"exported version {report.version}"
        )
    return lib


def write_skills(lib, dest: Path) -> dict[str, int]:
    """skills.jsonl (export records), skills.md (cards) and skill_library/ (a one-version copy)."""
    from skills.library import STATUSES, SkillLibrary, write_export

    entries = list(lib)
    write_export(entries, dest / SKILLS_OUT, lib.gate.confidence)
    copy = SkillLibrary(dest / LIBRARY_OUT, lib.gate)
    copy.entries = dict(lib.entries)
    copy.save()
    return {"skills": len(entries)} | {s: sum(e.status == s for e in entries) for s in STATUSES}


def _metrics(run_dir: Path | None) -> list[dict]:
    from cluster.metrics import read_metrics

    return read_metrics(run_dir) if run_dir else []


def final_eval(summary: dict, rows: list[dict], iteration: int | None) -> tuple[dict[str, float], str]:
    """The eval/ keys of the exported checkpoint: summary.json's final_eval when it is of this
    iteration, else the newest metrics.jsonl record with eval keys up to it."""
    fe = summary.get("final_eval")
    if isinstance(fe, dict) and fe and (iteration is None or summary.get("iteration") == iteration):
        return {k: v for k, v in fe.items() if k.startswith("eval/")}, "summary.json final_eval"
    for r in reversed(rows):
        if iteration is not None and r.get("iteration", 0) > iteration:
            continue
        ev = {k: v for k, v in r.items() if k.startswith("eval/")}
        if ev:
            return ev, f"metrics.jsonl, iteration {r.get('iteration')}"
    return {}, ""


def _fmt(v) -> str:
    """A table cell: ints as they are, floats (rates) to 3 decimals, text with `|` escaped."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v).replace("|", "\\|")
    return str(v) if isinstance(v, int) else f"{v:.3f}"


def _count(v):
    return int(v) if isinstance(v, int | float) and float(v).is_integer() else v


def _num(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def eval_tables(ev: dict[str, float]) -> list[str]:
    """Markdown: per split and arm (success, trained/held-out types, episodes), the paired table, per
    task type, and any other eval key."""
    splits = sorted({k.split("/")[1] for k in ev if k.count("/") >= 2})
    used: set[str] = set()
    lines: list[str] = []
    rows = []
    for split in splits:
        for arm in ARMS:
            pre = f"eval/{split}/{arm}/"
            if any(k.startswith(pre) for k in ev):
                cells = [ev.get(pre + c, "") for c in ARM_COLUMNS]
                rows.append(
                    [split, arm] + [_count(v) if c in COUNTS else v for c, v in zip(ARM_COLUMNS, cells)]
                )
                used |= {pre + c for c in ARM_COLUMNS}
    if rows:
        lines += _table(["split", "arm", *ARM_COLUMNS], rows)
    paired = [[s] + [_count(ev.get(f"eval/{s}/paired/{c}", "")) for c in PAIRED] for s in splits]
    paired = [row for row in paired if row[1] != ""]
    if paired:
        lines += ["", "Paired on the same tasks (episodes won by both arms, by one, by neither):", ""]
        lines += _table(["split", *PAIRED], paired)
        used |= {f"eval/{s}/paired/{c}" for s in splits for c in PAIRED}
    for split in splits:
        prefixes = tuple(f"eval/{split}/{arm}/" for arm in ARMS)
        types = sorted({k.rsplit("/", 1)[1] for k in ev if k.startswith(prefixes) and k not in used})
        if types:
            rows = [[t] + [ev.get(f"eval/{split}/{a}/{t}", "") for a in ARMS] for t in types]
            lines += ["", f"Success per task type, split `{split}`:", "", *_table(["task type", *ARMS], rows)]
            used |= {f"eval/{split}/{a}/{t}" for a in ARMS for t in types}
    used |= {k for k in ev if k.startswith("eval/protocol_")}  # named in the intro
    other = sorted(k for k in ev if k not in used)
    if other:
        lines += ["", *_table(["eval key", "value"], [[k, _num(ev[k])] for k in other])]
    return lines


USAGE = """\
## Usage

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("PATH")
model = AutoModelForCausalLM.from_pretrained("PATH")
```

```python
from vllm import LLM, SamplingParams

llm = LLM(model="PATH")
print(llm.generate(["Hello"], SamplingParams(max_tokens=16, temperature=0))[0].outputs[0].text)
```
"""


def _card_header(src: Source, title: str, made_gen_config: bool, with_skills: bool) -> list[str]:
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags:"]
    lines = front + ["- evolving-rl", "- reinforcement-learning", "- agent", "---", "", f"# {title}", ""]
    if src.checkpoint is not None:
        run = src.run_dir.name if src.run_dir else str(src.checkpoint.parent)
        st = src.state
        lines.append(
            f"Exported by `evorl export` from checkpoint `{src.checkpoint.name}` of run `{run}`: iteration "
            f"{st.get('iteration')}, policy version {st.get('policy_version')}, skill library version "
            f"{st.get('library_version')}."
        )
    else:
        lines.append(f"Exported by `evorl export` from the model folder `{src.model_dir}`.")
    try:
        base = json.loads((src.model_dir / "learner_state.json").read_text()).get("base_model")
    except (OSError, ValueError, AttributeError):
        base = None
    if base:
        lines.append(f"Base model: `{base}`.")
    if src.checkpoint is not None:
        lines += [
            "",
            "One LLM trained by Evolving-RL as both the skill extractor and the solver"
            + ("; the skill library it built is shipped beside the weights." if with_skills else "."),
        ]
    lines += [
        "",
        "## Files",
        "",
        "- `config.json`, `*.safetensors`, tokenizer files, `generation_config.json`"
        + (" (made from the tokenizer's bos/eos/pad ids)" if made_gen_config else "")
        + ": the Hugging Face model (no optimizer or DeepSpeed state)",
    ]
    if with_skills:
        lines += [
            f"- `{SKILLS_OUT}.jsonl`: the skill library, one export record per skill (skill, provenance, "
            f"stats, status, embedding); `{SKILLS_OUT}.md`: the Markdown cards the solver sees",
            f"- `{LIBRARY_OUT}/`: the same skills as a skill library folder (`evorl serve --skills`)",
        ]
    lines += ["- `evorl_export.json`: the source checkpoint and the sha256 of each model file", ""]
    return lines


def _card_eval(summary: dict, rows: list[dict], iteration: int | None) -> list[str]:
    ev, where = final_eval(summary, rows, iteration)
    if not ev:
        return ["## Evaluation", "", "No evaluation was recorded for this checkpoint.", ""]
    protocol = next((k[len("eval/protocol_") :] for k in ev if k.startswith("eval/protocol_")), None)
    intro = (
        f"From {where}" + (f", protocol `{protocol}`" if protocol else "") + ": success rate of each arm "
        "on the same tasks, with a skill retrieved for each task (with_skill) and without one (no_skill)."
    )
    return ["## Evaluation", "", intro, "", *eval_tables(ev), ""]


def _card_skills(lib, counts: dict) -> list[str]:
    lines = [
        "## Skill library",
        "",
        "skills: " + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "skills"),
    ]
    lines[-1] += f" ({counts['skills']} in all; only accepted skills are served)"
    lines.append("")
    entries = sorted(lib, key=lambda e: (e.status != "accepted", -e.stats.gain))[:20]
    if entries:
        header = ["skill", "id", "status", "trials", "win rate", "baseline", "gain"]
        rows = [[e.skill.name, e.skill_id, e.status, e.stats.trials, e.stats.win_rate, e.stats.baseline_rate,
                 e.stats.gain] for e in entries]  # fmt: skip
        lines += [*_table(header, rows), ""]
    return lines


def _train_keys(record: dict) -> list[str]:
    return [k for k in record if not k.startswith("eval/") and k not in ("iteration", "time")]


def _card_metrics(
    summary: dict, rows: list[dict], iteration: int | None, n_records: int, from_summary: bool
) -> list[str]:
    lines = ["## Training metrics", ""]
    if summary:
        later = iteration is not None and summary.get("iteration") not in (None, iteration)
        note = f" (of iteration {summary.get('iteration')}, after this checkpoint)" if later else ""
        shown = {k: v for k, v in summary.items() if not (k == "final_eval" and from_summary)}
        note += " (its final_eval is the evaluation above)" if from_summary else ""
        lines += [f"`summary.json`{note}:", "", "```json", json.dumps(shown, indent=1, sort_keys=True)]
        lines += ["```", ""]
    mine = [r for r in rows if (iteration is None or r.get("iteration", 0) <= iteration) and _train_keys(r)]
    last = mine[-n_records:] if n_records > 0 else []
    if last:
        keys = sorted({k for r in last for k in _train_keys(r)})
        lines += [
            f"The last {len(last)} `metrics.jsonl` records (their eval keys are in the table above):",
            "",
        ]
        header = ["metric"] + [f"iter {r.get('iteration')}" for r in last]
        lines += [*_table(header, [[k] + [_num(r.get(k, "")) for r in last] for k in keys]), ""]
    if not summary and not last:
        lines += ["No summary.json or metrics.jsonl in the run.", ""]
    return lines


def model_card(
    src: Source,
    title: str,
    config_text: str,
    summary: dict,
    rows: list[dict],
    lib=None,
    skill_counts: dict | None = None,
    n_records: int = 3,
    made_gen_config: bool = False,
) -> str:
    """README.md: front matter, provenance, files, usage, the eval table, the skill library, the
    run's summary and last metrics records, and its config."""
    it = src.state.get("iteration")
    lines = _card_header(src, title, made_gen_config, skill_counts is not None)
    lines += USAGE.splitlines() + [""]
    if skill_counts is not None:
        serve = f"`evorl serve --checkpoint PATH --skills PATH/{LIBRARY_OUT}`"
        lines += [f"With its skills, as in training: {serve} (docs/serving.md).", ""]
    lines += _card_eval(summary, rows, it)
    if skill_counts is not None:
        lines += _card_skills(lib, skill_counts)
    from_summary = final_eval(summary, rows, it)[1].startswith("summary.json")
    lines += _card_metrics(summary, rows, it, n_records, from_summary)
    if config_text:
        lines += ["## Config", "", "The run's `config.yaml` (also here as `evorl_config.yaml`):", ""]
        lines += ["```yaml", config_text.rstrip(), "```", ""]
    return "\n".join(lines)


# ---- the command ------------------------------------------------------------------------------


def _check_out(out: Path, src: Source, skills: str | None, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"--out {out}: not empty (pass --overwrite to replace it)")
    sources = [src.model_dir, src.checkpoint, src.run_dir, Path(skills).absolute() if skills else None]
    for s in (x for x in sources if x is not None):
        if s.resolve().is_relative_to(out.resolve()):
            raise ExportError(f"--out {out}: holds the source {s}; choose another folder")
    for inner in (src.checkpoint, src.model_dir):
        if inner is not None and out.resolve().is_relative_to(inner.resolve()):
            raise ExportError(f"--out {out}: inside the checkpoint {inner}; choose another folder")


def export(source: str | Path, out: str | Path, overwrite: bool = False, skills: str | None = None,
           metrics_records: int = 3) -> dict:  # fmt: skip
    """Export; returns what was written (also saved as evorl_export.json). ExportError for bad input."""
    src = locate(source)
    out = Path(out).expanduser().absolute()
    _check_out(out, src, skills, overwrite)
    config_text, cfg = _run_config(src.run_dir)
    lib = open_library(src, skills, cfg)
    summary_path = src.run_dir / "summary.json" if src.run_dir else None
    try:
        summary = json.loads(summary_path.read_text()) if summary_path and summary_path.exists() else {}
    except (ValueError, UnicodeDecodeError) as e:
        src.warnings.append(f"{summary_path}: unreadable ({e}); left out of the model card")
        summary = {}
    summary = summary if isinstance(summary, dict) else {}
    rows = _metrics(src.run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        digests, left_out = copy_model(src, tmp)
        made = ensure_generation_config(tmp)
        counts = write_skills(lib, tmp) if lib is not None else None
        if config_text:
            atomic_write_bytes(tmp / "evorl_config.yaml", config_text.encode())
        card = model_card(src, out.name, config_text, summary, rows, lib, counts, metrics_records, made)
        atomic_write_bytes(tmp / "README.md", card.encode())
        info = {
            "source": str(Path(source).absolute()),
            "model_dir": str(src.model_dir),
            "checkpoint": str(src.checkpoint) if src.checkpoint else None,
            "iteration": src.state.get("iteration"),
            "policy_version": src.state.get("policy_version"),
            "library_version": lib.load_report.version if lib is not None else None,
            "skills": counts,
            "generation_config_made": made,
            "model_files": digests,
            "left_out": left_out,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json_plain(tmp / "evorl_export.json", info)
        fsync_tree(tmp)
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["out"], info["warnings"] = str(out), src.warnings
    return info


def add_commands(sub, data_sub) -> None:
    p = sub.add_parser(
        "export", help="write a run's checkpoint as a clean HF model folder with its skills and a model card"
    )
    p.add_argument("source", metavar="RUN_DIR|CHECKPOINT",
                   help="run folder (its newest complete checkpoint), checkpoints root, iter-N folder or HF folder")  # fmt: skip
    p.add_argument(
        "--out", required=True, help="folder to write (must be empty or absent unless --overwrite)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--skills", default=None,
                   help="skill library folder to ship instead of the run's (default: <run>/skills at the "
                        "checkpoint's library version)")  # fmt: skip
    p.add_argument("--metrics-records", type=int, default=3, help="last metrics.jsonl records in the card")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        info = export(args.source, args.out, overwrite=args.overwrite, skills=args.skills,
                      metrics_records=args.metrics_records)  # fmt: skip
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: export to {args.out} failed: {e}", file=sys.stderr)
        return 1
    for w in info["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    where = (
        f"{info['checkpoint']} (iteration {info['iteration']})" if info["checkpoint"] else info["model_dir"]
    )
    skills = info["skills"]
    print(f"exported {where} to {info['out']}: {len(info['model_files'])} model files"
          + (f", skills: {skills['skills']} ({skills['accepted']} accepted)" if skills else ", no skills")
          + (f"; left out {', '.join(info['left_out'])}" if info["left_out"] else ""))  # fmt: skip
    return 0
