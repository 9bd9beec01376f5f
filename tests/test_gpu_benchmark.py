"""benchmarks/gpu.py on its CPU path (the smoke run's tiny models, one timed call each): it writes
a row per Stable Diffusion variant and per recipe's model, each planning key measured once, and
`plan --throughput` prices the rules those keys price with the measured values, says which are
measured and from which file, and names the file when a row is wrong. No timing is asserted."""

import copy
import json
import os
import subprocess
import sys

import pytest

from contamination import config as cfg
from contamination.errors import ConfigError
from contamination.reporting import plan
from helpers import PROJECT, SMOKE_CONFIG, cli, environment

SMOKE = cfg.load(SMOKE_CONFIG)
PROFILE = plan.read_profile(plan.DEFAULT_PROFILE)
MEASURED_KEYS = {"generate", *(f"train_classifier.{name}" for name in SMOKE["classification"]["models"]),
                 "caption_train", "caption_generate", "iddpm_train", "iddpm_sample", "mae_pretrain", "mae_linear_probe"}


def gpu_benchmark(*arguments, **variables):
    env = dict(environment(), OMP_NUM_THREADS="1", **variables,
               PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT), str(PROJECT / "src"), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", *map(str, arguments)], cwd=PROJECT, env=env,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def result_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "cpu-tiny.json"
    run = gpu_benchmark("--device", "cpu", "--tiny", "--no-compile", "--out", out)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def test_without_a_gpu_the_default_device_is_an_error_that_says_what_to_do(tmp_path):
    # No visible CUDA device, also on a machine that has one.
    run = gpu_benchmark("--out", tmp_path / "none.json", CUDA_VISIBLE_DEVICES="")
    assert run.returncode == 2 and "no GPU here" in run.stderr and "--device cpu --tiny" in run.stderr
    assert not (tmp_path / "none.json").exists()


@pytest.fixture(scope="module")
def result(result_path):
    return json.loads(result_path.read_text())


def rows_by_case(result):
    return {row["case"]: row for row in result["rows"]}


def test_result_names_the_machine_settings_and_every_variant(result):
    assert result["machine"]["versions"]["torch"] and result["device"] == "cpu"
    assert result["settings"]["tiny"] is True and result["settings"]["device"] == "cpu"
    sd = [row for row in result["rows"] if row.get("variant")]
    batch = SMOKE["generation"]["batch_size"]
    at_config_batch = {row["variant"]: row for row in sd if row["batch"] == batch}
    assert set(at_config_batch) == {"fp32", "tf32", "fp16", "bf16", "bf16 channels-last", "bf16 compile"}
    assert {row["batch"] for row in sd} > {batch}  # batch sizes beyond the config's
    assert at_config_batch["bf16 compile"]["status"] == "skipped" and at_config_batch["bf16 compile"]["ours"] is None
    assert at_config_batch["fp16"]["status"] == "skipped"  # no float16 convolutions on a CPU
    fp32 = at_config_batch["fp32"]
    reference = SMOKE["planning"]["generate_reference"]
    assert fp32["status"] == "ok" and fp32["steps"] == reference["steps"]
    # one image: steps UNet steps of its batch (2 x batch latents with guidance) and one VAE decode
    expected = batch / (fp32["steps"] / fp32["unet_steps_per_second"] + 1 / fp32["vae_decodes_per_second"])
    assert fp32["ours"] == pytest.approx(expected) and fp32["ours_peak_mib"] > 0
    assert at_config_batch["bf16"]["baseline"] == pytest.approx(fp32["ours"])  # compared with fp32 at its batch


def test_each_planning_key_is_measured_once_at_the_recipes_per_gpu_batch(result):
    keyed = [row for row in result["rows"] if row.get("planning_key")]
    assert sorted(row["planning_key"] for row in keyed) == sorted(MEASURED_KEYS)
    for row in keyed:
        assert row["status"] == "ok" and row["ours"] > 0, row
    by_key = {row["planning_key"]: row for row in keyed}
    assert by_key["generate"]["variant"] == "fp32"  # the config's generation settings: fp32, no options
    resnet = SMOKE["classification"]["models"]["resnet50"]
    gpus = PROFILE["set-resources"]["train_classifier"]["gpu"]
    assert by_key["train_classifier.resnet50"]["batch"] == resnet["global_batch_size"] // gpus
    assert by_key["iddpm_sample"]["batch"] == SMOKE["iddpm"]["sample_batch_size"]
    assert by_key["mae_pretrain"]["baseline"] == SMOKE["planning"]["throughput"]["mae_pretrain"]


@pytest.fixture(scope="module")
def smoke_dag(tmp_path_factory):
    import contextlib

    with contextlib.chdir(tmp_path_factory.mktemp("dag")):
        return plan.workflow_jobs(SMOKE)


