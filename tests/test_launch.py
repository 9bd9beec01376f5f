"""One process per GPU, on one node or several: the launch command and the profile's layout."""

import shutil
import sys

import pytest

from contamination.errors import ConfigError
from contamination.launch import launch_command
from slurm.profile import production_profile

VERB = ["train-classifier", "--spec", "{}"]


def test_one_process_runs_the_verb_directly():
    assert launch_command(1, 1, 4, VERB, job_id=None, host="n1") == [sys.executable, "-m", "contamination", *VERB]


def test_one_node_uses_a_standalone_torchrun():
    command = launch_command(1, 8, 64, VERB, job_id="17", host="n1")
    assert command[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=8"]
    assert command[5:] == ["-m", "contamination", *VERB]


def test_several_nodes_start_one_torchrun_per_node_at_a_shared_rendezvous(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    command = launch_command(2, 4, 32, VERB, job_id="123456", host="gpu-a01")
    assert "--standalone" not in command
    srun = command[:command.index(sys.executable)]
    assert srun == ["srun", "--overlap", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=32",
                    "--kill-on-bad-exit=1"]
    torchrun = command[len(srun):]
    assert torchrun[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d", "--rdzv-id=123456"} <= set(torchrun)
    endpoint = next(argument for argument in torchrun if argument.startswith("--rdzv-endpoint="))
    host, port = endpoint.split("=")[1].split(":")
    assert host == "gpu-a01" and 29500 <= int(port) < 31500
    assert torchrun[-len(VERB) - 2:] == ["-m", "contamination", *VERB]


def test_several_nodes_need_a_slurm_allocation_and_whole_numbers():
    with pytest.raises(ConfigError, match="SLURM_JOB_ID"):
        launch_command(2, 4, 32, VERB, job_id=None, host="n1")
    with pytest.raises(ConfigError, match="at least 1"):
        launch_command(1, 0, 4, VERB, job_id=None, host="n1")


def test_profile_spreads_jobs_over_whole_nodes_of_the_site_setting():
    default = production_profile({})
    classifier = default["set-resources"]["train_classifier"]
    assert (classifier["nodes"], classifier["processes_per_node"], classifier["gpu"]) == (1, 8, 8)
    assert "gres" not in classifier
    four = production_profile({"CONTAMINATION_SLURM_GPUS_PER_NODE": "4", "CONTAMINATION_SLURM_GPU_MODEL": "a100"})
    classifier = four["set-resources"]["train_classifier"]
    assert (classifier["nodes"], classifier["processes_per_node"], classifier["gres"]) == (2, 4, "gpu:a100:4")
    assert "gpu" not in classifier and "gpu_model" not in classifier
    whole = default["set-resources"]["train_classifier"]
    assert classifier["cpus_per_task"] * 2 == whole["cpus_per_task"]
    assert classifier["mem_mb"] * 2 == whole["mem_mb"]
    assert four["set-threads"]["train_classifier"] == classifier["cpus_per_task"]
    assert four["set-resources"]["caption_finetune"]["nodes"] == 1  # 2 GPUs fit one node


def test_profile_refuses_a_job_that_does_not_fill_whole_nodes():
    with pytest.raises(Exception, match="does not fill whole nodes"):
        production_profile({"CONTAMINATION_SLURM_GPUS_PER_NODE": "3"})
