"""The ``covrag eval coverage`` report: per subset of the QA file, plain-language verdicts on
the guarantee and its price, the coverage tables, the abstain signal and the Mondrian section,
as Markdown; and the JSON it writes beside it.

Apart from the command (``evaluation.cli_coverage``), which loads, scores and writes, so what a
reader sees can be read and tested without a store or an embedder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evaluation.coverage import CoverageReport, abstain_signal, to_markdown
from evaluation.mondrian import GroupCoverage, mondrian_markdown
from retrieval.calibration_set import ItemScore
from retrieval.conformal import conformal_quantile

#: A calibration size must leave at least this many test questions per split.
MIN_TEST = 20
#: Mean coverage may fall this far below 1−α before a check is flagged (split noise).
COVERAGE_SLACK = 0.01


@dataclass(frozen=True, slots=True)
class Unanswerable:
    """An unanswerable question's top similarities (it has no gold chunk to score)."""

    id: str
    kind: str
    similarities: list[float]


@dataclass(frozen=True, slots=True)
class SubsetResult:
    """Everything measured on one subset of the QA file (pooled, or one question type)."""

    name: str
    n_items: int
    kinds: dict[str, int]
    reports: list[CoverageReport]
    abstain: list[dict[str, Any]]
    skipped_cal_sizes: list[str]


def jsonable(value: Any) -> Any:
    """Strict JSON: ±∞ as ``"inf"``/``"-inf"``, NaN as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def abstain_rows(
    scores: list[ItemScore], unanswerable: list[Unanswerable], alphas: list[float]
) -> list[dict[str, Any]]:
    """Abstain signal at q̂ from *all* of the subset's questions, per α and unanswerable kind."""
    if not unanswerable:
        return []
    calibration = sorted(s.score for s in scores)
    kinds = sorted({u.kind for u in unanswerable if u.kind})
    rows = []
    for alpha in alphas:
        qhat = conformal_quantile(calibration, alpha)
        overall = abstain_signal(scores, [u.similarities for u in unanswerable], qhat)
        by_kind = {
            k: abstain_signal(
                scores, [u.similarities for u in unanswerable if u.kind == k], qhat
            ).unanswerable_empty
            for k in kinds
        }
        rows.append({"alpha": alpha, **asdict(overall), "unanswerable_empty_by_kind": by_kind})
    return rows


