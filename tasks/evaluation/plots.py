"""PNG plots of an evaluation: a 2-D map of the space, recall vs nprobe, neighbour similarity."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_map(x: np.ndarray, labels: list[str], path: Path, seed: int) -> None:
    """t-SNE of a sample, coloured by label (or cluster)."""
    from sklearn.manifold import TSNE  # noqa: PLC0415

    plt = _pyplot()
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    xy = TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
              random_state=seed).fit_transform(x)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for name in sorted(set(labels)):
        m = np.array([lab == name for lab in labels])
        ax.scatter(xy[m, 0], xy[m, 1], s=9, alpha=0.75, label=name)
    ax.set_title(f"t-SNE of {len(x)} chunk vectors")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(set(labels)) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_sweep(sweep: list[dict], param: str, path: Path) -> None:
    """Recall@10 vs exact search and latency across the search parameter."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    if sweep:
        xs = [s[param] for s in sweep]
        for key, style in (("recall_corpus", "o-"), ("recall_queries", "s--")):
            ax.plot(xs, [s[key] for s in sweep], style, label=key.replace("_", " vs exact, "))
        ax.set_xscale("log", base=2)
        ax2 = ax.twinx()
        ax2.plot(xs, [s["ms_per_query"] for s in sweep], "^:", color="grey")
        ax2.set_ylabel("ms / query", color="grey")
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "exact (Flat) index: recall 1.0 at every setting",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(param)
    ax.set_ylabel("recall@10")
    ax.set_title("index recall vs search parameter")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_histogram(values: np.ndarray, path: Path) -> None:
    """Distribution of each vector's nearest-neighbour cosine similarity."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.hist(values, bins=40, color="tab:blue", alpha=0.8)
    ax.set_xlabel("cosine similarity to nearest other vector")
    ax.set_ylabel("vectors")
    ax.set_title("nearest-neighbour similarity")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
