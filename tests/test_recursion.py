"""Recursive contamination: which rows each policy's generation trains on (sizes and origins), the
mixture command's array and origins, a generation after one that did not train, the table, its
plots and page, the config checks and the planner's prices."""

import hashlib
import math
import types

import numpy as np
import pandas as pd
import pytest

from contamination import config as cfg
from contamination.dag import Job
from contamination.errors import ConfigError, DataError
from contamination.experiments import iddpm, recursion
from contamination.io import read_json, write_json
from contamination.reporting import plan

N, M, FRACTION, SEED = 20, 12, 0.5, 3


def rows_of(policy, generation, real_size=N, sample_count=M, fraction=FRACTION, seed=SEED):
    sizes = {source: sample_count for source in recursion.source_generations(policy, generation)}
    return recursion.generation_rows(policy, generation, real_size, sizes, fraction, seed)


def counts(rows: dict) -> dict:
    return {origin: len(taken) for origin, taken in rows.items()}


def assert_valid_draw(rows: dict, real_size=N, sample_count=M):
    for origin, taken in rows.items():
        size = real_size if origin == recursion.REAL else sample_count
        assert np.all(np.diff(taken) > 0), f"{origin}: rows not ascending or repeated"
        assert len(taken) == 0 or (taken[0] >= 0 and taken[-1] < size)


@pytest.mark.parametrize("generation", [1, 2, 3])
def test_replace_trains_on_a_fresh_real_fraction_and_the_previous_generation(generation):
    rows = rows_of("replace", generation)
    assert counts(rows) == {"real": 10, f"generation-{generation - 1}": 10}
    assert_valid_draw(rows)
    # the real part is drawn afresh each generation
    assert not np.array_equal(rows["real"], rows_of("replace", generation + 1)["real"])
    assert counts(rows_of("replace", generation, sample_count=15, fraction=0.25)) == {"real": 5, f"generation-{generation - 1}": 15}


@pytest.mark.parametrize("generation", [1, 2, 3])
def test_accumulate_keeps_the_real_base_and_every_earlier_generation(generation):
    rows = rows_of("accumulate", generation)
    assert counts(rows) == {"real": N, **{f"generation-{j}": M for j in range(generation)}}
    assert sum(counts(rows).values()) == N + generation * M == recursion.mixture_size("accumulate", generation, N, M)
    for origin, taken in rows.items():
        assert np.array_equal(taken, np.arange(N if origin == "real" else M))


@pytest.mark.parametrize("generation", [1, 2, 3])
def test_accumulate_subsample_draws_the_base_size_from_everything_accumulated(generation):
    rows = rows_of("accumulate_subsample", generation)
    assert list(rows) == ["real", *[f"generation-{j}" for j in range(generation)]]
    assert sum(counts(rows).values()) == N == recursion.mixture_size("accumulate_subsample", generation, N, M)
    assert_valid_draw(rows)
    # uniform over the pool: over many seeds, the real share is N / (N + k M) on average
    shares = [len(rows_of("accumulate_subsample", generation, seed=seed)["real"]) / N for seed in range(300)]
    assert np.mean(shares) == pytest.approx(N / (N + generation * M), abs=0.03)


def test_replace_keeps_the_base_size():
    assert recursion.mixture_size("replace", 3, N, M) == N == sum(counts(rows_of("replace", 3)).values())


def test_rows_depend_on_the_config_only():
    for policy in recursion.POLICIES:
        again = rows_of(policy, 2)
        assert all(np.array_equal(taken, again[origin]) for origin, taken in rows_of(policy, 2).items())
    assert not np.array_equal(rows_of("replace", 2)["real"], rows_of("replace", 2, seed=SEED + 1)["real"])


def test_generations_draw_from_the_sources_of_their_policy():
    assert recursion.source_generations("replace", 3) == [2]
    assert recursion.source_generations("accumulate", 3) == [0, 1, 2]
    assert recursion.source_generations("accumulate_subsample", 1) == [0]
    with pytest.raises(ValueError, match="generation 0"):
        recursion.source_generations("replace", 0)
    assert recursion.run_name("accumulate", 0) == "real/generation-0"
    assert recursion.run_name("accumulate", 2) == "accumulate/generation-2"


def test_replace_with_too_few_samples_names_the_keys():
    with pytest.raises(DataError, match="recursion.sample_count"):
        rows_of("replace", 1, fraction=0.25)  # 15 samples needed, 12 made


# ---- the mixture command -------------------------------------------------------------------


