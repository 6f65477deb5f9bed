"""Every figure the programs draw, written atomically to a file.

matplotlib is imported only when a figure is drawn (``pyplot()``), with the Agg backend, which
writes files and needs no display.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Any

import torch

from lightning_modules.runs.storage import atomic_path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (set here, before pyplot is first imported)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib figure atomically, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    pyplot().close(fig)
    return Path(path)


def plot_curves(
    histories: dict[str, list[dict[str, float]]],
    panels: list[tuple[str, str]],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """One panel per (metric, y label): train dashed, val solid, one colour per run."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], panels):
        for color, (label, rows) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], histories.items()):
            for split, style in (("train", "--"), ("val", "-")):
                points = [(r["epoch"], r[f"{split}_{metric}"]) for r in rows if f"{split}_{metric}" in r]
                if points:
                    ax.plot(*zip(*points), style, marker="o", color=color, label=f"{label} {split}".strip())
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- MNIST


def plot_sweep(rows: list[dict[str, Any]], model: str, path: str | os.PathLike) -> Path:
    """Validation accuracy of each sweep candidate: against hidden size (softmax) or filter size (CNN)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if model == "softmax":
        ax.plot([r["spec"]["hidden"] for r in rows], [100 * r["val_acc"] for r in rows], "o-")
        ax.set(xscale="log", xlabel="hidden units")
        ax.set_xticks([r["spec"]["hidden"] for r in rows], [str(r["spec"]["hidden"]) for r in rows])
    else:
        for h in sorted({r["spec"]["hidden"] for r in rows}):
            sub = [r for r in rows if r["spec"]["hidden"] == h]
            ax.plot(
                [r["spec"]["kernel_size"] for r in sub], [100 * r["val_acc"] for r in sub], "o-", label=f"hidden {h}"
            )
        ax.set(xlabel="filter size k (k x k)")
        ax.set_xticks(sorted({r["spec"]["kernel_size"] for r in rows}))
        ax.legend()
    ax.set(ylabel="validation accuracy (%)", title=f"{model}: sweep, validation accuracy")
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_confusion(preds: torch.Tensor, labels: torch.Tensor, title: str, path: str | os.PathLike) -> torch.Tensor:
    """torchmetrics' confusion matrix and its own plot; returns the matrix (true x predicted)."""
    pyplot()
    from torchmetrics.classification import MulticlassConfusionMatrix

    metric = MulticlassConfusionMatrix(num_classes=10, sync_on_compute=False)  # rank zero alone
    metric.update(preds, labels)
    fig, ax = metric.plot(add_text=True)
    ax.set(title=title, xlabel="predicted", ylabel="true")
    fig.set_size_inches(6.5, 6)
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    return metric.compute()


def plot_filters(weight: torch.Tensor, path: str | os.PathLike) -> Path:
    """weight (F, 1, k, k): each filter as a small image, each on its own symmetric colour scale."""
    plt = pyplot()
    w = weight.detach().cpu()[:, 0]  # (F, k, k)
    n = w.shape[0]
    cols = 8
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            lim = float(w[i].abs().max())
            ax.imshow(w[i].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.suptitle(f"first-layer filters ({n} x {w.shape[1]}x{w.shape[2]})")
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


# --------------------------------------------------------------------------- transfer learning


def prediction_grid(
    images: torch.Tensor, predicted: list[str], true: list[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """images (B, 3, H, W) in [0, 1], each titled with its predicted and true class (green when right)."""
    plt = pyplot()
    columns = min(4, len(images))
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, pred, want in zip(axes.flat, images, predicted, true):
        ax.imshow(image.permute(1, 2, 0).cpu().numpy())  # (H, W, 3) for matplotlib
        ax.set_title(f"predicted: {pred}\ntrue: {want}", color="tab:green" if pred == want else "tab:red", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


# --------------------------------------------------------------------------- image captioning


def caption_grid(samples: list[tuple[Path, str, list[str]]], path: str | os.PathLike, title: str) -> Path:
    """Each image (a file) with its generated caption above its reference captions."""
    plt = pyplot()
    from torchvision.io import ImageReadMode, read_image

    cols = 3
    rows = math.ceil(len(samples) / cols)
    # Each image sits above its own text panel: the generated caption, then the references.
    fig, axes = plt.subplots(
        2 * rows, cols, figsize=(5 * cols, 6.8 * rows), squeeze=False, gridspec_kw={"height_ratios": [3, 1.6] * rows}
    )
    for ax in axes.flat:
        ax.axis("off")
    for k, (image, caption, references) in enumerate(samples):
        image_ax, text_ax = axes[2 * (k // cols), k % cols], axes[2 * (k // cols) + 1, k % cols]
        image_ax.imshow(read_image(str(image), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy())
        text = textwrap.fill("generated: " + caption, 50)
        text_ax.text(0, 1, text, va="top", fontsize=10.5, fontweight="bold", transform=text_ax.transAxes)
        refs = "\n".join(textwrap.fill("- " + r, 66) for r in references)
        text_ax.text(0, 0.72, refs, va="top", fontsize=8, family="serif", transform=text_ax.transAxes)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def attention_grid(
    image: torch.Tensor,
    preprocessing: dict,
    words: list[str],
    weights: torch.Tensor,
    path: str | os.PathLike,
    title: str,
) -> Path:
    """Show, Attend and Tell's picture: the photo, then one panel per word with the attention that chose
    it over the photo. image (3, S, S) as the encoder saw it (normalised), weights (k, h, w), one map a word."""
    plt = pyplot()
    from lightning_modules.preprocessing import denormalize

    shown = denormalize(image[None], preprocessing["mean"], preprocessing["std"])[0].permute(1, 2, 0).numpy()
    size = image.shape[-2:]
    up = torch.nn.functional.interpolate(weights[:, None].float(), size=size, mode="bilinear", align_corners=False)
    cols = min(5, len(words) + 1)
    rows = math.ceil((len(words) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(shown)
    axes.flat[0].set_title("photo", fontsize=10)
    for ax, word, heat in zip(axes.flat[1:], words, up[:, 0]):
        ax.imshow(shown)
        ax.imshow((heat / heat.max().clamp_min(1e-12)).numpy(), cmap="gray", alpha=0.6)
        ax.set_title(word, fontsize=11)
    fig.suptitle(textwrap.fill(title, 90), fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