def test_plan_prices_the_measured_rules_with_the_measured_values(result_path, smoke_dag):
    measurements = plan.read_measured_throughput(result_path, SMOKE)
    assert set(measurements["measured"]) == MEASURED_KEYS and measurements["tiny"]
    measured = plan.with_measured_throughput(SMOKE, measurements["measured"])
    assumed_frame = plan.build_plan(SMOKE, PROFILE, smoke_dag)
    measured_frame = plan.build_plan(measured, PROFILE, smoke_dag)

    def hours(frame, rule):
        return frame[(frame["scope"] == "all") & (frame["rule"] == rule)]["gpu_hours"].iloc[0]

    throughput = SMOKE["planning"]["throughput"]
    for rule, key in [("iddpm_train", "iddpm_train"), ("iddpm_sample", "iddpm_sample"),
                      ("mae_pretrain", "mae_pretrain"), ("generate_shard", "generate")]:
        ratio = throughput[key] / measurements["measured"][key]
        assert hours(measured_frame, rule) == pytest.approx(hours(assumed_frame, rule) * ratio), rule
    for rule in ("train_classifier", "caption_finetune", "mae_linear_probe"):
        assert hours(measured_frame, rule) != pytest.approx(hours(assumed_frame, rule)), rule
    for rule in ("index_features", "mixture_features", "detect"):  # still assumed
        assert hours(measured_frame, rule) == hours(assumed_frame, rule), rule
    assert SMOKE["planning"]["throughput"]["generate"] == throughput["generate"]  # the config is not changed


def test_plan_output_says_which_throughputs_are_measured_and_from_which_file(result_path, tmp_path):
    output = cli("plan", "--configfile", SMOKE_CONFIG, "--throughput", result_path, cwd=tmp_path).stdout
    assert f"throughputs measured on cpu, from {result_path} (--tiny" in output
    lines = output.splitlines()
    measured = {line.split()[0] for line in lines if line.startswith("  ") and " = " in line}
    assert measured == MEASURED_KEYS
    assumed = next(line for line in lines if line.startswith("throughputs assumed"))
    assert "inception_features" in assumed and "iddpm_train" not in assumed
    without = cli("plan", "--configfile", SMOKE_CONFIG, cwd=tmp_path).stdout
    assert "throughputs measured" not in without and "iddpm_train" in without


def rewritten(result, path, change):
    changed = copy.deepcopy(result)
    change(changed)
    path.write_text(json.dumps(changed))
    return path


def keyed_row(result, key):
    return next(row for row in result["rows"] if row.get("planning_key") == key)


def test_an_unknown_planning_key_is_an_error_naming_the_file(result, tmp_path):
    bad = rewritten(result, tmp_path / "bad.json",
                    lambda changed: keyed_row(changed, "train_classifier.resnet50").update(
                        planning_key="train_classifier.vgg16"))
    run = cli("plan", "--configfile", SMOKE_CONFIG, "--throughput", bad, cwd=tmp_path, check=False)
    assert run.returncode == 2
    assert f"--throughput '{bad}'" in run.stderr and "planning.throughput.train_classifier.vgg16" in run.stderr


@pytest.mark.parametrize("change, message", [
    (lambda changed: keyed_row(changed, "iddpm_train").update(ours=0.0), "a throughput is a positive number"),
    (lambda changed: keyed_row(changed, "iddpm_sample").update(planning_key="iddpm_train"), "more than one row"),
    (lambda changed: changed.pop("rows"), "no list of rows"),
])
def test_a_bad_row_is_an_error_naming_the_file(result, tmp_path, change, message):
    path = rewritten(result, tmp_path / "bad.json", change)
    with pytest.raises(ConfigError, match=message) as error:
        plan.read_measured_throughput(path, SMOKE)
    assert str(path) in str(error.value)
    with pytest.raises(ConfigError, match="no such file"):
        plan.read_measured_throughput(tmp_path / "missing.json", SMOKE)


def test_a_row_that_failed_leaves_its_key_assumed_with_the_reason(result, tmp_path):
    path = rewritten(result, tmp_path / "oom.json", lambda changed: keyed_row(changed, "mae_pretrain").update(
        status="out of memory", ours=None, note="OutOfMemoryError: CUDA out of memory"))
    measurements = plan.read_measured_throughput(path, SMOKE)
    assert "mae_pretrain" not in measurements["measured"]
    measured = plan.with_measured_throughput(SMOKE, measurements["measured"])
    assert measured["planning"]["throughput"]["mae_pretrain"] == SMOKE["planning"]["throughput"]["mae_pretrain"]
    sources = plan.throughput_sources(SMOKE, measurements, path)
    assert "mae_pretrain (measurement out of memory: OutOfMemoryError: CUDA out of memory)" in sources
    assert set(measurements["measured"]) == MEASURED_KEYS - {"mae_pretrain"}