def numbered_images(first: int, count: int, size: int = 4):
    """uint8 images whose first pixel holds their number (first .. first + count - 1)."""
    images = np.zeros((count, size, size, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(first, first + count)
    return images


def write_generation(directory, generation, status="ok", reason=""):
    """Samples of one generation in two shards (numbers 100 g + 0..11) and its training.json."""
    paths = []
    for shard, start in enumerate((0, 7)):
        paths.append(directory / f"g{generation}-shard-{shard}.npy")
        np.save(paths[-1], numbered_images(100 * generation + start, min(7, M - start)))
    write_json({"status": status, "reason": reason}, directory / f"g{generation}-training.json")
    return {"status": str(directory / f"g{generation}-training.json"), "samples": [str(path) for path in paths]}


def run_mixture(directory, policy, generation, sources):
    np.save(directory / "real.npy", numbered_images(0, N))
    out = {name: directory / f"{policy}-{generation}.{suffix}" for name, suffix in
           (("images", "npy"), ("origins", "parquet"), ("summary", "json"))}
    args = types.SimpleNamespace(
        spec={"policy": policy, "generation": generation, "seed": SEED, "real_fraction": FRACTION},
        real=str(directory / "real.npy"), sources=sources, out_images=str(out["images"]),
        out_origins=str(out["origins"]), out_summary=str(out["summary"]))
    recursion.run_mixture(args)
    return np.load(out["images"]), pd.read_parquet(out["origins"]), read_json(out["summary"])


@pytest.mark.parametrize("policy", recursion.POLICIES)
def test_mixture_command_writes_the_drawn_rows_with_their_origins(tmp_path, policy):
    sources = {str(j): write_generation(tmp_path, j) for j in recursion.source_generations(policy, 2)}
    images, origins, summary = run_mixture(tmp_path, policy, 2, sources)
    expected = rows_of(policy, 2)
    assert summary["status"] == "ok" and summary["counts"] == counts(expected)
    assert summary["total"] == len(images) == len(origins) == sum(counts(expected).values())
    assert list(origins["origin"]) == [origin for origin, taken in expected.items() for _ in taken]
    assert np.array_equal(origins["row"], np.concatenate(list(expected.values())))
    # every row is the image of its origin and row: real images are numbered 0..N-1, generation j's 100 j + row
    offsets = origins["origin"].map(lambda name: 0 if name == "real" else 100 * int(name.split("-")[1]))
    assert np.array_equal(images[:, 0, 0, 0], offsets + origins["row"])
    assert summary["images_sha256"] == hashlib.sha256(images.tobytes()).hexdigest()


def test_a_generation_after_one_that_did_not_train_trains_nothing_and_says_why(tmp_path):
    sources = {"0": write_generation(tmp_path, 0), "1": write_generation(tmp_path, 1, "diverged", "non-finite loss")}
    images, origins, summary = run_mixture(tmp_path, "accumulate", 2, sources)
    assert images.shape == (0, 4, 4, 3) and origins.empty
    assert summary["status"] == "not run" and "generation 1 did not train (diverged: non-finite loss)" in summary["reason"]
    spec = dict(cfg.with_defaults("iddpm", {}, iddpm.TRAIN_SPEC_KEYS), device="cpu", seed=0)
    train_args = types.SimpleNamespace(spec=spec, images=str(tmp_path / "accumulate-2.npy"),
                                       manifest=str(tmp_path / "accumulate-2.json"), data_status=str(tmp_path / "accumulate-2.json"),
                                       checkpoint_dir=str(tmp_path / "checkpoint"), out=str(tmp_path / "model"),
                                       status=str(tmp_path / "training.json"))
    iddpm.run_train(train_args)
    status = read_json(tmp_path / "training.json")
    assert status["status"] == "not run" and "generation 1 did not train" in status["reason"]
    assert list((tmp_path / "model").iterdir()) == []


def test_sources_other_than_the_policys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"draws from generations \[1\]"):
        run_mixture(tmp_path, "replace", 2, {"0": write_generation(tmp_path, 0)})


# ---- the table, plots and page ---------------------------------------------------------------

METRICS = ["FID_vs_imagenet64_val", "precision@5_vs_imagenet64_val"]


def test_table_has_every_policy_and_generation_with_its_data_and_reasons(tmp_path):
    cells = {}
    write_json({"total": N}, tmp_path / "base.json")
    write_json({"status": "ok", "metrics": {METRICS[0]: 30.0, METRICS[1]: 0.5}, "reasons": {}, "provenance": {}},
               tmp_path / "g0.json")
    for policy in ("replace", "accumulate"):
        cells[f"{policy}|0"] = {"metrics": str(tmp_path / "g0.json"), "mixture": str(tmp_path / "base.json")}
        for generation in (1, 2):
            metrics, summary = tmp_path / f"{policy}{generation}.json", tmp_path / f"{policy}{generation}-mixture.json"
            drawn = counts(rows_of(policy, generation))
            write_json({"status": "ok", "reason": "", "total": sum(drawn.values()), "counts": drawn}, summary)
            write_json({"status": "ok", "metrics": {METRICS[0]: 30.0 + generation, METRICS[1]: None},
                        "reasons": {METRICS[1]: "too few samples"}, "provenance": {}}, metrics)
            cells[f"{policy}|{generation}"] = {"metrics": str(metrics), "mixture": str(summary)}
    write_json({"status": "not run", "reason": "generation 1 did not train (diverged: nan)", "total": 0, "counts": {}},
               tmp_path / "accumulate2-mixture.json")
    write_json({"status": "not run", "metrics": {name: None for name in METRICS},
                "reasons": {name: "the model did not train" for name in METRICS}, "provenance": {}},
               tmp_path / "accumulate2.json")
    spec = {"policies": ["replace", "accumulate"], "generations": 2, "metrics": METRICS}
    frame = recursion.build_table(spec, cells)
    assert list(frame.columns) == recursion.TABLE_COLUMNS
    assert len(frame) == 2 * 3 * (len(METRICS) + 2)
    cell = frame.set_index(["policy", "generation", "metric"])
    assert cell.loc[("replace", 0, METRICS[0]), "measured"] == cell.loc[("accumulate", 0, METRICS[0]), "measured"] == 30.0
    assert cell.loc[("replace", 2, METRICS[0]), "measured"] == 32.0
    assert cell.loc[("replace", 2, "real_share"), "measured"] == 0.5
    assert cell.loc[("accumulate", 1, "training_images"), "measured"] == N + M
    assert cell.loc[("accumulate", 1, "real_share"), "measured"] == N / (N + M)
    assert cell.loc[("replace", 0, "real_share"), "measured"] == 1.0
    missing = cell.loc[("replace", 1, METRICS[1])]
    assert math.isnan(missing["measured"]) and missing["status"] == "unavailable" and missing["note"] == "too few samples"
    failed = cell.loc[("accumulate", 2, "training_images")]
    assert math.isnan(failed["measured"]) and failed["status"] == "not run" and "did not train" in failed["note"]

    table = tmp_path / "recursion.csv"
    recursion.run_table(types.SimpleNamespace(spec=spec, cells=cells, out=str(table),
                                              provenance=str(tmp_path / "provenance.json")))
    provenance = read_json(tmp_path / "provenance.json")
    assert provenance["table"] == "recursion" and set(provenance["cells"]) == set(cells)
    plots = []
    for policy in spec["policies"]:
        plots.append(str(tmp_path / f"{policy}.png"))
        recursion.run_plot(types.SimpleNamespace(table=str(table), policy=policy, out=plots[-1]))
        assert open(plots[-1], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    recursion.run_report(types.SimpleNamespace(table=str(table), provenance=str(tmp_path / "provenance.json"),
                                               plots=plots, out=str(tmp_path / "recursion.html")))
    page = (tmp_path / "recursion.html").read_text()
    assert page.count("<img") == 2 and "generation 1 did not train" in page and "<td>accumulate</td><td>2</td>" in page


# ---- config and planner ----------------------------------------------------------------------


def paper_with(**recursion_settings) -> dict:
    """The paper config with the recursion a site would turn on (3 generations), and these settings."""
    config = cfg.load()
    config["recursion"].update({"generations": 3, **recursion_settings})
    return config


def test_the_base_must_be_a_real_mixture():
    with pytest.raises(ConfigError, match="recursion.base: unknown mixture 'imagenet_2'.*imagenet_20"):
        cfg.check(paper_with(base="imagenet_2"))
    with pytest.raises(ConfigError, match="recursion.base: mixture 'in_sd_20' is not real data"):
        cfg.check(paper_with(base="in_sd_20"))
    cfg.check(paper_with(base="in_sd_20", generations=0))  # no recursion: nothing to check


def test_recursion_is_a_reserved_table_name():
    config = cfg.load()
    config["tables"][0]["name"] = "recursion"
    with pytest.raises(ConfigError, match="reserved"):
        cfg.check(config)


def test_planner_prices_every_recursion_job_by_its_generation():
    config = cfg.load()
    costs = plan.Costs(config, plan.read_profile(plan.DEFAULT_PROFILE))
    settings, throughput = config["iddpm"], config["planning"]["throughput"]
    real = costs.mixture_size(config["recursion"]["base"])[0]
    count = config["recursion"]["sample_count"]
    for generation in (1, 3):
        hours, note = costs.gpu_hours(Job.of("recursion_train", policy="accumulate", generation=str(generation)))
        assert note == "" and hours == pytest.approx(settings["iterations"] * settings["global_batch_size"]
                                                     / throughput["iddpm_train"] / 3600)
        assert costs.storage_bytes(Job.of("recursion_mixture", policy="accumulate", generation=str(generation))) == \
            (real + generation * count) * settings["image_size"] ** 2 * 3
        assert costs.storage_bytes(Job.of("recursion_mixture", policy="replace", generation=str(generation))) == real * settings["image_size"] ** 2 * 3
    shards = recursion.sample_shard_count(config)
    sampled = sum(costs.gpu_hours(Job.of("recursion_sample", policy="replace", generation=str(1), shard=f"{shard:05d}"))[0] for shard in range(shards))
    assert sampled == pytest.approx(count * settings["sample_steps"] / throughput["iddpm_sample"] / 3600)
    assert costs.gpu_hours(Job.of("recursion_sample_features", policy="replace", generation=str(1)))[0] == \
        pytest.approx(count / throughput["inception_features"] / 3600)
    assert costs.gpu_hours(Job.of("recursion_fidelity", policy="replace", generation=str(1))) == (config["planning"]["job_hours"]["recursion_fidelity"], "")
