"""The plots of ``covrag eval coverage``: coverage against its target, and the chunks it costs.

Apart from the report so matplotlib (an evaluation-only dependency) is imported here alone, and
only when plots are drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evaluation.coverage_report import SubsetResult
from evaluation.mondrian import GroupCoverage


def plot_subset(subset: SubsetResult, out: Path) -> list[Path]:
    """(a) coverage vs 1−α with the diagonal; (b) mean chunks passed vs α, conformal vs top-k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not subset.reports:
        return []
    colors = plt.get_cmap("viridis")(
        [i / max(len(subset.reports) - 1, 1) * 0.85 for i in range(len(subset.reports))]
    )
    alphas = [r.alpha for r in subset.reports[0].results]
    targets = [1 - a for a in alphas]
    nan = float("nan")

    fig, ax = plt.subplots(figsize=(7, 5.5))
    lo, hi = min(targets) - 0.03, 1.0
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="target 1−α")
    jitter = 0.0025
    for i, (report, color) in enumerate(zip(subset.reports, colors, strict=True)):
        dx = (i - (len(subset.reports) - 1) / 2) * jitter
        conf = [r.conformal for r in report.results]
        naive = [r.naive for r in report.results]
        ax.errorbar(
            [t + dx for t in targets],
            [c.coverage_mean if c else nan for c in conf],
            yerr=[c.coverage_sd if c else nan for c in conf],
            color=color,
            marker="o",
            capsize=3,
            label=f"conformal n_cal={report.n_cal}",
        )
        ax.errorbar(
            [t + dx + jitter / 3 for t in targets],
            [c.coverage_mean for c in naive],
            yerr=[c.coverage_sd for c in naive],
            color=color,
            marker="x",
            ls="--",
            capsize=3,
            alpha=0.7,
            label=f"naive n_cal={report.n_cal}",
        )
    ax.set(
        xlabel="target coverage 1−α",
        ylabel="empirical test coverage (mean ± sd over splits)",
        title=f"Conformal vs naive threshold — {subset.name} ({subset.n_items} questions)",
        xlim=(lo, hi),
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    coverage_png = out / f"coverage_{subset.name}.png"
    fig.savefig(coverage_png, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5.5))
    for report, color in zip(subset.reports, colors, strict=True):
        ax.plot(
            alphas,
            [r.conformal.chunks.mean if r.conformal else nan for r in report.results],
            color=color,
            marker="o",
            label=f"conformal n_cal={report.n_cal}",
        )
        ax.plot(
            alphas,
            [r.fixed_k if r.fixed_k is not None else nan for r in report.results],
            color=color,
            marker="s",
            ls=":",
            label=f"fixed top-k, same coverage, n_cal={report.n_cal}",
        )
    ax.set(
        xlabel="α",
        ylabel="mean chunks passed to the generator",
        title=f"Price of coverage — {subset.name}",
        ylim=(0, None),
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    chunks_png = out / f"chunks_{subset.name}.png"
    fig.savefig(chunks_png, dpi=120)
    plt.close(fig)
    return [coverage_png, chunks_png]


def plot_mondrian(rows: Sequence[GroupCoverage], out: Path) -> list[Path]:
    """Per true kind of question: (a) pooled and Mondrian coverage, and the coverage among the
    requests flagged ``coverage_guaranteed``, against the target 1−α and the issue's
    tolerance 1−α−0.02; (b) the share of the kind's requests flagged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r.kind for r in rows})
    if not kinds:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    colors = dict(zip(kinds, plt.get_cmap("tab10")(range(len(kinds))), strict=True))
    alphas = sorted({r.alpha for r in rows})
    targets = [1 - a for a in alphas]
    # every value on the chart, a flagged group with no coverage (0) included
    shown = [v for r in rows for v in (r.pooled_coverage, r.mondrian_coverage)]
    shown += [r.guaranteed_coverage for r in rows if r.guaranteed_coverage is not None]
    lo = max(0.0, min([*shown, min(targets) - 0.1]) - 0.05)
    cov, share = axes
    cov.plot([lo, 1], [lo, 1], color="grey", lw=1, label="target 1−α")
    cov.plot([lo, 1], [lo - 0.02, 0.98], color="grey", lw=1, ls=":", label="1−α−0.02")
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        mine = sorted((r for r in rows if r.kind == kind), key=lambda r: r.alpha)
        x = [1 - r.alpha for r in mine]
        color = colors[kind]
        cov.plot(x, [r.pooled_coverage for r in mine], color=color, ls="--", marker="x")
        cov.plot(x, [r.mondrian_coverage for r in mine], color=color, marker="o", label=kind)
        flagged = [
            (1 - r.alpha, r.guaranteed_coverage) for r in mine if r.guaranteed_coverage is not None
        ]
        cov.scatter([f[0] for f in flagged], [f[1] for f in flagged], color=color, marker="*", s=90)
        share.bar(
            [j + i * width for j in range(len(mine))],
            [r.guaranteed_share for r in mine],
            width=width,
            color=color,
            label=kind,
        )
    cov.set(
        xlabel="target coverage 1−α",
        ylabel="held-out coverage (mean over splits)",
        title="o Mondrian, x pooled, * where flagged guaranteed",
        xlim=(min(targets) - 0.05, 1),
        ylim=(lo, 1.01),
    )
    cov.legend(fontsize=8)
    cov.grid(alpha=0.3)
    share.set(
        xticks=[j + width * (len(kinds) - 1) / 2 for j in range(len(alphas))],
        xticklabels=[f"α {a:g}" for a in alphas],
        ylabel="share of the kind's requests flagged guaranteed",
        ylim=(0, 1),
        title="coverage_guaranteed: true",
    )
    share.legend(fontsize=8)
    share.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    png = out / "mondrian_kinds.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return [png]
