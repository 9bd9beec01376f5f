"""The pieces of the Snakemake report (workflow/rules/report.smk marks them with ``report()``).

- ``table-report``: one paper table as an HTML page (measured beside the paper, the plot of its
  metrics against the contamination ratio, notes, and each cell's provenance) and the plot as PNG.
- ``all-tables``: every table CSV in one tidy CSV (same columns, one row per cell and metric),
  with one provenance file holding each table's sidecar and the SHA-256 of each table CSV.
- ``generated-examples``: an HTML grid of generated images with their prompts, read from the
  shards (shards.read_item).
- ``run-config``: the run's effective configuration (overlays merged, schema defaults filled) as
  YAML, and as an HTML page with its SHA-256; and the page "what differs from the paper": the
  run's tier, its ``report.differences`` in words, and every setting whose value is not the paper
  config's (config/config.yaml), leaving out site paths, run-time keys, planning and the report's
  own settings, which change no result.

Contamination ratio (the x axis of the plots): the share of a training set's items that come
from the dataset mixed in. For ``replace`` it is the fraction, for ``append`` fraction / (1 +
fraction); a ``subset`` of a table's clean base (the base its replace/append rows start from, or
else a real source) is 0 and belongs to every series; a subset of anything else (SD-ImageNet,
WebVision) is 1 in the series of that dataset. A filtered mixture (an entry with
``filtered_by``: the detector) sits at its mixture's ratio in a series of its own, "<dataset>
filtered by <detector>". Rows that are not a mixture ("w/o fine-tuning") are in the table but not
in the plot.
"""

import base64
import html
import io
import json
import math

