"""The report: table pages and plots, all tables in one CSV, Figure 6, generated examples, the run
config, provenance; and the Snakemake HTML report of a small smoke target, opened in a real
headless chromium (tests/browser.py), loads without errors and shows the tables."""

import base64
import hashlib
from html import escape as html_escape
import io
import json
import math
import re

import pandas as pd
import pytest
import yaml
from PIL import Image

import browser
from contamination import config as cfg
from contamination import records
from contamination.reporting import report
from contamination.reporting import tables
from contamination.errors import DataError
from helpers import BUDGET_CONFIG, SMOKE_CONFIG, cli, snakemake, write_yaml

PAPER = cfg.load()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def paper_table(name):
    return next(table for table in PAPER["tables"] if table["name"] == name)


def positions_by_dataset(name):
    positions = report.contamination_positions(paper_table(name), PAPER["mixtures"])
    found = {}
    for position in positions:
        found.setdefault(position["dataset"], set()).add((position["series"], position["ratio"]))
    return found


# ---- contamination ratio --------------------------------------------------------------------


def test_table1_rows_sit_at_their_share_of_generated_or_webvision_images():
    found = positions_by_dataset("table1")
    assert found["IN/SD-40%"] == {("sd_imagenet", 0.4)}
    assert found["IN/WV-80%"] == {("webvision", 0.8)}
    assert found["SD-ImageNet"] == {("sd_imagenet", 1.0)}
    assert found["WebVision"] == {("webvision", 1.0)}
    # the clean set starts every series
    assert found["ImageNet"] == {("sd_imagenet", 0.0), ("webvision", 0.0)}


def test_appended_images_count_as_their_share_of_the_larger_set():
    found = positions_by_dataset("table8")
    ((series, ratio),) = found["ImageNet (100%) + SD-ImageNet (20%)"]
    assert series == "sd_imagenet" and ratio == pytest.approx(0.2 / 1.2)
    assert found["ImageNet (100%)"] == {("sd_imagenet", 0.0)}


def test_rows_that_are_not_mixtures_stay_out_of_the_plot():
    found = positions_by_dataset("table2")
    assert "w/o fine-tuning" not in found
    assert found["CO/FL-40%"] == {("flickr30k", 0.4)}
    assert found["COCO"] == {("sd_coco", 0.0), ("flickr30k", 0.0)}


def test_subsets_only_table_uses_the_real_source_as_clean_base():
    found = positions_by_dataset("table4")
    assert found["ImageNet"] == {("sd_imagenet", 0.0), ("sd_imagenet_complex", 0.0)}
    assert found["Complex SD-ImageNet"] == {("sd_imagenet_complex", 1.0)}


# ---- table pages, all tables ----------------------------------------------------------------

SPEC = {
    "name": "table1",
    "reported_table": "1",
    "experiment": "classify",
    "models": ["resnet50", "swin_s"],
    "metrics": ["top1_imagenet_val"],
    "rows": [{"dataset": "ImageNet", "mixture": "imagenet"}, {"dataset": "IN/SD-40%", "mixture": "in_sd_40"},
             {"dataset": "SD-ImageNet", "mixture": "sd_imagenet"}],
}


def write_run(path, value, reason=None, models=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"config_sha256": "ab" * 32, "seed": 0, "packages": {"torch": "x"}}
    if models is not None:
        record["models"] = models
    run = {"status": "ok" if value is not None else "diverged", "metrics": {"top1_imagenet_val": value},
           "reasons": {"top1_imagenet_val": reason} if reason else {}, "provenance": record}
    path.write_text(json.dumps(run))
    return str(path)


