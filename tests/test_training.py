"""The shared training skeleton: EMA, checkpoints, stop signals, divergence, samplers, metrics.json."""

import json
import math
import os
import pathlib
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from contamination import records
from contamination.experiments import training
from contamination.errors import ConfigError, DataError, Locked
from helpers import FakeClock, environment, lock_holder

CPU = training.DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture
def restore_signal_handlers():
    saved = {name: signal.getsignal(getattr(signal, name)) for name in training.STOP_SIGNALS}
    yield
    for name, handler in saved.items():
        signal.signal(getattr(signal, name), handler)


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_ema_copies_first_then_averages_parameters_and_buffers():
    model = small_model()
    ema = training.ExponentialMovingAverage(model, decay=0.9)
    ema.update(model)  # the first update copies
    first = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(ema.module.module.parameters(), first))

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update(model)
    for averaged, before, now in zip(ema.module.module.parameters(), first, model.parameters()):
        assert torch.allclose(averaged, 0.9 * before + 0.1 * now)
    # use_buffers=True: BatchNorm statistics are averaged too (0.9 * 0 + 0.1 * 2)
    assert torch.allclose(ema.module.module[1].running_mean, torch.full((4,), 0.2))

    ema.restart()
    ema.update(model)
    assert all(torch.equal(a, b) for a, b in zip(ema.module.module.parameters(), model.parameters()))


def draws():
    """The next numbers of every RNG a checkpoint restores; gauss draws use the cached second
    value of a pair, which is part of the python and numpy states too."""
    return (random.random(), random.gauss(0, 1), np.random.rand(), np.random.standard_normal(), torch.rand(4).tolist())


