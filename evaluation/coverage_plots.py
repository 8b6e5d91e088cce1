"""The plots of ``covrag eval coverage``: coverage against its target, and the chunks it costs.

Apart from the report so matplotlib (an evaluation-only dependency) is imported here alone, and
only when plots are drawn.
"""

from __future__ import annotations

from pathlib import Path

from evaluation.coverage_report import SubsetResult


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