def table_files(tmp_path, spec=SPEC):
    """A table CSV and its sidecar made by the `table` command from fake runs."""
    cells = {}
    for index, row in enumerate(spec["rows"]):
        for model in spec["models"]:
            value = None if (row["dataset"], model) == ("SD-ImageNet", "swin_s") else 50.0 + index + len(model)
            reason = "loss became inf at epoch 3" if value is None else None
            models = {} if model == "resnet50" else None  # swin_s runs did not record their models
            cells[f"{row['dataset']}|{model}"] = write_run(tmp_path / "runs" / spec["name"] / f"{index}-{model}.json",
                                                           value, reason, models)
    csv, sidecar = tmp_path / "tables" / f"{spec['name']}.csv", tmp_path / "tables" / f"{spec['name']}.provenance.json"
    cli("table", "--spec", json.dumps(spec), "--cells", json.dumps(cells), "--out", csv, "--provenance", sidecar)
    return csv, sidecar, cells


def test_table_sidecar_records_each_cells_run_and_what_it_lacks(tmp_path):
    csv, sidecar, cells = table_files(tmp_path)
    record = json.loads(sidecar.read_text())
    cell = record["cells"]["IN/SD-40%|resnet50"]
    assert cell["metrics_sha256"] == hashlib.sha256(open(cells["IN/SD-40%|resnet50"], "rb").read()).hexdigest()
    assert cell["provenance"]["seed"] == 0 and cell["status"] == "ok"
    assert record["spec_sha256"] == records.sha256_of_json(SPEC)
    assert record["incomplete"] == {f"{row['dataset']}|swin_s": ["models"] for row in SPEC["rows"]}


def table_page(tmp_path, spec=SPEC):
    csv, sidecar, _ = table_files(tmp_path, spec)
    html, png = tmp_path / "page.html", tmp_path / "plot.png"
    cli("table-report", "--spec", json.dumps(spec), "--mixtures", json.dumps(PAPER["mixtures"]), "--table", csv,
        "--provenance", sidecar, "--out-html", html, "--out-png", png)
    return csv, html, png


def test_table_page_shows_measured_beside_reported_with_the_plot_and_reasons(tmp_path):
    csv, html, png = table_page(tmp_path)
    text = html.read_text()
    frame = pd.read_csv(csv)
    for row in frame.itertuples():
        assert report.number(row.reported) in text
        if not math.isnan(row.measured):
            assert f">{report.number(row.measured)}<br>" in text
    assert "loss became inf at epoch 3" in text and "n/a" in text
    plot = re.search(r'src="data:image/png;base64,([^"]+)"', text).group(1)
    assert base64.b64decode(plot) == png.read_bytes() and png.read_bytes().startswith(PNG_SIGNATURE)
    assert text.count("<tr><td>") >= len(SPEC["rows"])


def test_a_budget_tier_page_says_it_is_not_the_papers_setting_and_shows_no_difference(tmp_path):
    _, paper_html, _ = table_page(tmp_path / "paper")
    csv, html, _ = table_page(tmp_path / "budget", dict(SPEC, tier="budget"))
    text = html.read_text()
    assert "Tier budget: not the paper's settings" in text
    assert html_escape("table1: the paper's Table 1 (classify), budget tier") in text
    assert "&Delta;" not in text and "&Delta;" in paper_html.read_text()
    assert "Tier " not in paper_html.read_text()
    assert all(f"paper {report.number(value)}" in text for value in pd.read_csv(csv)["reported"])


def test_table_page_and_plot_are_byte_reproducible(tmp_path):
    _, first_html, first_png = table_page(tmp_path / "a")
    _, second_html, second_png = table_page(tmp_path / "b")
    assert first_png.read_bytes() == second_png.read_bytes()
    # the pages differ only in the paths of the runs they name
    assert first_html.read_text().replace(str(tmp_path / "a"), "") == second_html.read_text().replace(str(tmp_path / "b"), "")


