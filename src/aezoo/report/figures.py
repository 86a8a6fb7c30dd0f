"""Matplotlib figures for reports, returned as PNG bytes (no display needed)."""

from __future__ import annotations

import io

import numpy as np


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def loss_curves(records: list[dict]) -> bytes | None:
    """One panel per metric: the training curve (by step) and the validation points."""
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    skip = {"split", "step", "epoch", "elapsed_s", "samples_per_s", "lr"}
    keys = [k for k in (train or val or [{}])[0] if k not in skip]
    if not keys:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        if train:
            ax.plot([r["step"] for r in train if k in r], [r[k] for r in train if k in r], label="train", lw=1.2)
        if val:
            ax.plot([r["step"] for r in val if k in r], [r[k] for r in val if k in r], "o-", label="validation", ms=3)
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        values = [r[k] for r in train + val if k in r and np.isfinite(r[k])]
        if values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
    axes[0][0].legend()
    return _png(fig)


def code_map(codes: np.ndarray, labels: np.ndarray | None, classes: list[str] | None) -> bytes:
    """Scatter of the codes in 2-D (PCA of the codes when they have more than two dimensions)."""
    from sklearn.decomposition import PCA

    codes = codes.reshape(len(codes), -1)
    if codes.shape[1] > 2:
        xy = PCA(n_components=2, random_state=0).fit_transform(codes)
        axis = "PCA of the codes"
    elif codes.shape[1] == 2:
        xy, axis = codes, "code"
    else:
        xy, axis = np.c_[codes[:, 0], np.zeros(len(codes))], "code"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.5)
    else:
        cmap = plt.get_cmap("tab10" if labels.max() < 10 else "tab20")
        for k in np.unique(labels):
            sel = labels == k
            name = classes[k] if classes and k < len(classes) else str(k)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.6, color=cmap(int(k) % cmap.N), label=name)
        ax.legend(markerscale=4, fontsize=7, loc="best", ncol=2)
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    return _png(fig)
