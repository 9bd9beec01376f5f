"""The `generators` target for real at tiny size: tiny SD, PixArt-Sigma pipelines built offline,
their SD-ImageNets, IN/<generator>-40% mixtures, ResNet-50 cells and DINOv2 fidelity, in the
tables' CSVs, report pages and plots, with nothing reported by the paper."""

import math

import pandas as pd
import pytest

from contamination import config as cfg
from contamination.generation.shards import read_metadata
from helpers import SMOKE_CONFIG, copy_checkout, snakemake, write_yaml

pytestmark = pytest.mark.workflow

# The smoke run's comparison cut to one generator, one fraction and DINOv2 features, with two
# denoising steps, ten images per class and one training epoch: the same jobs, a fraction of the time.
SMALL = {
    "generation": {"steps": 2},
    "generators": {"tiny_pixart": {"steps": 2}},
    "generator_comparison": {"generators": ["tiny_pixart"], "per_class": 10, "fractions": [0.4],
                             "fidelity_models": ["dinov2_features"]},
    "classification": {"models": {"resnet50": {"epochs": 1}}},
}


@pytest.fixture(scope="module")
def generators_run(tmp_path_factory):
    directory = copy_checkout(tmp_path_factory.mktemp("generators") / "checkout")
    smoke = cfg.read_config_file(SMOKE_CONFIG)
    small = dict(SMALL, generated=[dict(spec, per_class=10) if spec["name"] == "sd_imagenet" else spec
                                   for spec in smoke["generated"]])
    overlay = write_yaml(directory / "small.yaml", small)
    snakemake("--cores", "2", "generators", "--configfile", directory / "config" / "smoke.yaml", overlay,
              cwd=directory, snakefile=directory / "Snakefile")
    return directory / "results" / "smoke", cfg.load(SMOKE_CONFIG, overlay)


def test_the_generators_target_makes_every_table_of_the_group_with_its_page_and_plot(generators_run):
    results, config = generators_run
    names = [table["name"] for table in config["tables"] if table.get("group") == "generators"]
    assert names == ["generators_classify", "generators_dinov2"]
    for name in names:
        assert (results / "tables" / f"{name}.csv").is_file()
        assert (results / "report" / "tables" / f"{name}.html").is_file()
        assert (results / "figures" / f"{name}-vs-contamination.png").is_file()


def test_classify_rows_are_imagenet_the_papers_sd_and_the_generators_mixtures_measured(generators_run):
    results, _ = generators_run
    table = pd.read_csv(results / "tables" / "generators_classify.csv")
    rows = list(dict.fromkeys(table["dataset"]))
    assert rows == ["ImageNet", "IN/SD-40%", "SD-ImageNet", "IN/PixArt-40%", "PixArt-ImageNet"]
    assert set(table["metric"]) == {"top1_imagenet_val", "top1_imagenet_a", "top1_imagenet_r"}
    assert (table["status"] == "ok").all() and table["measured"].between(0, 100).all()  # percent
    # The paper has no generators table: every reported value is NaN, and the note says why.
    assert table["reported"].isna().all() and table["note"].str.contains("paper: not reported").all()


def test_dinov2_fidelity_measures_fd_precision_and_recall_of_every_row(generators_run):
    results, _ = generators_run
    table = pd.read_csv(results / "tables" / "generators_dinov2.csv")
    assert set(table["metric"]) == {"FD_DINOv2_vs_imagenet_val", "precision_vs_imagenet_val", "recall_vs_imagenet_val"}
    assert (table["status"] == "ok").all() and table["measured"].map(math.isfinite).all()
    fd = table[table["metric"] == "FD_DINOv2_vs_imagenet_val"].set_index("dataset")["measured"]
    assert fd["PixArt-ImageNet"] > fd["ImageNet"] >= 0  # random generators are far from real images


def test_the_generators_shards_record_their_generator(generators_run):
    results, _ = generators_run
    shards = sorted((results / "generated" / "tiny_pixart_imagenet").glob("shard-*.zip"))
    metadata = pd.concat([read_metadata(shard) for shard in shards])
    assert len(metadata) == 4 * 10 and metadata["id"].is_unique
    assert set(metadata["generator"]) == {"tiny_pixart"} and set(metadata["pipeline_class"]) == {"AutoPipelineForText2Image"}
    assert set(metadata["steps"]) == {2} and set(metadata["scheduler"]) == {"pipeline"}
