"""reports/degradations.md: what this run skipped, fell back on or cannot decide, and why (docs/architecture.md section 9,
"every optional part degrades explicitly"), from split's info.json, the genre metrics, the training
summaries and the degenerate-set flags."""
from __future__ import annotations

from typing import Mapping, Sequence

CONFOUNDER_VARIANTS = ("student", "no_teacher", "decrs", "interaction", "interaction_content")


def _schemes(info: Mapping) -> list[str]:
    built = [f"{s} ({c.get('train', 0)}/{c.get('val', 0)}/{c.get('test', 0)} train/val/test videos)"
             for s, c in info.get("schemes", {}).items()]
    lines = [f"- built: {', '.join(built) or 'none'}"]
    lines += [f"- **skipped {s}**: {why}" for s, why in sorted(info.get("skipped", {}).items())]
    if info.get("source_val"):
        lines.append(f"- validation: {info['source_val']}")
    return lines


def _intervened(info: Mapping) -> list[str]:
    scheme = info.get("intervene_scheme", "?")
    diverse, matching = info.get("diverse"), info.get("matching")
    lines = []
    if diverse is None or "skipped" in diverse:
        lines.append(f"- **T_diverse skipped**: {(diverse or {}).get('skipped', 'the split stage built none')}")
    else:
        lines.append(f"- T_diverse: {diverse.get('n_videos', '?')} test videos of {scheme} from "
                     f"{len(diverse.get('uploaders', []))} uploader(s) (of {diverse.get('n_candidates', '?')}) with "
                     "the most spread genre taste")
    if matching is None or "skipped" in matching:
        lines.append(f"- **T_matching skipped**: {(matching or {}).get('skipped', 'the split stage built none')}")
    else:
        fallback = (" — **fallen back on popularity alone** (no usable rhythm scores)" if matching.get("fallback")
                    else "")
        lines.append(f"- T_matching: {matching.get('n_videos', '?')} test videos of {scheme} ranked by "
                     f"{matching.get('rule', '?')}{fallback}")
    if info.get("rhythm_coverage"):
        lines.append(f"- rhythm scores: {info['rhythm_coverage']}")
    return lines


def _negatives(info: Mapping) -> list[str]:
    capped = info.get("negatives_capped", {})
    if not capped:
        return ["- every sampled-protocol list has the split.n_negatives negatives asked for"]
    return [f"- **negatives capped** ({what}): split.n_negatives = {c['asked']} needs {c['asked'] + 1} music, the "
            f"pool has {c['pool']}, so each video is ranked among all {c['used'] + 1} (sampled = full ranking)"
            for what, c in sorted(capped.items())]


def _training(summaries: Mapping[str, Mapping], evaluated: Sequence[str]) -> list[str]:
    lines = [f"- **{name} skipped**: {s['skipped']}" for name, s in summaries.items() if s.get("skipped")]
    teacher = summaries.get("teacher", {})
    if teacher.get("skipped"):
        lines.append("- the teacher-guided variants (UGC + PGC) are absent from every table: no PGC teacher")
    lines += [f"- {name}: trained but absent from evaluate's per-video table (not run)" for name, s in
              summaries.items() if name != "teacher" and not s.get("skipped") and name not in evaluated]
    return lines or ["- every variant that was asked for trained and was evaluated"]


def _genre(genre: Mapping | None) -> list[str]:
    if not genre:
        return ["- metrics/genre.json: absent"]
    lines = [f"- labeller: {genre.get('labeller', '?')}"]
    if genre.get("n_uniform"):
        lines.append(f"- **{genre['n_uniform']} music without a genre label** got the uniform g(m) (1/6 of each "
                     "genre in the uploaders' distributions, in no intervention genre)")
    if genre.get("reason"):
        lines.append(f"- {genre['reason']}")
    return lines


def _uploaders(info: Mapping, evaluated: Sequence[str]) -> list[str]:
    n = info.get("n_uploaders")
    if n != 1:
        return [f"- {n if n is not None else '?'} uploaders"]
    present = [v for v in CONFOUNDER_VARIANTS if v in evaluated]
    return ["- **one uploader**: every video carries the same genre distribution, so the confounder is one constant "
            "vector: the batch mean, the global mean and each video's own distribution coincide. decrs is "
            "no_teacher by construction (identical up to float rounding); the backdoor adjustment of student and "
            "no_teacher conditions on a constant, and the interaction term u^T W g(m) becomes a per-genre music "
            "bias with no taste to separate. The confounder variants "
            f"({', '.join(present) or 'none evaluated'}) therefore measure no debiasing on this data: read their "
            "rows as their base model's."]


def _degenerate(flagged: Mapping[tuple[str, str, int], str]) -> list[str]:
    if not flagged:
        return ["- none: every set has enough test videos and candidates at every K"]
    by_set: dict[tuple[str, str], dict[str, None]] = {}  # each reason once (a set too small is so at every K)
    for (name, protocol, _), why in flagged.items():
        by_set.setdefault((name, protocol), {}).update(dict.fromkeys(why.split("; ")))
    return [f"- **{name} — {protocol}** ⚠ {'; '.join(reasons)}"
            for (name, protocol), reasons in sorted(by_set.items())]


def degradations(info: Mapping, genre: Mapping | None, summaries: Mapping[str, Mapping], evaluated: Sequence[str],
                 flagged: Mapping[tuple[str, str, int], str]) -> str:
    """Markdown: a section per optional part of the pipeline, each degraded item in bold with its reason."""
    dropped = info.get("dropped", {})
    sections = [
        ("Split schemes", _schemes(info)),
        ("Intervened test sets (T_diverse, T_matching)", _intervened(info)),
        ("Sampled negatives", _negatives(info)),
        ("Teacher and variants", _training(summaries, evaluated)),
        ("Genre labels", _genre(genre)),
        ("Uploaders", _uploaders(info, evaluated)),
        ("Degenerate sets (⚠ in the tables)", _degenerate(flagged)),
    ]
    if dropped and (dropped.get("videos") or dropped.get("music")):
        sections.insert(0, ("Media whose features failed", [
            f"- {len(dropped.get('videos', []))} video(s), {len(dropped.get('music', []))} music and "
            f"{dropped.get('pairs', 0)} pair(s) left the dataset (the extract stages' failures tables)"]))
    out = ["# What this run skipped or cannot decide, and why\n",
           f"Dataset: {info.get('n_ugc', '?')} UGC pairs, {info.get('n_pgc', '?')} PGC pairs, "
           f"{info.get('n_music', '?')} music ({info.get('n_pool', '?')} in the ranking pool); intervene scheme "
           f"{info.get('intervene_scheme', '?')}.\n"]
    for title, lines in sections:
        out += [f"## {title}\n", *lines, ""]
    return "\n".join(out)