def test_checkpoint_round_trip_restores_state_position_and_rng(tmp_path):
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    training.seed_everything(7, CPU)
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached gaussian in both states
    checkpointer = training.Checkpointer(tmp_path, CPU, fingerprint="abc")
    checkpointer.save(training.Position(epoch=3, step=2), model=model, optimizer=optimizer, ema=None)
    expected_draws = draws()

    fresh_model = small_model()
    fresh_optimizer = torch.optim.SGD(fresh_model.parameters(), lr=0.1, momentum=0.9)
    training.seed_everything(123, CPU)
    position = checkpointer.load(model=fresh_model, optimizer=fresh_optimizer, ema=None)

    assert position == training.Position(epoch=3, step=2)
    assert draws() == expected_draws
    for a, b in zip(fresh_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_optimizer.state_dict()["state"][0]["momentum_buffer"].equal(
        optimizer.state_dict()["state"][0]["momentum_buffer"]
    )
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


class Planted:
    """Unpickling this runs code: it creates ``target``."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return pathlib.Path.touch, (self.target,)


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_none(tmp_path):
    planted = {"fingerprint": "abc", "position": {"epoch": 9, "step": 0}, "world_size": 1, "rng": [],
               "state": {"model": Planted(tmp_path / "planted-ran")}}
    torch.save(planted, tmp_path / "copy.pt")
    torch.load(tmp_path / "copy.pt", weights_only=False)  # what loading used to do: the code runs
    assert (tmp_path / "planted-ran").exists()
    (tmp_path / "planted-ran").unlink()

    checkpoint_dir = tmp_path / "checkpoints"
    checkpoint_dir.mkdir()
    (tmp_path / "copy.pt").rename(checkpoint_dir / training.CHECKPOINT_NAME)
    with pytest.raises(DataError, match=r"checkpoints/checkpoint\.pt: refused: a checkpoint may hold only tensors "
                                        r"and plain data .*\(Unsupported global: GLOBAL "):
        training.Checkpointer(checkpoint_dir, CPU, fingerprint="abc").load(model=small_model())
    assert not (tmp_path / "planted-ran").exists()


def test_loading_removes_the_temporary_a_killed_save_left(tmp_path):
    model = small_model()
    checkpointer = training.Checkpointer(tmp_path, CPU, fingerprint="abc")
    checkpointer.save(training.Position(2, 0), model=model)
    stale = tmp_path / f".{training.CHECKPOINT_NAME}.k1ll3d.tmp"  # atomic_path's name for a save in progress
    stale.write_bytes(b"half a checkpoint")
    resumed = training.Checkpointer(tmp_path, CPU, fingerprint="abc")
    assert resumed.load(model=small_model()) == training.Position(2, 0)
    assert sorted(path.name for path in tmp_path.iterdir()) == [f".{training.CHECKPOINT_NAME}.lock",
                                                                 training.CHECKPOINT_NAME]
    resumed.remove()
    assert list(tmp_path.iterdir()) == []


def test_a_second_process_training_the_same_run_stops_at_its_checkpoint_lock(tmp_path):
    holder = lock_holder(tmp_path / training.CHECKPOINT_NAME)
    stale_looking = tmp_path / f".{training.CHECKPOINT_NAME}.live.tmp"  # the holder's save in progress
    stale_looking.write_bytes(b"being written")
    try:
        with pytest.raises(Locked, match=r"the checkpoint .*checkpoint\.pt is being written by another live process"):
            training.Checkpointer(tmp_path, CPU, fingerprint="abc").load(model=small_model())
        assert stale_looking.exists()
    finally:
        holder.stdin.close()
        holder.wait()


def test_without_posix_locks_loading_keeps_temporaries_that_may_be_live(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(*arguments):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    training.Checkpointer(tmp_path, CPU, fingerprint="abc").save(training.Position(2, 0), model=small_model())
    monkeypatch.setattr(fcntl, "lockf", no_locks)  # e.g. Lustre without -o flock, NFSv3 without lockd
    maybe_live = tmp_path / f".{training.CHECKPOINT_NAME}.other.tmp"  # another job's save, undetectable
    maybe_live.write_bytes(b"being written")
    assert training.Checkpointer(tmp_path, CPU, fingerprint="abc").load(model=small_model()) == training.Position(2, 0)
    assert maybe_live.exists()
    assert "this file system has no POSIX locks" in capsys.readouterr().err


def test_checkpoint_of_another_config_is_ignored(tmp_path):
    model = small_model()
    training.Checkpointer(tmp_path, CPU, fingerprint="old").save(training.Position(5, 0), model=model)
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    before = [p.clone() for p in other.parameters()]
    position = training.Checkpointer(tmp_path, CPU, fingerprint="new").load(model=other)
    assert position == training.Position()
    assert all(torch.equal(a, b) for a, b in zip(other.parameters(), before))


def test_no_checkpoint_means_start_from_scratch(tmp_path):
    assert training.Checkpointer(tmp_path / "missing", CPU, "x").load(model=small_model()) == training.Position()


def test_stop_signal_sets_the_flag_and_check_step_reports_it(restore_signal_handlers):
    stop = training.StopRequest()
    assert training.check_step(torch.tensor(1.0), stop, CPU) is training.StepEnd.CONTINUE
    os.kill(os.getpid(), signal.SIGUSR1)
    assert stop.requested and stop.signal_name == "SIGUSR1"
    assert training.check_step(torch.tensor(1.0), stop, CPU) is training.StepEnd.STOP


def test_an_epoch_end_saves_only_when_the_interval_has_passed_or_the_run_ends(tmp_path):
    clock, model = FakeClock(), small_model()
    checkpointer = training.Checkpointer(tmp_path, CPU, "x", every_minutes=30, clock=clock)
    clock.now += 30 * 60 - 1
    checkpointer.end_epoch(training.Position(1, 0), False, model=model)
    assert not checkpointer.path.exists()
    clock.now += 1
    checkpointer.end_epoch(training.Position(2, 0), False, model=model)
    assert torch.load(checkpointer.path, weights_only=True)["position"] == {"epoch": 2, "step": 0}
    checkpointer.end_epoch(training.Position(3, 0), True, model=model)  # the last epoch: always
    assert torch.load(checkpointer.path, weights_only=True)["position"] == {"epoch": 3, "step": 0}


def test_a_checkpoint_is_due_after_its_wall_time_and_each_save_restarts_the_clock(tmp_path):
    clock, loss, model = FakeClock(), torch.tensor(1.0), small_model()
    checkpointer = training.Checkpointer(tmp_path, CPU, "x", every_minutes=30, clock=clock)
    clock.now += 30 * 60 - 1
    assert training.check_step(loss, NoStop(), CPU, checkpointer=checkpointer) is training.StepEnd.CONTINUE
    checkpointer.after_step(training.StepEnd.CONTINUE, training.Position(0, 2), model=model)
    assert not checkpointer.path.exists()  # nothing due: nothing written
    clock.now += 1
    end = training.check_step(loss, NoStop(), CPU, checkpointer=checkpointer)
    assert end is training.StepEnd.CHECKPOINT
    checkpointer.after_step(end, training.Position(0, 3), model=model)  # saves and goes on
    assert torch.load(checkpointer.path, weights_only=True)["position"] == {"epoch": 0, "step": 3}
    clock.now += 30 * 60 - 1  # 30 minutes after the start, but not since the save
    assert training.check_step(loss, NoStop(), CPU, checkpointer=checkpointer) is training.StepEnd.CONTINUE
    clock.now += 1
    stop = NoStop()
    stop.requested = True  # a stop outranks a due checkpoint: save, then exit
    end = training.check_step(loss, stop, CPU, checkpointer=checkpointer)
    assert end is training.StepEnd.STOP
    with pytest.raises(training.Interrupted):
        checkpointer.after_step(end, training.Position(0, 4), model=model)
    assert torch.load(checkpointer.path, weights_only=True)["position"] == {"epoch": 0, "step": 4}
    clock.now += 10**9
    assert not training.Checkpointer(tmp_path / "other", CPU, "x", clock=clock).due()  # no interval: never


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_check_step_raises_diverged_on_non_finite_loss(value, restore_signal_handlers):
    with pytest.raises(training.Diverged, match="non-finite training loss"):
        training.check_step(torch.tensor(value), training.StopRequest(), CPU)


class NoStop:
    requested = False


def amp_step(model, optimizer, watch, loss_factor):
    """One training step as the trainers take it: forward, check_step, scaled backward, update."""
    loss = model(torch.ones(2, 3)).sum() * loss_factor
    training.check_step(loss, NoStop(), CPU, watch)
    optimizer.zero_grad(set_to_none=True)
    (watch.scaler.scale(loss) if watch.scaler is not None else loss).backward()
    watch.step(optimizer)


def amp_run(max_skipped_steps=3):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, training.StepWatch(model, torch.amp.GradScaler("cpu"), max_skipped_steps)


def test_a_step_the_amp_scaler_skips_is_not_divergence():
    model, optimizer, watch = amp_run(max_skipped_steps=3)
    before = [parameter.detach().clone() for parameter in model.parameters()]
    amp_step(model, optimizer, watch, math.nan)  # the scaler skips it and halves its scale
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    amp_step(model, optimizer, watch, math.inf)
    amp_step(model, optimizer, watch, 1.0)  # a finite step ends the run of skips
    assert not torch.equal(before[0], model.weight)
    amp_step(model, optimizer, watch, math.nan)
    amp_step(model, optimizer, watch, math.nan)
    assert watch.record().items() >= {"optimizer_steps": 5, "skipped_steps": 4, "max_consecutive_skipped_steps": 3,
                                      "diverged": None}.items()


def test_max_skipped_steps_in_a_row_is_divergence_with_its_step():
    model, optimizer, watch = amp_run(max_skipped_steps=3)
    amp_step(model, optimizer, watch, 1.0)
    amp_step(model, optimizer, watch, math.nan)
    amp_step(model, optimizer, watch, math.nan)
    with pytest.raises(training.Diverged, match="3 consecutive optimizer steps skipped .* at optimizer step 4") as error:
        amp_step(model, optimizer, watch, math.nan)
    assert error.value.step == 4
    assert error.value.record["diverged"] == {"step": 4, "reason": error.value.reason}
    assert error.value.record["skipped_steps"] == 3


@pytest.mark.parametrize("scaled", [True, False])
def test_non_finite_weights_are_divergence(scaled):
    model, optimizer, watch = amp_run()
    if not scaled:
        watch = training.StepWatch(model)
    amp_step(model, optimizer, watch, 1.0)
    amp_step(model, optimizer, watch, 1.0)
    with torch.no_grad():
        model.bias[1] = math.inf
    with pytest.raises(training.Diverged, match="non-finite weights at optimizer step 2") as error:
        watch.check_weights(CPU)
    assert error.value.record["diverged"] == {"step": 2, "reason": "non-finite weights"}
    with pytest.raises(training.Diverged, match="non-finite weights at optimizer step 2"):
        amp_step(model, optimizer, watch, 1.0)  # found before the next update


def test_a_step_with_a_finite_loss_does_not_read_the_weights():
    model, optimizer, watch = amp_run()
    with torch.no_grad():
        model.weight[0, 0] = math.nan  # the forward pass below never uses it
    model.forward = lambda inputs: model.bias.expand(len(inputs), 2)
    weights_finite = watch.weights_finite
    watch.weights_finite = lambda: pytest.fail("a step with a finite loss read the weights")
    amp_step(model, optimizer, watch, 1.0)  # its loss is finite: no pass over the weights
    watch.weights_finite = weights_finite
    with pytest.raises(training.Diverged, match="non-finite weights at optimizer step 1"):
        watch.check_weights(CPU)  # the check at the end of training finds them


def test_without_a_scaler_a_non_finite_loss_diverges_before_the_update():
    model, optimizer, _ = amp_run()
    watch = training.StepWatch(model)
    amp_step(model, optimizer, watch, 1.0)
    before = model.weight.detach().clone()
    with pytest.raises(training.Diverged, match="without an AMP loss scaler .* at optimizer step 2") as error:
        amp_step(model, optimizer, watch, math.nan)
    assert torch.equal(before, model.weight) and error.value.record["diverged"]["step"] == 2


def test_the_step_counts_resume_from_a_checkpoint(tmp_path):
    model, optimizer, watch = amp_run(max_skipped_steps=2)
    amp_step(model, optimizer, watch, math.nan)
    checkpointer = training.Checkpointer(tmp_path, CPU, "x")
    checkpointer.save(training.Position(0, 1), watch=watch, scaler=watch.scaler)
    model, optimizer, resumed = amp_run(max_skipped_steps=2)
    checkpointer.load(watch=resumed, scaler=resumed.scaler)
    with pytest.raises(training.Diverged, match="2 consecutive"):  # the skip before the checkpoint counts
        amp_step(model, optimizer, resumed, math.nan)


@pytest.mark.parametrize("global_batch, world_size, cap, expected", [
    (256, 8, 32, (32, 1)),      # the paper's ResNet-50: 8 GPUs x 32
    (256, 4, 32, (32, 2)),      # half the GPUs: the same per-GPU batch, accumulated twice
    (256, 16, 32, (16, 1)),     # twice the GPUs: half the per-GPU batch
    (4096, 8, 256, (256, 2)),   # the paper's MAE pre-training: 8 GPUs x 256 x 2
    (4096, 4, 256, (256, 4)),
    (4096, 1, None, (4096, 1)),  # no cap, no accumulation
    (64, 2, 24, (16, 2)),       # 32 per process do not fit 24: the fewest steps that divide 32 exactly
    (96, 1, 40, (32, 3)),       # 96 / 40 rounds up to 3 steps of 32
])
def test_batch_split_keeps_the_global_batch_with_the_fewest_accumulation_steps(global_batch, world_size, cap,
                                                                                 expected):
    split = training.batch_split(global_batch, world_size, cap)
    assert (split.per_process_batch, split.accumulation_steps) == expected
    assert split.per_process_batch * split.accumulation_steps * world_size == global_batch
    assert (split.global_batch_size, split.world_size) == (global_batch, world_size)


def test_a_global_batch_the_processes_cannot_share_fails_with_the_numbers():
    with pytest.raises(ConfigError, match=r"^captioning.global_batch_size: 64 images do not split over 3 processes "
                                          r"\(64 / 3 = 21.3333 per process\)"):
        training.batch_split(64, 3, 32, "captioning")


def test_the_step_record_holds_the_batch_split_and_the_learning_rate_schedule():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def schedule(steps):
        watch = training.StepWatch(model, batch=training.batch_split(8, 2, 2))
        for _ in range(steps):
            watch.step(optimizer)
            scheduler.step()
        return watch.record()

    record = schedule(3)
    assert record["batch"] == {"global_batch_size": 8, "world_size": 2, "per_process_batch": 2, "accumulation_steps": 2}
    assert (record["optimizer_steps"], record["learning_rate"]["first"], record["learning_rate"]["last"]) == (3, 0.4, 0.1)
    for group in optimizer.param_groups:
        group["lr"] = 0.4
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    assert schedule(3)["learning_rate"] == record["learning_rate"]  # the same schedule, the same digest
    for group in optimizer.param_groups:
        group["lr"] = 0.4
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.25)  # 0.4, 0.4, 0.1
    other = schedule(3)["learning_rate"]
    assert other["last"] == record["learning_rate"]["last"] and other != record["learning_rate"]


def test_metrics_json_records_the_training_steps(tmp_path):
    _, _, watch = amp_run()
    records.write_metrics(tmp_path / "m.json", {"a": 1.0}, {}, "ok", {}, watch.record())
    assert json.loads((tmp_path / "m.json").read_text())["training"]["max_consecutive_skipped_steps"] == 3


def test_repeated_augment_sampler_repeats_each_index_and_rounds_the_epoch():
    dataset = list(range(40))
    sampler = training.RepeatedAugmentSampler(dataset, CPU, seed=0, repetitions=4, round_to=16)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 32  # 40 rounded down to a multiple of 16
    assert indices[:4] == [indices[0]] * 4  # each index comes `repetitions` times in a row
    sampler.set_epoch(1)
    assert list(sampler) != indices  # a new order per epoch
    with pytest.raises(DataError, match="10 items round down to 0"):
        training.RepeatedAugmentSampler(list(range(10)), CPU, seed=0, round_to=16)


def test_resumable_sampler_skips_done_batches_of_the_same_order():
    base = training.distributed_sampler(list(range(20)), CPU, seed=0)
    sampler = training.ResumableSampler(base, batch_size=4)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, skip_batches=3)
    assert list(sampler) == full[12:] and len(sampler) == 8


def test_loader_generator_depends_on_seed_rank_and_epoch_only():
    draw = lambda seed, epoch: torch.randint(0, 2**30, (1,), generator=training.loader_generator(seed, CPU, epoch))
    assert torch.equal(draw(0, 1), draw(0, 1))
    assert not torch.equal(draw(0, 1), draw(0, 2)) and not torch.equal(draw(0, 1), draw(1, 1))


def test_distributed_run_turns_a_stop_into_the_resume_exit_code(capsys):
    with pytest.raises(SystemExit) as stopped:
        with training.distributed_run("cpu", "/scratch/ckpt") as env:
            assert env.world_size == 1
            raise training.Interrupted()
    assert stopped.value.code == training.EXIT_RESUME
    captured = capsys.readouterr()
    assert f"checkpoint in /scratch/ckpt, exit {training.EXIT_RESUME}" in captured.out + captured.err
    with pytest.raises(ValueError):
        with training.distributed_run("cpu", "/scratch/ckpt"):
            raise ValueError("other errors pass through")


# Two CPU ranks (gloo) under torchrun sharing one checkpoint directory: "save" checkpoints after
# some draws and reports the draws after it, "resume" loads and reports its draws; each rank
# writes its report to <report>-<rank> (their stdout lines interleave).
TWO_RANKS = """
import json, random, sys
import numpy as np, torch
from contamination.experiments import training
from contamination.errors import Locked

mode, directory, report = sys.argv[1:]
env = training.setup_distributed("cpu")
training.seed_everything(5 if mode == "save" else 99, env)
model = torch.nn.Linear(2, 2)
checkpointer = training.Checkpointer(directory, env, "abc")
try:
    position = checkpointer.load(model=model)
    if mode == "save":
        random.random(), np.random.rand(), torch.rand(3)
        checkpointer.save(training.Position(1, 0), model=model)
    draws = [random.random(), float(np.random.rand()), torch.rand(3).tolist()]
    with open(f"{report}-{env.rank}", "w") as handle:
        json.dump({"epoch": position.epoch, "draws": draws}, handle)
except Locked as error:
    with open(f"{report}-{env.rank}", "w") as handle:
        json.dump({"locked": str(error)}, handle)
    sys.exit(2)
finally:
    training.teardown_distributed(env)
"""


def torchrun_two_ranks(mode, directory, tmp_path):
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    torchrun = pathlib.Path(sys.executable).parent / "torchrun"
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node=2", str(script), mode, str(directory),
                             str(report)], env=environment() | {"OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    reports = {rank: pathlib.Path(f"{report}-{rank}") for rank in (0, 1)}
    return result, {rank: json.loads(path.read_text()) for rank, path in reports.items() if path.exists()}


def test_two_ranks_resume_each_rank_rng_and_all_stop_at_a_held_lock(tmp_path):
    directory = tmp_path / "checkpoints"
    saved, reports = torchrun_two_ranks("save", directory, tmp_path)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    after_save = {rank: reports[rank]["draws"] for rank in (0, 1)}
    assert after_save[0] != after_save[1]  # seeded with seed + rank

    resumed, reports = torchrun_two_ranks("resume", directory, tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert reports == {rank: {"epoch": 1, "draws": after_save[rank]} for rank in (0, 1)}

    # A second run while another live job holds the directory: every rank stops with the lock's
    # message, none trains on until a collective with the stopped rank 0 fails or times out.
    holder = lock_holder(directory / training.CHECKPOINT_NAME)
    try:
        second, reports = torchrun_two_ranks("resume", directory, tmp_path)
    finally:
        holder.stdin.close()
        holder.wait()
    assert second.returncode != 0
    for rank in (0, 1):
        assert "is being written by another live process, which holds the lock" in \
            reports.get(rank, {}).get("locked", ""), second.stdout + second.stderr


TIMER_TWO_RANKS = """
import json, sys
import torch
from contamination.experiments import training

env = training.setup_distributed("cpu")
due = 0.0 if env.rank == 0 else 3600.0
times = iter([0.0, due, due])  # construction, the step, the epoch's end: only rank 1 is due (then the save)


class NoStop:
    requested = False


checkpointer = training.Checkpointer(sys.argv[1], env, "abc", every_minutes=30, clock=lambda: next(times, 7200.0))
end = training.check_step(torch.tensor(1.0), NoStop(), env, checkpointer=checkpointer)
checkpointer.end_epoch(training.Position(1, 0), False, model=torch.nn.Linear(1, 1))
saved = torch.load(checkpointer.path, weights_only=True)["position"]
with open(f"{sys.argv[2]}-{env.rank}", "w") as handle:
    json.dump([end.name, saved], handle)
training.teardown_distributed(env)
"""


def test_one_ranks_checkpoint_timer_makes_every_rank_checkpoint(tmp_path):
    """save() is collective: all ranks must agree that a wall-time checkpoint is due, mid-epoch
    (check_step) and at an epoch's end (end_epoch)."""
    script = tmp_path / "timer.py"
    script.write_text(TIMER_TWO_RANKS)
    torchrun = pathlib.Path(sys.executable).parent / "torchrun"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node=2", str(script),
                             str(tmp_path / "checkpoints"), str(tmp_path / "report")],
                            env=environment() | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [json.loads((tmp_path / f"report-{rank}").read_text()) for rank in (0, 1)] == \
        [["CHECKPOINT", {"epoch": 1, "step": 0}]] * 2