from contamination.config import PAPER_TIER, TRAINING_SOURCES, load, settings_argument, with_defaults
from contamination.data import to_rgb8
from contamination.errors import DataError
from contamination.generation.shards import read_item
from contamination.io import atomic_path, read_json, write_json
from contamination.records import sha256_of_file, sha256_of_json
from contamination.reporting.plots import plot_table
from contamination.reporting.tables import TABLE_COLUMNS, write_table

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
th { background: #eee; }
.paper { color: #555; font-size: 85%; }
.missing { color: #a00; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 1em; }
figure { margin: 0; }
figure img { width: 100%; image-rendering: pixelated; }
figcaption { font-size: 85%; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("table-report", help="a paper table as an HTML page and a plot against contamination")
    parser.add_argument("--spec", required=True, type=settings_argument("tables[]"),
                        help="JSON: one entry of config `tables` (defaults may be left out)")
    parser.add_argument("--mixtures", required=True, type=parse_mixtures,
                        help="JSON: config `mixtures` (defaults may be left out)")
    parser.add_argument("--table", required=True, help="the table CSV")
    parser.add_argument("--provenance", required=True, help="the table's provenance sidecar (JSON)")
    parser.add_argument("--out-html", required=True)
    parser.add_argument("--out-png", required=True)
    parser.set_defaults(run=run_table_report)

    parser = subparsers.add_parser("all-tables", help="every table CSV in one tidy CSV, with their provenance")
    parser.add_argument("--tables", required=True, nargs="+", help="table CSVs, in order")
    parser.add_argument("--provenance", required=True, nargs="+", help="their sidecars, in the same order")
    parser.add_argument("--out", required=True)
    parser.add_argument("--out-provenance", required=True)
    parser.set_defaults(run=run_all_tables)

    parser = subparsers.add_parser("generated-examples", help="an HTML grid of generated images and their prompts")
    parser.add_argument("--index", required=True, help="generated index (Parquet, with prompt and uri)")
    parser.add_argument("--name", required=True, help="the generated dataset's name")
    parser.add_argument("--count", required=True, type=int, help="images shown, evenly spaced over the index")
    parser.add_argument("--thumbnail", required=True, type=int, help="longest side of a shown image (px)")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=run_generated_examples)

    parser = subparsers.add_parser("run-config", help="the run's effective config as YAML and as an HTML page")
    parser.add_argument("--config", required=True, type=settings_argument(""),
                        help="JSON: the whole config (defaults may be left out)")
    parser.add_argument("--paper-config", required=True, help="the paper's config file (config/config.yaml)")
    parser.add_argument("--out-yaml", required=True)
    parser.add_argument("--out-html", required=True)
    parser.add_argument("--out-differences", required=True, help="HTML page: what differs from the paper")
    parser.set_defaults(run=run_config_page)


# ---- contamination ratio --------------------------------------------------------------------


def parse_mixtures(text: str) -> list:
    return [with_defaults("mixtures[]", mixture) for mixture in json.loads(text)]


def contamination_positions(spec: dict, mixtures: list) -> list:
    """[{"dataset", "series", "ratio"}] for the rows of a table that are mixtures (see above)."""
    by_name = {mixture["name"]: mixture for mixture in mixtures}
    rows = [(row["dataset"], by_name[row["mixture"]]) for row in spec["rows"] if row["mixture"] in by_name]
    clean = {mixture["base"] for _, mixture in rows if mixture["kind"] != "subset"}
    if not clean:
        clean = {mixture["base"] for _, mixture in rows if mixture["base"] in TRAINING_SOURCES}
    placed, shared = [], []
    for dataset, mixture in rows:
        fraction = mixture["fraction"]
        series = mixture.get("by")
        if "filtered_by" in mixture:
            series = f"{series} filtered by {mixture['filtered_by']}"
        if mixture["kind"] == "replace":
            placed.append({"dataset": dataset, "series": series, "ratio": fraction})
        elif mixture["kind"] == "append":
            placed.append({"dataset": dataset, "series": series, "ratio": fraction / (1 + fraction)})
        elif mixture["base"] in clean:
            shared.append(dataset)
        else:
            placed.append({"dataset": dataset, "series": mixture["base"], "ratio": 1.0})
    series = list(dict.fromkeys(position["series"] for position in placed)) or sorted(clean)
    return placed + [{"dataset": dataset, "series": name, "ratio": 0.0} for name in series for dataset in shared]


# ---- HTML -----------------------------------------------------------------------------------


def page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def number(value) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def table_html(frame, spec: dict) -> str:
    """Rows: the paper's row labels; columns: model x metric; cell: measured, paper, difference
    (paper tier only: tables.py)."""
    columns = [(model, metric) for model in spec["models"] for metric in spec["metrics"]]
    cells = frame.set_index(["dataset", "model", "metric"])
    header = "".join(f"<th>{html.escape(model)}<br>{html.escape(metric)}</th>" for model, metric in columns)
    lines = [f"<table class=\"results\"><thead><tr><th>dataset</th>{header}</tr></thead><tbody>"]
    for row in spec["rows"]:
        entries = []
        for model, metric in columns:
            cell = cells.loc[(row["dataset"], model, metric)]
            measured = number(cell["measured"])
            css = " class=\"missing\"" if measured == "n/a" else ""
            note = f" title=\"{html.escape(cell['note'])}\"" if isinstance(cell["note"], str) and cell["note"] else ""
            difference = f" (&Delta; {number(cell['difference'])})" if cell["tier"] == PAPER_TIER else ""
            entries.append(f"<td{css}{note}>{measured}<br><span class=\"paper\">paper {number(cell['reported'])}"
                           f"{difference}</span></td>")
        lines.append(f"<tr><td>{html.escape(row['dataset'])}</td>{''.join(entries)}</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def tier_warning(tier: str) -> str:
    return (f"<p class=\"missing\"><strong>Tier {html.escape(tier)}: not the paper's settings.</strong> This run "
            "measures other classes, sizes or schedules (the page <em>What differs from the paper</em>, under "
            "Configuration, lists every difference). The paper's value beside each cell shows the direction of "
            "the effect to compare with, not a target; no difference is computed.</p>\n")


def notes_html(frame) -> str:
    noted = frame[frame["note"].fillna("") != ""]
    if noted.empty:
        return ""
    items = "".join(f"<li>{html.escape(f'{r.dataset} / {r.model} / {r.metric}')}: {html.escape(r.note)}</li>"
                    for r in noted.itertuples())
    return f"<h2>Notes</h2><ul>{items}</ul>"


def provenance_html(provenance: dict) -> str:
    rows = []
    for key, cell in provenance["cells"].items():
        record = cell["provenance"]
        models = ", ".join(f"{role} {model['fingerprint'][:12]}" for role, model in record.get("models", {}).items())
        missing = provenance["incomplete"].get(key)
        rows.append(
            f"<tr><td>{html.escape(key)}</td><td>{html.escape(cell['status'])}</td>"
            f"<td><code>{html.escape(str(record.get('config_sha256', ''))[:12])}</code></td>"
            f"<td>{html.escape(str(record.get('seed', '')))}</td><td>{html.escape(models)}</td>"
            f"<td class=\"missing\">{html.escape(', '.join(missing or []))}</td></tr>"
        )
    return ("<h2>Provenance</h2><p>Per cell, from its metrics.json (full record in "
            f"<code>{html.escape(provenance['table'])}.provenance.json</code>): run status, config hash, seed, "
            "model fingerprints, and provenance fields the run did not record.</p>"
            "<table><thead><tr><th>cell</th><th>status</th><th>config sha256</th><th>seed</th><th>models</th>"
            f"<th>not recorded</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def run_table_report(args) -> None:
    import pandas as pd

    spec = args.spec
    tier = spec.get("tier", PAPER_TIER)
    frame = pd.read_csv(args.table, keep_default_na=False, na_values=[""])
    from contamination.reporting.tables import reported_values

    in_paper = bool(spec["reported_table"]) and any(key[0] == spec["reported_table"] for key in reported_values())
    source = f"the paper's Table {spec['reported_table']}" if in_paper else "beyond the paper"
    title = f"{spec['name']}: {source} ({spec['experiment']})"
    if tier != PAPER_TIER:
        title += f", {tier} tier"
    plot_table(frame, contamination_positions(spec, args.mixtures), title, args.out_png)
    with open(args.out_png, "rb") as handle:
        plot = data_uri(handle.read(), "image/png")
    compared = "&Delta; = measured &minus; paper. " if tier == PAPER_TIER else ""
    body = (
        ("" if tier == PAPER_TIER else tier_warning(tier))
        + f"<p>Measured in this run beside the value the paper reports; {compared}"
        "n/a: the run has no number (hover for the reason, or see the notes).</p>\n"
        f"{table_html(frame, spec)}\n<img alt=\"{html.escape(spec['name'])} against contamination ratio\" src=\"{plot}\">\n"
        f"{notes_html(frame)}\n{provenance_html(read_json(args.provenance))}"
    )
    with atomic_path(args.out_html) as temporary:
        temporary.write_text(page(title, body))


# ---- all tables, spectra --------------------------------------------------------------------


def run_all_tables(args) -> None:
    import pandas as pd

    if len(args.tables) != len(args.provenance):
        raise DataError(f"all-tables: {len(args.tables)} table CSVs but {len(args.provenance)} --provenance files")
    frames = [pd.read_csv(path, keep_default_na=False, na_values=[""]) for path in args.tables]
    write_table(pd.concat(frames, ignore_index=True)[TABLE_COLUMNS], args.out)
    sidecars = {}
    for path, sidecar in zip(args.tables, args.provenance):
        record = read_json(sidecar)
        sidecars[record["table"]] = dict(record, table_csv=str(path), table_csv_sha256=sha256_of_file(path))
    write_json({"tables": sidecars}, args.out_provenance)


# ---- generated examples, config -------------------------------------------------------------


def example_rows(index, count: int):
    """``count`` rows evenly spaced over the index (so over its classes, which come in order)."""
    import numpy as np

    if count < 1 or index.empty:
        return index.iloc[:0]
    positions = np.unique(np.linspace(0, len(index) - 1, min(count, len(index))).round().astype(int))
    return index.iloc[positions]


def thumbnail(data: bytes, size: int) -> bytes:
    """The image shrunk to ``size`` px on its longest side (never enlarged), as JPEG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = to_rgb8(image)
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def run_generated_examples(args) -> None:
    import pandas as pd

    index = pd.read_parquet(args.index)
    figures = []
    for row in example_rows(index, args.count).itertuples():
        image = data_uri(thumbnail(read_item(row.uri), args.thumbnail), "image/jpeg")
        figures.append(f"<figure><img alt=\"{html.escape(row.prompt)}\" src=\"{image}\">"
                       f"<figcaption>{html.escape(row.prompt)}<br><code>{html.escape(row.id)}</code></figcaption></figure>")
    body = (f"<p>{len(figures)} of the {len(index)} images of <code>{html.escape(args.name)}</code>, "
            f"evenly spaced over its index, each with the prompt it was generated from.</p>\n"
            f"<div class=\"grid\">{''.join(figures)}</div>")
    with atomic_path(args.out) as temporary:
        temporary.write_text(page(f"Generated examples: {args.name}", body))


def config_differences(paper: dict, run: dict) -> list:
    """[(setting, paper's value, run's value)] for every setting of ``run`` whose value is not
    ``paper``'s (both effective configs), in config order. Named list entries (mixtures, tables,
    generated datasets, references) are matched by name ("tables[table2]"); one only in the paper
    has the run value None, one only in the run the paper value None. Site paths, run-time keys,
    ``run``, ``planning`` and ``report`` change no result and are left out."""
    from contamination.config import RUNTIME_KEYS, same_json, user_paths

    ignored = {"run", "planning", "report", *user_paths(paper), *user_paths(run),
               *(f"{section}.{key}" for section, keys in RUNTIME_KEYS.items() for key in keys)}
    found = []

    def named(items):
        return all(isinstance(item, dict) and "name" in item for item in items)

    def compare(key, ours, theirs, dotted):
        if dotted in ignored or same_json(ours, theirs):
            return
        if isinstance(ours, dict) and isinstance(theirs, dict):
            for part in dict.fromkeys([*theirs, *ours]):
                compare(f"{key}.{part}" if key else part, ours.get(part), theirs.get(part),
                        f"{dotted}.{part}" if dotted else part)
        elif isinstance(ours, list) and isinstance(theirs, list) and ours and theirs and named(ours + theirs):
            by_name = {item["name"]: item for item in ours}
            paper_by_name = {item["name"]: item for item in theirs}
            for name in dict.fromkeys([*paper_by_name, *by_name]):
                compare(f"{key}[{name}]", by_name.get(name), paper_by_name.get(name), f"{dotted}[]")
        else:
            found.append((key, theirs, ours))

    compare("", run, paper, "")
    return found


def differences_html(config: dict, differences: list) -> str:
    def shown(value):
        if value is None:
            return "<em>absent</em>"
        return f"<code>{html.escape(json.dumps(value, ensure_ascii=False))}</code>"

    tier = config["tier"]
    lines = [f"<p>Tier <strong>{html.escape(tier)}</strong>. "
             + ("The tables are compared with the paper's numbers." if tier == PAPER_TIER else
                "The tables show the paper's numbers for the direction of each effect only: this run does not use "
                "the paper's settings, and no difference to the paper is computed.") + "</p>"]
    if config["report"]["differences"]:
        items = "".join(f"<li>{html.escape(text)}</li>" for text in config["report"]["differences"])
        lines.append(f"<h2>In words</h2><ul>{items}</ul>")
    if differences:
        rows = "".join(f"<tr><td><code>{html.escape(key)}</code></td><td>{shown(paper)}</td><td>{shown(ours)}</td></tr>"
                       for key, paper, ours in differences)
        lines.append("<h2>Every setting that differs from config/config.yaml</h2><p>Site paths, run-time settings, "
                     "the planning assumptions and the report's settings change no result and are not listed.</p>"
                     f"<table><thead><tr><th>setting</th><th>paper</th><th>this run</th></tr></thead><tbody>{rows}"
                     "</tbody></table>")
    else:
        lines.append("<p>Every setting that shapes a result is the paper's (config/config.yaml); only site paths "
                     "and run-time settings may differ.</p>")
    return "\n".join(lines)


def run_config_page(args) -> None:
    import yaml

    text = yaml.safe_dump(args.config, sort_keys=False, allow_unicode=True)
    with atomic_path(args.out_yaml) as temporary:
        temporary.write_text(text)
    body = (f"<p>The configuration this run used: config/config.yaml, the --configfile overlays, and the "
            f"schema's defaults. SHA-256 of its canonical JSON: <code>{sha256_of_json(args.config)}</code></p>\n"
            f"<pre>{html.escape(text)}</pre>")
    with atomic_path(args.out_html) as temporary:
        temporary.write_text(page(f"Configuration of run '{args.config['run']}'", body))
    paper = load(base=args.paper_config)
    with atomic_path(args.out_differences) as temporary:
        temporary.write_text(page(f"What differs from the paper: run '{args.config['run']}'",
                                  differences_html(args.config, config_differences(paper, args.config))))
