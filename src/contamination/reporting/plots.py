"""Plots of the report: each table's metrics against the contamination ratio, and the recursion
table's metrics against generation (plot_generations).

One panel per metric; one colour per model; one line style per contaminating dataset (the
series of report.contamination_positions). The measured values are lines with filled dots, the
paper's values hollow markers of the same colour at the same places, so a gap between dot and
marker is the reproduction's difference. Cells without a measured value leave a gap in the line.
"""

import math

from contamination.io import atomic_path

LINE_STYLES = ["-", "--", ":", "-."]


def save_png(figure, path) -> None:
    """Write a matplotlib figure atomically; no "Software" entry, so the bytes depend on the plot only."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})


def plot_table(frame, positions: list, title: str, path) -> None:
    """``frame``: the table CSV (tables.TABLE_COLUMNS); ``positions``: report.contamination_positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    metrics = list(dict.fromkeys(frame["metric"]))
    models = list(dict.fromkeys(frame["model"]))
    series = list(dict.fromkeys(position["series"] for position in positions))
    colours = {model: f"C{index % 10}" for index, model in enumerate(models)}
    styles = {name: LINE_STYLES[index % len(LINE_STYLES)] for index, name in enumerate(series)}
    columns = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    values = frame.set_index(["dataset", "model", "metric"])
    for panel, metric in zip(axes.flat, metrics):
        for model in models:
            for name in series:
                points = sorted((p["ratio"], p["dataset"]) for p in positions if p["series"] == name)
                ratios = [100 * ratio for ratio, _ in points]
                measured = [values.loc[(dataset, model, metric), "measured"] for _, dataset in points]
                reported = [values.loc[(dataset, model, metric), "reported"] for _, dataset in points]
                panel.plot(ratios, measured, linestyle=styles[name], marker="o", color=colours[model])
                panel.plot(ratios, reported, linestyle="none", marker="s", markersize=8,
                           markerfacecolor="none", color=colours[model])
        panel.set_title(metric, fontsize=9)
        panel.set_xlabel("contamination ratio (%)")
        panel.grid(alpha=0.3)
    for panel in list(axes.flat)[len(metrics):]:
        panel.set_visible(False)
    legend = [Line2D([], [], color=colours[model], label=model) for model in models]
    legend += [Line2D([], [], color="black", linestyle=styles[name], label=f"with {name}") for name in series]
    legend += [Line2D([], [], color="black", marker="o", linestyle="none", label="measured"),
               Line2D([], [], color="black", marker="s", markerfacecolor="none", linestyle="none", label="paper")]
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.legend(handles=legend, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    save_png(figure, path)
    plt.close(figure)


def plot_generations(frame, title: str, path) -> None:
    """``frame``: one policy's rows of the recursion table (experiments/recursion.py); one panel per
    metric against generation, measured values as a line with dots (a NaN leaves a gap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(frame["metric"]))
    columns = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for panel, metric in zip(axes.flat, metrics):
        points = frame[frame["metric"] == metric].sort_values("generation")
        panel.plot(points["generation"], points["measured"], marker="o", color="C0")
        panel.set_xticks(sorted(set(points["generation"])))
        panel.set_title(metric, fontsize=9)
        panel.set_xlabel("generation")
        panel.grid(alpha=0.3)
    for panel in list(axes.flat)[len(metrics):]:
        panel.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    save_png(figure, path)
    plt.close(figure)
