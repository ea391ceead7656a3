"""The study's figures (data, the paper's Fig. 4 and 5, F1, occlusion), built without pyplot so nothing is shown
twice nor kept alive; ``ax`` / ``axes`` draw into an existing figure, ``synthetic=True`` stamps it, and accuracy
plots show the majority-class baseline when it is known."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fer_lib.core.config import AugmentConfig, require_config
from fer_lib.core.data import FerDataset, Split
from fer_lib.core.labels import EMOTIONS, NUM_CLASSES

SYNTHETIC_GID = "fer-synthetic-mark"
SPLIT_COLORS: dict[str, str] = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
MODEL_COLORS: tuple[str, ...] = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b")
BASELINE_STYLE: dict[str, Any] = {"color": "0.35", "linestyle": "--", "linewidth": 1.2}
DEFAULT_DPI = 110


# --- Helpers ----------------------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _axes_row(axes: Axes | Sequence[Axes] | None, n: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    if axes is not None:
        axes = list(np.ravel(axes))
        if len(axes) != n:
            raise ValueError(f"expected {n} axes, got {len(axes)}")
        return axes[0].get_figure(root=True), axes
    fig = _new_figure(width, height)
    return fig, list(np.atleast_1d(fig.subplots(1, n)))


def _model_color(index: int) -> str:
    return MODEL_COLORS[index % len(MODEL_COLORS)]


def _baseline_line(ax: Axes, value: float | None, label: str = "majority-class baseline") -> None:
    if value is not None and np.isfinite(value):
        ax.axhline(value, **BASELINE_STYLE, label=f"{label} ({value:.3f})")


def _bare(ax: Axes) -> None:
    ax.set(xticks=[], yticks=[])
    ax.spines[:].set_visible(False)


def mark_synthetic(fig: Figure, text: str = "SYNTHETIC DATA") -> Figure:
    """Stamp a figure as made from synthetic data (watermark, red suptitle; idempotent); call after its suptitle."""
    if is_marked_synthetic(fig):
        return fig
    size = min(40.0, 6.5 * float(fig.get_figwidth()))  # fits the figure's width, diagonally
    fig.text(0.5, 0.5, text, gid=SYNTHETIC_GID, fontsize=size, color="red", alpha=0.13, rotation=25,
             ha="center", va="center", fontweight="bold", zorder=1000)
    notice, previous = f"{text} (not FER2013)", fig.get_suptitle()
    fig.suptitle(f"{notice}: {previous}" if previous else notice, color="#c00000", fontweight="bold")
    return fig


def is_marked_synthetic(fig: Figure) -> bool:
    return any(artist.get_gid() == SYNTHETIC_GID for artist in fig.texts)


def save_figure(fig: Figure, path: str | Path, *, dpi: int = DEFAULT_DPI) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png", facecolor="white")
    return path


def save_figure_in(fig: Figure, folder: str | Path | None, filename: str, *, dpi: int = DEFAULT_DPI) -> Path | None:
    """:func:`save_figure` into ``folder``; does nothing (returns None) when ``folder`` is None."""
    return None if folder is None else save_figure(fig, Path(folder) / filename, dpi=dpi)


# --- Data exploration -------------------------------------------------------------------------------------------------


def plot_class_distribution(summary: Any, *, axes: Sequence[Axes] | None = None, synthetic: bool = False) -> Figure:
    """Images per class, one panel per split (from :func:`fer_lib.core.data.summarize`), majority-class count marked."""
    counts: pd.DataFrame = summary.counts.drop(index="total", errors="ignore")
    majority: pd.DataFrame = summary.majority
    splits = list(counts.columns)
    fig, axes = _axes_row(axes, len(splits), 4.2 * len(splits), 3.6)
    for ax, split in zip(axes, splits):
        values = counts[split].reindex(EMOTIONS).fillna(0).astype(int)
        total = int(values.sum())
        ax.bar(values.index, values.to_numpy(), color=SPLIT_COLORS.get(split, "0.5"))
        for x, value in enumerate(values):
            ax.annotate(f"{value / max(total, 1):.0%}", (x, value), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 1), textcoords="offset points")
        if split in majority.index:
            share = float(majority.loc[split, "majority_accuracy"])
            cls = majority.loc[split, "majority_class"]
            ax.axhline(share * total, color="crimson", linestyle="--", linewidth=1.2,
                       label=f"majority '{cls}': {share:.1%}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set(title=f"{split} (n={total})", xlabel="class", ylabel="images", ylim=(0, max(1, values.max()) * 1.2))
        ax.tick_params(axis="x", rotation=45)
    return mark_synthetic(fig) if synthetic else fig


def plot_sample_grid(split: Split, per_class: int = 6, seed: int = 0, *, synthetic: bool = False) -> Figure:
    """``per_class`` random images of each class (rows: classes in csv order), drawn with a seeded generator."""
    rng = np.random.default_rng(seed)
    fig = _new_figure(1.1 * per_class + 0.8, 1.15 * NUM_CLASSES)
    grid = np.atleast_2d(fig.subplots(NUM_CLASSES, per_class, squeeze=False))
    for code, name in enumerate(EMOTIONS):
        members = np.flatnonzero(split.labels == code)
        chosen = rng.choice(members, size=min(per_class, members.size), replace=False) if members.size else []
        for col in range(per_class):
            ax = grid[code, col]
            _bare(ax)
            if col < len(chosen):
                ax.imshow(split.images[chosen[col]].squeeze(), cmap="gray", vmin=0, vmax=255)
            if col == 0:
                ax.set_ylabel(f"{name}\n({members.size})", rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{split.name}: {per_class} random images per class (seed {seed})")
    return mark_synthetic(fig) if synthetic else fig


def plot_pixel_stats(dataset: FerDataset | Split, *, synthetic: bool | None = None) -> Figure:
    """Pixel intensity histogram per split (top) and the mean image of each class in train (bottom)."""
    splits = dataset.splits if isinstance(dataset, FerDataset) else {dataset.name: dataset}
    reference = splits.get("train", next(iter(splits.values())))
    fig = _new_figure(12, 4.6)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.4, 1])
    hist_ax = top.add_subplot()
    bins = np.arange(0, 257, 4)
    for name, split in splits.items():
        hist_ax.hist(split.images.ravel(), bins=bins, density=True, histtype="step", linewidth=1.5,
                     color=SPLIT_COLORS.get(name), label=f"{name} (mean {split.images.mean():.1f}, "
                                                          f"std {split.images.std():.1f})")
    hist_ax.set(xlim=(0, 255), xlabel="pixel intensity", ylabel="density",
                title="Pixel intensity distribution per split")
    hist_ax.legend(fontsize=8)
    mean_axes = bottom.subplots(1, NUM_CLASSES)
    for code, (ax, name) in enumerate(zip(mean_axes, EMOTIONS)):
        members = reference.images[reference.labels == code]
        if len(members):
            ax.imshow(members.astype(np.float64).mean(axis=0).squeeze(), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{name} (n={len(members)})", fontsize=8)
        ax.set(xticks=[], yticks=[])
    bottom.suptitle(f"Mean image per class ({reference.name})", fontsize=10)
    synthetic = bool(getattr(dataset, "is_synthetic", False)) if synthetic is None else synthetic
    return mark_synthetic(fig) if synthetic else fig


def plot_augmentation_preview(images: np.ndarray, config: AugmentConfig | None = None,
                              variants: int = 6, seed: int = 0, *, labels: Sequence[str] | None = None,
                              synthetic: bool = False) -> Figure:
    """Each uint8 image (rows, optionally ``labels``) next to ``variants`` random augmentations by ``config``
    (an :class:`AugmentConfig`, e.g. from ``AugmentConfig.from_mapping``; None: the identity warp)."""
    require_config(config, AugmentConfig, "plot_augmentation_preview's config", optional=True)
    from fer_lib.core.augment import augment_preview  # imports Keras: only for this figure

    images = np.asarray(images)
    augmented = augment_preview(images, config, variants=variants, seed=seed)
    n = images.shape[0]
    fig = _new_figure(1.15 * (variants + 1), 1.2 * n + 0.4)
    grid = np.atleast_2d(fig.subplots(n, variants + 1, squeeze=False))
    for row in range(n):
        for col in range(variants + 1):
            ax = grid[row, col]
            picture = images[row] / 255.0 if col == 0 else augmented[row, col - 1]
            ax.imshow(np.asarray(picture).squeeze(), cmap="gray", vmin=0, vmax=1)
            ax.set(xticks=[], yticks=[])
            if row == 0:
                ax.set_title("original" if col == 0 else f"#{col}", fontsize=9)
            if col == 0 and labels is not None:
                ax.set_ylabel(str(labels[row]), fontsize=9)
    fig.suptitle(f"Augmentation preview (seed {seed})")
    return mark_synthetic(fig) if synthetic else fig


# --- Training curves and evaluation -----------------------------------------------------------------------------------


def plot_curves(curves: pd.DataFrame, majority_baseline: float | None = None, *, title: str = "Training curves",
                best_epoch: int | None = None, axes: Sequence[Axes] | None = None,
                synthetic: bool = False) -> Figure:
    """The paper's Fig. 4: loss and accuracy per epoch of report.curves_table's table (band: ± 1 std over seeds)."""
    fig, (loss_ax, acc_ax) = _axes_row(axes, 2, 12, 4.4)
    palette = {model: _model_color(index) for index, model in enumerate(dict.fromkeys(curves["model"]))}
    several = curves["seed"].nunique() > 1
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        rows = curves[curves["metric"] == metric]
        if not rows.empty:
            sns.lineplot(data=rows, x="epoch", y="value", hue="model", style="split", palette=palette,
                         style_order=["train", "val"], errorbar="sd" if several else None, marker="o", markersize=4,
                         ax=ax)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.6", linestyle=":", linewidth=1, label=f"best epoch ({best_epoch})")
        ax.set(xlabel="epoch", ylabel=metric,
               title=metric.capitalize() + (" (band: ± 1 std over seeds)" if several else ""))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    _baseline_line(acc_ax, majority_baseline)
    acc_ax.set_ylim(0, 1)
    for ax in (loss_ax, acc_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return mark_synthetic(fig) if synthetic else fig


def plot_confusion_matrix(matrix: Sequence[Sequence[float]] | np.ndarray, normalised: bool,
                          title: str = "Confusion matrix", *, ax: Axes | None = None, cbar: bool = True,
                          synthetic: bool = False) -> Figure:
    """Seaborn heatmap, rows = true class, columns = predicted class (csv order); counts or row-normalised."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (NUM_CLASSES, NUM_CLASSES):
        raise ValueError(f"confusion matrix must be {NUM_CLASSES}x{NUM_CLASSES}, got {matrix.shape}")
    fig, [ax] = _axes_row(ax, 1, 6.2, 5.2)
    sns.heatmap(matrix, ax=ax, annot=True, fmt=".2f" if normalised else ".0f", cmap="Blues", square=True,
                vmin=0, vmax=1 if normalised else None, cbar=cbar, xticklabels=EMOTIONS, yticklabels=EMOTIONS,
                annot_kws={"fontsize": 8}, cbar_kws={"label": "share of true class" if normalised else "images"})
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", rotation=45)
    ax.tick_params(axis="y", rotation=0)
    return mark_synthetic(fig) if synthetic else fig