def test_all_tables_concatenates_every_table_with_its_provenance(tmp_path):
    first, first_sidecar, _ = table_files(tmp_path)
    other_spec = dict(SPEC, name="table5", reported_table="5", rows=SPEC["rows"][2:])
    second, second_sidecar, _ = table_files(tmp_path, other_spec)
    out, out_provenance = tmp_path / "all_tables.csv", tmp_path / "all_tables.provenance.json"
    cli("all-tables", "--tables", first, second, "--provenance", first_sidecar, second_sidecar,
        "--out", out, "--out-provenance", out_provenance)
    combined = pd.read_csv(out)
    assert list(combined.columns) == tables.TABLE_COLUMNS
    assert combined["table"].tolist() == ["table1"] * 6 + ["table5"] * 2
    pd.testing.assert_frame_equal(combined.iloc[6:].reset_index(drop=True), pd.read_csv(second))
    record = json.loads(out_provenance.read_text())["tables"]
    assert record["table5"]["table_csv_sha256"] == records.sha256_of_file(second)
    assert set(record["table1"]["cells"]) == {f"{r['dataset']}|{m}" for r in SPEC["rows"] for m in SPEC["models"]}


def test_all_tables_needs_one_sidecar_per_table(tmp_path):
    first, sidecar, _ = table_files(tmp_path)
    result = cli("all-tables", "--tables", first, first, "--provenance", sidecar, "--out", tmp_path / "x.csv",
                 "--out-provenance", tmp_path / "x.json", check=False)
    assert result.returncode == 2 and "2 table CSVs but 1 --provenance files" in result.stderr


# ---- spectra, examples, config --------------------------------------------------------------


def spectra_csv(path, generated, offset):
    rows = []
    for dataset, shift in (("imagenet", 0.0), (generated, offset)):
        for radius in range(3):
            rows.append({"dataset": dataset, "radius": radius, "frequency": radius / 4,
                         "mean_log10_power": -radius + shift, "std_log10_power": 0.1, "images": 4})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_spectra_table_keeps_the_real_source_once_and_draws_figure6(tmp_path):
    first = spectra_csv(tmp_path / "a.csv", "sd_imagenet", 0.5)
    second = spectra_csv(tmp_path / "b.csv", "sd_imagenet_complex", 0.7)
    out, png = tmp_path / "spectra.csv", tmp_path / "figure6.png"
    cli("spectra-table", "--spectra", first, second, "--out-csv", out, "--out-png", png)
    table = pd.read_csv(out)
    assert table.groupby("dataset").size().to_dict() == {"imagenet": 3, "sd_imagenet": 3, "sd_imagenet_complex": 3}
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def write_generated(tmp_path, prompts):
    from contamination.formats import shard_uri
    from contamination.generation.shards import write_shard

    shard = tmp_path / "shard-00000.zip"
    images = []
    for number in range(len(prompts)):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 20), (number * 40, 0, 0)).save(buffer, format="PNG")
        images.append((f"img{number}.png", buffer.getvalue()))
    write_shard(shard, images, pd.DataFrame({"member": [member for member, _ in images]}))
    index = pd.DataFrame({"id": [f"img{n}" for n in range(len(prompts))], "prompt": prompts,
                          "uri": [shard_uri(shard, member) for member, _ in images]})
    index.to_parquet(tmp_path / "index.parquet")
    return tmp_path / "index.parquet"


def test_generated_examples_show_evenly_spaced_images_with_their_prompts(tmp_path):
    prompts = [f"A photo of class {n}" for n in range(9)] + ["a <b>bold</b> & odd prompt"]
    out = tmp_path / "examples.html"
    cli("generated-examples", "--index", write_generated(tmp_path, prompts), "--name", "sd_imagenet",
        "--count", "4", "--thumbnail", "16", "--out", out)
    text = out.read_text()
    assert text.count("<figure>") == 4
    for shown in ("img0", "img3", "img6", "img9"):  # rows 0, 3, 6, 9 of 10
        assert f"<code>{shown}</code>" in text
    assert "a &lt;b&gt;bold&lt;/b&gt; &amp; odd prompt" in text and "<b>bold</b>" not in text
    first = re.search(r'src="data:image/jpeg;base64,([^"]+)"', text).group(1)
    with Image.open(io.BytesIO(base64.b64decode(first))) as image:
        assert image.size == (16, 8)  # shrunk to 16 px on its longest side, aspect kept