def abstain_markdown(rows: list[dict[str, Any]]) -> str:
    kinds = sorted({k for r in rows for k in r["unanswerable_empty_by_kind"]})
    head = "| α | q̂ | threshold 1−q̂ | answerable empty | unanswerable empty |"
    head += "".join(f" {k} empty |" for k in kinds)
    lines = [head, "|---" * (5 + len(kinds)) + "|"]
    for r in rows:
        thr = "none (q̂ = ∞)" if r["threshold"] is None else f"{r['threshold']:.4f}"
        cells = [
            f"{r['alpha']:g}",
            f"{r['qhat']:.4f}",
            thr,
            f"{r['answerable_empty']:.3f} (n={r['n_answerable']})",
            f"{r['unanswerable_empty']:.3f} (n={r['n_unanswerable']})",
            *(f"{r['unanswerable_empty_by_kind'][k]:.3f}" for k in kinds),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checks(subset: SubsetResult) -> list[str]:
    """Plain-language verdicts on the two claims: the target holds, and it is cheaper than top-k.

    Over random splits of *any* fixed set of questions the expected coverage is ≥ 1−α, so a
    shortfall beyond Monte-Carlo error (z = shortfall / se) points at a bug, not at the data.
    """
    if not subset.reports:
        return [f"- no calibration size leaves {MIN_TEST} test questions of {subset.n_items}"]
    held, missed, cheaper, dearer = 0, [], 0, []
    for report in subset.reports:
        for r in report.results:
            c = r.conformal
            if c is None:
                continue
            if c.coverage_mean >= r.target - COVERAGE_SLACK:
                held += 1
            else:
                z = (r.target - c.coverage_mean) / c.coverage_se if c.coverage_se else math.inf
                missed.append(
                    f"n_cal={report.n_cal} α={r.alpha:g}: {c.coverage_mean:.3f} (z = {z:.1f})"
                )
            if r.fixed_k is not None and c.chunks.mean <= r.fixed_k:
                cheaper += 1
            else:
                dearer.append(
                    f"n_cal={report.n_cal} α={r.alpha:g}: {c.chunks.mean:.1f} vs top-{r.fixed_k}"
                )
    return [
        f"- conformal mean coverage ≥ 1−α−{COVERAGE_SLACK}: {held} of {held + len(missed)}"
        + (f"; short: {'; '.join(missed)}" if missed else ""),
        f"- conformal mean chunks ≤ fixed top-k at the same coverage: {cheaper} of "
        f"{cheaper + len(dearer)}" + (f"; not: {'; '.join(dearer)}" if dearer else ""),
    ]


def subset_markdown(subset: SubsetResult) -> str:
    """One subset's section: its verdicts, skipped sizes, coverage tables and abstain signal."""
    kinds_text = ", ".join(f"{k} {v}" for k, v in sorted(subset.kinds.items()))
    parts = [f"## {subset.name} ({subset.n_items} questions: {kinds_text})", ""]
    parts += checks(subset)
    if subset.skipped_cal_sizes:
        parts.append(f"- skipped calibration sizes: {'; '.join(subset.skipped_cal_sizes)}")
    if subset.reports:
        parts += ["", to_markdown(subset.reports)]
    if subset.abstain:
        parts += [
            "",
            f"#### abstain signal (q̂ from all {subset.n_items} {subset.name} questions): "
            "share with no chunk ≥ 1−q̂",
            "",
            abstain_markdown(subset.abstain),
        ]
    return "\n".join(parts)


def mondrian_section(
    rows: Sequence[GroupCoverage],
    predicted: dict[str, int],
    *,
    splits: int,
    seed: int,
    max_chunks: int,
    links: bool,
    relative: bool = False,
) -> str:
    """The Mondrian section (``links``: COVRAG_MULTI_HOP_LINKS was on; ``relative``: the
    relative scale served the questions it serves); ``predicted`` counts the questions in
    each group a request gets (a question counts in each group of its set)."""
    return "\n".join(
        [
            "## Mondrian (group-conditional) against pooled, per true kind",
            "",
            f"Half/half splits ({splits}, seed {seed}); a question's groups are what a "
            "request of it gets (its caller group, else each kind in its set by the "
            "classifier: "
            + ", ".join(f"{g} {n}" for g, n in sorted(predicted.items()))
            + "); its q̂ is the largest of its groups' own (each raised to its labelled "
            "single-hop and comparison members' own), never below the pooled one. "
            + (
                "Multi-hop links on (COVRAG_MULTI_HOP_LINKS): with kind:bridge in the set, the "
                "context also holds the top hits and k̂ linked documents, and a question "
                "counts as covered when its link rank is at most k̂. "
                if links
                else "Multi-hop links off (COVRAG_MULTI_HOP_LINKS): a question with kind:bridge "
                "in its set is never flagged. "
            )
            + (
                "Relative scale on (COVRAG_CONFORMAL_SCORE): a question whose set is "
                "kind:single alone is thresholded on its chunks' shares of its top 10 hits, "
                "calibrated on the calibration questions served so; the others on the cosine "
                "(the pooled columns stay on the cosine). "
                if relative
                else ""
            )
            + "Flagged: the response would say `coverage_guaranteed` (every group's own q̂ "
            f"finite, at most {max_chunks} chunks in the context, and k̂ finite for "
            "kind:bridge).",
            "",
            mondrian_markdown(rows),
        ]
    )