def plot_confusion_matrices(metrics_by_model: Mapping[str, Mapping[str, Any]], normalised: bool = True,
                            split: str = "test", *, axes: Sequence[Axes] | None = None,
                            synthetic: bool = False) -> Figure:
    """The paper's Fig. 5: one confusion matrix per model side by side (``metrics`` of one split per model)."""
    models = list(metrics_by_model)
    fig, axes = _axes_row(axes, len(models), 6.0 * len(models), 5.2)
    key = "confusion_matrix_normalised" if normalised else "confusion_matrix"
    for ax, (model, metrics) in zip(axes, metrics_by_model.items()):
        plot_confusion_matrix(metrics[key], normalised,
                              f"{model} ({split}, accuracy {metrics['accuracy']:.3f})", ax=ax)
    fig.suptitle(f"Confusion matrices on {split}{' (row-normalised)' if normalised else ' (counts)'}")
    return mark_synthetic(fig) if synthetic else fig


def plot_sweep(table: pd.DataFrame, keys: Sequence[str], *, ax: Axes | None = None,
               title: str = "Test accuracy across the sweep", synthetic: bool = False) -> Figure:
    """Test accuracy (95% interval) of each model at each point of a sweep; ``table``: tables.comparison_rows."""
    fig, [ax] = _axes_row(ax, 1, max(6.0, 1.2 * table[list(keys)].drop_duplicates().shape[0] + 3), 4.4)
    points = table[list(keys)].astype(str).agg(", ".join, axis=1) if keys else table["run"]
    labels = list(dict.fromkeys(points))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / max(1, len(models))
    for index, model in enumerate(models):
        rows = table[table["model"] == model]
        x = np.array([labels.index(label) for label in points[rows.index]]) + (index - (len(models) - 1) / 2) * width
        y = rows["test_accuracy"].to_numpy(float)
        low, high = rows.reindex(columns=["low", "high"]).to_numpy(float).T  # NaN where unknown: no error bar
        error = np.nan_to_num(np.vstack([y - low, high - y]))
        ax.errorbar(x, y, yerr=error, fmt="o", capsize=4, color=_model_color(index), label=model)
    _baseline_line(ax, float(table["majority_baseline"].iloc[0]) if len(table) else None)
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
    ax.set(xlabel=", ".join(keys) if keys else "run", ylabel="test accuracy (95% interval)", ylim=(0, 1), title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return mark_synthetic(fig) if synthetic else fig


def plot_per_class_f1(metrics_by_model: Mapping[str, Mapping[str, Any]], *, ax: Axes | None = None,
                      title: str = "Per-class F1 on test", synthetic: bool = False) -> Figure:
    """Grouped bars: F1 of each class (csv order), one bar per model; ``metrics`` of one split per model."""
    fig, [ax] = _axes_row(ax, 1, 10, 4)
    n_models = len(metrics_by_model)
    width, x = 0.8 / max(1, n_models), np.arange(NUM_CLASSES)
    for index, (model, metrics) in enumerate(metrics_by_model.items()):
        values = [metrics["per_class"][name]["f1"] for name in EMOTIONS]
        ax.bar(x + (index - (n_models - 1) / 2) * width, values, width=width, color=_model_color(index),
               label=f"{model} (macro-F1 {metrics['macro_f1']:.3f})")
    ax.set_xticks(x, EMOTIONS)
    ax.set(ylim=(0, 1), xlabel="class", ylabel="F1", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return mark_synthetic(fig) if synthetic else fig


def plot_test_accuracy(summaries: Mapping[str, Mapping[str, Any]], *, ax: Axes | None = None,
                       synthetic: bool = False) -> Figure:
    """Test accuracy without and with each TTA (flip, ten views) per model, beside the majority-class baseline."""
    fig, [ax] = _axes_row(ax, 1, 1.8 + 2.6 * len(summaries), 4)
    models = list(summaries)
    kinds = [(key, label, color) for key, label, color in
             (("test", "test", "#4c72b0"), ("test_tta", "test + flip TTA", "#55a868"),
              ("test_tta10", "test + ten-view TTA", "#c44e52")) if any(key in summaries[m] for m in models)]
    width, x = 0.8 / len(kinds), np.arange(len(models))
    for index, (key, label, color) in enumerate(kinds):
        values = [summaries[m][key]["accuracy"] if key in summaries[m] else np.nan for m in models]
        bars = ax.bar(x + (index - (len(kinds) - 1) / 2) * width, values, width, color=color, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    _baseline_line(ax, summaries[models[0]]["test"]["majority_class_accuracy"] if models else None)
    ax.set_xticks(x, models)
    ax.set(ylim=(0, 1), ylabel="accuracy", title="Test accuracy")
    ax.legend(fontsize=8)
    return mark_synthetic(fig) if synthetic else fig


# --- What the models look at (occlusion maps, fer_lib.analysis.explain) -----------------------------------------------

OCCLUSION_CMAP = "RdBu_r"  # red: covering the region lowers the true class's probability; blue: it raises it
OCCLUSION_ALPHA = 0.6  # the heat map over the grey face


def _occlusion_scale(maps: np.ndarray) -> float:
    """A symmetric colour limit for maps of drops (the largest |drop|; tiny when the maps are flat)."""
    drops = np.abs(np.asarray(maps, dtype=np.float64))
    return max(float(drops[np.isfinite(drops)].max(initial=0.0)), 1e-6)


def _occlusion_panel(ax: Axes, occlusion: np.ndarray | None, face: np.ndarray | None, limit: float) -> Any:
    """A face in grey (if any) with the occlusion map over it; returns the map's image (for a colour bar)."""
    _bare(ax)
    if face is not None and np.isfinite(face).all():
        ax.imshow(np.asarray(face, dtype=np.float64).squeeze(), cmap="gray", vmin=0, vmax=255)
    if occlusion is None or not np.isfinite(occlusion).any():
        return None
    return ax.imshow(occlusion, cmap=OCCLUSION_CMAP, vmin=-limit, vmax=limit,
                     alpha=OCCLUSION_ALPHA if face is not None else 1.0)


def plot_occlusion_maps(class_maps: Mapping[str, np.ndarray], *, counts: Mapping[str, Sequence[int]] | None = None,
                        faces: np.ndarray | None = None, split: str = "test",
                        title: str = "Occlusion maps per class",
                        synthetic: bool = False) -> Figure:
    """Per class (rows) each model's mean occlusion map (explain.RunOcclusion.class_maps) over the mean face; one
    colour scale per model: the maps show where each model looks, not which model's probabilities move more."""
    models = list(class_maps)
    if not models:
        raise ValueError("class_maps is empty: no model to show")
    for model, maps in class_maps.items():
        if np.shape(maps)[0] != NUM_CLASSES or np.ndim(maps) != 3:
            raise ValueError(f"class_maps[{model!r}] must have shape ({NUM_CLASSES}, H, W), got {np.shape(maps)}")
    fig = _new_figure(max(6.2, 1.3 + 2.0 * len(models)), 1.0 + 1.75 * NUM_CLASSES)
    grid = np.atleast_2d(fig.subplots(NUM_CLASSES, len(models), squeeze=False))
    for column, model in enumerate(models):
        maps = np.asarray(class_maps[model], dtype=np.float64)
        limit = _occlusion_scale(maps)
        shown = None
        for code, name in enumerate(EMOTIONS):
            ax = grid[code, column]
            face = None if faces is None else np.asarray(faces)[code]
            image = _occlusion_panel(ax, maps[code], face, limit)
            shown = shown or image
            if image is None:
                ax.text(0.5, 0.5, "no correctly\nclassified image", transform=ax.transAxes, ha="center",
                        va="center", fontsize=7, color="#8b0000")
            if counts is not None:
                ax.set_title(f"n={int(np.asarray(counts[model])[code])}", fontsize=7, loc="right", pad=2)
            if code == 0:
                ax.set_title(model, fontsize=10, fontweight="bold", loc="center")
            if column == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        if shown is not None:
            fig.colorbar(shown, ax=list(grid[:, column]), location="bottom", shrink=0.85, aspect=18,
                         label="drop of p(true class)")
    fig.supxlabel(f"mean over n correctly classified {split} images per panel;\nred: covering the region lowers "
                  f"the probability of the true class", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return mark_synthetic(fig) if synthetic else fig


def plot_occlusion_examples(images: np.ndarray, labels: Sequence[int], example_maps: Mapping[str, np.ndarray], *,
                            probabilities: Mapping[str, Sequence[float]] | None = None,
                            ids: Sequence[str] | None = None,
                            title: str = "Occlusion maps of single faces", synthetic: bool = False) -> Figure:
    """Single 0-255 faces (rows), then each model's occlusion map over them (explain.RunOcclusion.example_maps),
    titled with the largest drop and ``probabilities`` (of the true class); one colour scale per panel."""
    images = np.asarray(images)
    models = list(example_maps)
    k = len(images)
    if k == 0:
        fig = _new_figure(6, 1.2)
        fig.text(0.5, 0.5, "No face is classified correctly by every model: no single-face maps.", ha="center",
                 va="center")
        return mark_synthetic(fig) if synthetic else fig
    for model, maps in example_maps.items():
        if np.shape(maps)[0] != k:
            raise ValueError(f"example_maps[{model!r}] holds {np.shape(maps)[0]} maps for {k} images")
    fig = _new_figure(max(6.2, 0.9 + 1.9 * (len(models) + 1)), 0.8 + 2.0 * k)
    grid = np.atleast_2d(fig.subplots(k, len(models) + 1, squeeze=False))
    for row in range(k):
        face = images[row].squeeze()
        _bare(grid[row, 0])
        grid[row, 0].imshow(face, cmap="gray", vmin=0, vmax=255)
        caption = EMOTIONS[int(labels[row])]
        if ids is not None:
            caption += f"\n{str(ids[row])[-18:]}"
        grid[row, 0].set_title(caption, fontsize=8)
        for column, model in enumerate(models, start=1):
            drops = np.asarray(example_maps[model], dtype=np.float64)[row]
            _occlusion_panel(grid[row, column], drops, face, _occlusion_scale(drops))
            text = f"{model}\nmax drop {np.nanmax(drops):.2f}"
            if probabilities is not None:
                text += f", p={float(np.asarray(probabilities[model])[row]):.2f}"
            grid[row, column].set_title(text, fontsize=7)
    fig.supxlabel("red: covering the region lowers the probability p of the true class;\none colour scale per "
                  "panel", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return mark_synthetic(fig) if synthetic else fig