def run_config(tmp_path, config):
    out_yaml, out_html, out_differences = tmp_path / "config.yaml", tmp_path / "config.html", tmp_path / "diff.html"
    cli("run-config", "--config", json.dumps(config), "--paper-config", cfg.DEFAULT_CONFIG, "--out-yaml", out_yaml,
        "--out-html", out_html, "--out-differences", out_differences)
    return out_yaml, out_html, out_differences


def test_run_config_writes_the_effective_config_and_its_hash(tmp_path):
    smoke = cfg.load(SMOKE_CONFIG)
    out_yaml, out_html, _ = run_config(tmp_path, smoke)
    assert yaml.safe_load(out_yaml.read_text()) == smoke
    assert records.sha256_of_json(smoke) in out_html.read_text()
    # loaded as an overlay, the written config is the same config again
    assert cfg.load(out_yaml) == smoke


def test_differences_list_every_setting_that_shapes_results_and_nothing_else():
    budget = cfg.load(BUDGET_CONFIG)
    found = {key: (paper, ours) for key, paper, ours in report.config_differences(PAPER, budget)}
    assert found["tier"] == ("paper", "budget")
    assert found["sources.imagenet.classes"] == ("all", "imagenet100")
    assert found["generation.dtype"] == ("float32", "float16") and found["generation.compile"] == (False, True)
    assert found["generated[sd_imagenet].per_class"] == (1400, 1300)
    assert found["tables[table1].models"] == (["resnet50", "swin_s", "convnext_tiny"], ["resnet50"])
    assert found["tables[table2]"][1] is None and found["mixtures[coco]"][1] is None  # left out
    assert found["classification.models.resnet50.train_crop_size"] == (224, 160)
    # site paths, run-time keys, the run's name, planning and the report's settings change no result
    site = dict(budget, run="elsewhere", planning={}, report=dict(budget["report"], examples=3))
    site["sources"] = dict(budget["sources"], imagenet=dict(budget["sources"]["imagenet"], root="/data/in"))
    site["generation"] = dict(budget["generation"], batch_size=64)
    assert report.config_differences(budget, site) == []
    assert report.config_differences(PAPER, PAPER) == []


def test_the_differences_page_names_the_tier_its_words_and_every_difference(tmp_path):
    budget = cfg.load(BUDGET_CONFIG)
    _, _, page = run_config(tmp_path / "budget", budget)
    text = page.read_text()
    assert "Tier <strong>budget</strong>" in text and "no difference to the paper is computed" in text
    assert all(html_escape(words) in text for words in budget["report"]["differences"])
    assert "<code>sources.imagenet.classes</code></td><td><code>&quot;all&quot;</code></td><td><code>" \
           "&quot;imagenet100&quot;</code>" in text
    _, _, paper_page = run_config(tmp_path / "paper", PAPER)
    assert "Every setting that shapes a result is the paper's" in paper_page.read_text()


# ---- the Snakemake report in a browser ------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    browser.CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)"
)

# A smoke run cut down to one table: detection (the cheapest experiment: one generated dataset).
FAST = {
    "generation": {"steps": 2},
    "generated": [
        {"name": "sd_imagenet", "prompts": "class_template", "source": "imagenet", "per_class": 4,
         "template": "A photo of {name}"},
        {"name": "sd_imagenet_complex", "prompts": "class_complex", "source": "imagenet", "per_class": 4},
        {"name": "sd_coco", "prompts": "captions", "source": "coco", "captions_per_image": 5},
    ],
    "detection": {"images_per_source": 12, "test_images_per_source": 4, "iterations": 20, "batch_size": 8},
    "spectra": {"images_per_source": 8},
    "report": {"examples": 6, "thumbnail_size": 64},
}
RUN = "results/smoke"
TARGETS = [f"{RUN}/report/tables/detection.html", f"{RUN}/report/examples/sd_imagenet.html",
           f"{RUN}/report/config.html", f"{RUN}/tables/spectra.csv", f"{RUN}/plan.csv"]


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    overlay = write_yaml(directory / "fast.yaml", FAST)
    # as `make smoke` does: the run, then the report
    snakemake("--cores", "2", *TARGETS, "--report", f"{RUN}/report.html", "--report-after-run",
              "--configfile", SMOKE_CONFIG, overlay, cwd=directory)
    return directory


@pytest.mark.workflow
def test_report_pieces_are_outputs_of_the_run(smoke_report):
    run = smoke_report / RUN
    sidecar = json.loads((run / "tables" / "detection.provenance.json").read_text())
    assert set(sidecar["cells"]) == {"ImageNet vs SD-ImageNet|linear_on_resnet50_features",
                                     "ImageNet vs SD-ImageNet|mlp_on_resnet50_features"}
    assert (run / "figures" / "figure6.png").read_bytes().startswith(PNG_SIGNATURE)
    assert yaml.safe_load((run / "config.yaml").read_text())["report"] == dict(FAST["report"], differences=[])
    differences = (run / "report" / "differences.html").read_text()  # the smoke run's own changes, tier paper
    assert "Tier <strong>paper</strong>" in differences and "<code>models.build_tiny</code>" in differences
    config = cfg.load(SMOKE_CONFIG, smoke_report / "fast.yaml")
    plan = pd.read_csv(run / "plan.csv")
    shards = plan.loc[(plan["scope"] == "all") & (plan["rule"] == "generate_shard"), "jobs"].item()
    # FAST's three datasets (1 + 1 + 8 shards) and those the smoke config's generator comparison adds
    assert shards == sum(cfg.shard_count(config, spec["name"]) for spec in config["generated"]) > 1 + 1 + 8


@needs_chromium
@pytest.mark.workflow
def test_report_opens_in_chromium_without_errors_and_shows_the_tables(smoke_report):
    run = smoke_report / RUN
    table = pd.read_csv(run / "tables" / "detection.csv")
    examples = pd.read_parquet(run / "generated" / "sd_imagenet" / "index.parquet")
    page = browser.Browser()
    try:
        page.open((run / "report.html").resolve().as_uri(), settle=4)
        menu = page.evaluate("document.querySelector('nav').innerText")
        for category in ("Tables", "Plots", "Figures", "Generated images", "Configuration", "Planning"):
            assert category in menu

        def show(category, label):
            """From the menu (the breadcrumb's home link, when there is one), click a category,
            then the eye button of the result labelled `label`; the text the result shows."""
            page.evaluate("document.querySelector('nav ol li a') && document.querySelector('nav ol li a').click()")
            page.pump(1)
            page.evaluate(f"[...document.querySelectorAll('nav span')].find(e => e.textContent.trim() === '{category}').click()")
            page.pump(1)
            page.evaluate("[...document.querySelectorAll('nav table tbody tr')]"
                          f".find(row => row.cells[0].textContent.trim() === '{label}').querySelector('[iconname=eye]').click()")
            page.pump(2)
            (shown,) = page.in_frames("document.body.innerText").values()
            return shown

        shown = show("Tables", "detection")
        for row in table.itertuples():
            assert row.model in shown and report.number(row.measured) in shown and report.number(row.reported) in shown
        (rows,) = page.in_frames("document.querySelectorAll('table.results tbody tr').length").values()
        (plots,) = page.in_frames("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length").values()
        assert rows == 1 and plots == 1

        shown = show("Generated images", "sd_imagenet")
        assert examples["prompt"].iloc[0] in shown
        (images,) = page.in_frames("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length").values()
        assert images == FAST["report"]["examples"]
        assert page.errors == []
    finally:
        page.close()
