"""Shared training skeleton: distributed setup, seeding, checkpoint/resume, stop signals,
divergence, EMA and samplers (metrics.json: records.py). Every training experiment (classification,
captioning, IDDPM, MAE) uses it the same way::

    from contamination import records
    from contamination.experiments import training

    env = training.setup_distributed()              # torchrun env vars, or one process
    training.seed_everything(seed, env)             # + deterministic algorithms on CPU
    checkpointer = training.Checkpointer(checkpoint_dir, env, fingerprint=records.sha256_of_json(spec),
                                         every_minutes=checkpoint_every_minutes)  # config, not in spec
    stop = training.StopRequest()                   # SIGTERM / SIGUSR1 -> stop.requested
    sampler = training.ResumableSampler(training.distributed_sampler(dataset, env, seed), batch_size)
    watch = training.StepWatch(model, scaler, max_skipped_steps)  # scaler: None without AMP
    position = checkpointer.load(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema, watch=watch)
    try:
        for epoch in range(position.epoch, epochs):
            sampler.set_epoch(epoch, skip_batches=position.step if epoch == position.epoch else 0)
            loader = DataLoader(dataset, sampler=sampler, generator=training.loader_generator(seed, env, epoch), ...)
            for step, batch in enumerate(loader, start=sampler.skipped_batches):
                loss = ...                                      # forward
                end = training.check_step(loss, stop, env, watch, checkpointer)  # raises Diverged (see StepWatch)
                loss.backward(); watch.step(optimizer)          # through the AMP GradScaler if any
                checkpointer.after_step(end, training.Position(epoch, step + 1), model=model, ...)
            scheduler.step()
            checkpointer.save(training.Position(epoch + 1, 0), model=model, ...)  # or end_epoch(...,
            #   last=epoch + 1 == epochs): only when due or last (classification)
        watch.check_weights(env)
    except training.Diverged as error:
        metrics, reasons = records.unavailable(METRIC_NAMES, str(error))    # -> status "diverged"
        steps = error.record                                                # step and reason
    ...
    records.write_metrics(out, metrics, reasons, status,
                          records.provenance(spec, seed, env.world_size, env.device.type), steps)

The CLI command turns ``Interrupted`` into exit code ``EXIT_RESUME`` (75): the job failed, so
Snakemake (or SLURM) retries it, and the retry resumes from the checkpoint. (Under torchrun, the
agent forwards SIGTERM to the workers, which checkpoint, and then exits non-zero itself.)
``checkpointer.remove()`` after the outputs are written if the checkpoint need not be kept. A diverged run is not
a failure: it writes metrics.json with ``status: "diverged"`` and null metrics with the reason,
and the command exits 0 so the workflow goes on and the table shows NaN.

Pieces:
- ``DistEnv`` / ``setup_distributed`` / ``teardown_distributed``: rank, world size and device
  from the torchrun environment; nccl on GPU, gloo on CPU; without torchrun, world size 1 and no
  process group. ``all_reduce_max`` is a no-op at world size 1.
- ``seed_everything``: python, numpy and torch seeded with ``seed + rank``; on CPU (or when
  asked) ``torch.use_deterministic_algorithms(True)`` so the same seed gives the same weights.
- ``Checkpointer``: one file ``checkpoint.pt`` in a directory that must NOT be a Snakemake output
  (e.g. results/<run>/checkpoints/<experiment>/<model>/<dataset>/), so a failed job keeps it.
  Saves the state_dict of every object passed by keyword, the ``Position`` (next epoch, batches
  already done in it), the RNG states of every rank and a config fingerprint; written with
  torch.save to a temporary name and renamed, loaded with ``weights_only=True`` (a file that
  would unpickle code is refused). A checkpoint with another fingerprint is ignored. With
  ``every_minutes`` it also asks for a checkpoint once that much wall time has passed since its
  last save (config ``checkpoint_every_minutes`` of each trainer), so a job killed without a
  warning signal (node failure, hard time limit) loses at most that much.
- ``StopRequest`` + ``check_step``: signals only set a flag. After each forward pass one
  all-reduce tells every rank whether any loss is non-finite, whether the weights are (with a
  ``StepWatch``, read only on a step whose loss is not finite), whether any rank was signalled and whether any rank's checkpoint timer ran
  out; it returns a ``StepEnd``, and ``Checkpointer.after_step`` then finishes the step: it
  checkpoints before the next batch is loaded (so a resumed CPU run with num_workers=0 is
  bit-identical to an uninterrupted one) and, after a signal, raises Interrupted.
- ``StepWatch``: AMP is not divergence. A non-finite loss or gradient that the GradScaler skips
  is a skipped step; training has diverged when the weights are not finite, when a loss is not
  finite with no scaler to skip its update (the update would poison the weights: raised before
  it), or after ``max_skipped_steps`` consecutive skipped steps. ``Diverged`` carries the
  optimizer step and the reason; ``StepWatch.record`` goes into metrics.json (``training``).
- ``loader_generator``: the DataLoader's generator for an epoch, so DataLoader worker seeds
  depend only on (seed, rank, epoch): a run resumed at an epoch boundary sees the same
  augmentations with workers too (mid-epoch, only with num_workers=0).
- ``ExponentialMovingAverage``: the torchvision reference EMA (an ``AveragedModel`` with
  ``use_buffers=True``); ``restart()`` makes the next update copy the weights again.
- ``batch_split`` / ``BatchSplit``: a recipe states its GLOBAL batch; a job takes it as
  ``per_process_batch`` images per forward pass on each process and ``accumulation_steps`` forward
  passes per optimizer step, so any process count trains the same optimisation (a per-process cap,
  config ``max_batch_per_process``, only adds accumulation). ``gradient_sync``: DDP all-reduces
  gradients only on the micro-step that updates (``no_sync`` on the others).
- ``distributed_sampler`` (torch DistributedSampler, also at world size 1),
  ``RepeatedAugmentSampler`` (the reference's RASampler) and ``ResumableSampler`` (skips the
  batches done before a mid-epoch checkpoint without loading them).

This module imports torch only inside functions, like every module of the package.
"""

import contextlib
import dataclasses
import enum
import hashlib
import itertools
import math
import os
import pickle
import random
import re
import signal
import sys
import time
from pathlib import Path

from contamination.errors import ConfigError, DataError, Locked
from contamination.io import atomic_path, exclusive_lock, remove_stale_temporaries
from contamination.config import add_settings_arguments

EXIT_RESUME = 75  # EX_TEMPFAIL: stopped by a signal after checkpointing; run again to resume
CHECKPOINT_NAME = "checkpoint.pt"
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


def add_resumable_command(subparsers, name: str, help: str, spec_help: str, section: str, keys=None, restore=None):
    """A CLI training command with the arguments every one has: ``--spec`` and ``--runtime``
    (config.add_settings_arguments of config ``section``, ``keys`` and ``restore``; described by
    ``spec_help``) and ``--checkpoint-dir``; its help says how it runs under torchrun and resumes."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=f"Run it under torchrun for several GPUs. Exit code {EXIT_RESUME}: stopped by a signal "
        "after checkpointing; run the same command again to resume.",
    )
    add_settings_arguments(parser, "--spec", section, keys, restore, help=spec_help)
    parser.add_argument("--checkpoint-dir", required=True, help="resume directory (not a workflow output)")
    return parser


class Diverged(Exception):
    """Training diverged (StepWatch says when): the run ends with status "diverged" (a result, not
    a crash). ``step``: the optimizer step (counted from 1) at which it was found, if known."""

    def __init__(self, reason: str, step=None):
        super().__init__(reason if step is None else f"{reason} at optimizer step {step}")
        self.reason = reason
        self.step = step
        self.record = None  # StepWatch.record, when a StepWatch found it


class Interrupted(Exception):
    """A stop signal arrived and a checkpoint was written; exit with EXIT_RESUME."""


# ---- processes and devices ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: object  # torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistEnv:
    """Join the torchrun process group (if any) and pick this process's device.

    ``device``: "auto" (cuda:<local rank> if CUDA is available, else cpu), "cpu" or "cuda".
    """
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistEnv(rank, world_size, local_rank, chosen)


def loader_workers(configured: int) -> int:
    """DataLoader workers for this process: at most ``configured``, and no more than the CPUs this
    process may use, shared by the job's processes on this node (torchrun's LOCAL_WORLD_SIZE), each
    keeping one CPU for its training loop. A SLURM job's CPU set is its --cpus-per-task, so 8
    processes on a 64-CPU job get 7 workers each, not the 16 x 8 a fixed count would start."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(0, min(configured, cpus // processes - 1))


@contextlib.contextmanager
def distributed_run(device: str, checkpoint_dir):
    """A training command's process group (setup_distributed) for the body, torn down after it;
    a stop signal (Interrupted) ends the command with EXIT_RESUME, saying where its checkpoint is."""
    env = setup_distributed(device)
    try:
        yield env
    except Interrupted:
        log(env, f"stopped by a signal; checkpoint in {checkpoint_dir}, exit {EXIT_RESUME}")
        raise SystemExit(EXIT_RESUME)
    finally:
        teardown_distributed(env)


def teardown_distributed(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.distributed:
        dist.barrier()


def all_reduce_max(values, env: DistEnv):
    """Element-wise maximum of a list of numbers over all ranks (identity at world size 1)."""
    import torch
    import torch.distributed as dist

    if not env.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def log(env: DistEnv, message: str) -> None:
    if env.is_main:
        print(message, flush=True)


# ---- global batch: per-process batch and gradient accumulation ------------------------------


@dataclasses.dataclass(frozen=True)
class BatchSplit:
    """How a job takes a recipe's global batch: ``per_process_batch`` images per forward pass on
    each of ``world_size`` processes, ``accumulation_steps`` forward passes per optimizer step."""

    global_batch_size: int
    world_size: int
    per_process_batch: int
    accumulation_steps: int


def batch_split(global_batch_size: int, world_size: int, max_batch_per_process=None, key: str = "") -> BatchSplit:
    """The split of ``global_batch_size`` over ``world_size`` processes with the fewest accumulation
    steps whose per-process batch is at most ``max_batch_per_process`` (None: no cap, no
    accumulation) and divides the process's share exactly. ConfigError naming ``key`` (the recipe's
    config key) and the numbers when the processes cannot share the batch equally."""
    where = f"{key}.global_batch_size" if key else "global_batch_size"
    if global_batch_size % world_size:
        raise ConfigError(f"{where}: {global_batch_size} images do not split over {world_size} processes "
                          f"({global_batch_size} / {world_size} = {global_batch_size / world_size:g} per process); "
                          f"run on a number of GPUs that divides {global_batch_size}")
    share = global_batch_size // world_size
    accumulation = 1 if max_batch_per_process is None else -(-share // max_batch_per_process)
    while share % accumulation:
        accumulation += 1
    return BatchSplit(global_batch_size, world_size, share // accumulation, accumulation)


def gradient_sync(model, env: DistEnv, updating: bool):
    """The context of a micro-step's forward and backward: DDP all-reduces the accumulated
    gradients only on the micro-step that updates the weights (``no_sync`` on the others)."""
    return contextlib.nullcontext() if updating or not env.distributed else model.no_sync()


# ---- seeds and determinism ------------------------------------------------------------------


def seed_everything(seed: int, env: DistEnv, deterministic=None) -> None:
    """Seed python, numpy and torch with ``seed + rank``.

    ``deterministic`` None means: on CPU yes (bit-identical reruns), on GPU no (cuDNN autotuning,
    as the torchvision reference does by default).
    """
    import numpy as np
    import torch

    seed = seed + env.rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic is None:
        deterministic = env.device.type == "cpu"
    torch.use_deterministic_algorithms(deterministic)
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def loader_generator(seed: int, env: DistEnv, epoch: int):
    """A torch.Generator for one epoch's DataLoader, seeded from (seed, rank, epoch) only."""
    import numpy as np
    import torch

    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([seed, env.rank, epoch]).generate_state(1)[0]))
    return generator


def rng_states() -> dict:
    """This process's RNG states as tensors, lists and numbers only, so a checkpoint holding them
    loads with ``torch.load(weights_only=True)`` (numpy's state is an array: stored as a list)."""
    import numpy as np
    import torch

    algorithm, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {"python": random.getstate(), "torch": torch.get_rng_state(),
              "numpy": [algorithm, keys.tolist(), position, has_gauss, cached_gaussian]}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    import numpy as np
    import torch

    random.setstate(states["python"])
    algorithm, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((algorithm, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ---- checkpoints ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Position:
    """Where training continues: ``epoch`` to run next, ``step`` batches of it already done."""

    epoch: int = 0
    step: int = 0


class Checkpointer:
    """Atomic save/restore of a training run's complete state in ``directory``/checkpoint.pt.

    The first save or load takes the directory's lock (io.exclusive_lock, rank 0) for the rest of
    the process, so a second live run of the same training stops with Locked on every rank, and
    the temporaries a killed save left are removed before loading.

    ``every_minutes`` (None: never): ``due()`` once that much time on ``clock`` (seconds) has
    passed since construction or the last save; check_step turns it into StepEnd.CHECKPOINT.
    """

    def __init__(self, directory, env: DistEnv, fingerprint: str, every_minutes=None, clock=time.monotonic):
        self.path = Path(directory) / CHECKPOINT_NAME
        self.env = env
        self.fingerprint = fingerprint
        self.lock = None
        self.lock_held = False
        self.every_seconds = None if every_minutes is None else every_minutes * 60.0
        self.clock = clock
        self.last_saved = clock()

    def due(self) -> bool:
        """True once ``every_minutes`` have passed since the last save (this rank's clock)."""
        return self.every_seconds is not None and self.clock() - self.last_saved >= self.every_seconds

    def _hold_lock(self) -> None:
        """Collective: rank 0 takes the lock and every rank learns whether it could, so all raise
        Locked together instead of the others training on until a collective with rank 0 fails
        (or, across nodes, hangs until its timeout)."""
        if self.lock is not None:
            return
        self.lock = contextlib.ExitStack()
        refusal = None
        if self.env.is_main:
            try:
                self.lock_held = self.lock.enter_context(exclusive_lock(self.path, f"the checkpoint {self.path}"))
            except Locked as error:
                refusal = str(error)
        refusal = gather_objects(refusal, self.env)[0]
        if refusal is not None:
            self.lock = None
            raise Locked(refusal)

    def save(self, position: Position, **objects) -> None:
        """Save the state_dict of each keyword object (None values are skipped) and all RNG states.

        Collective: every rank must call it (RNG states are gathered to rank 0, which writes).
        """
        import torch

        self._hold_lock()
        states = gather_objects(rng_states(), self.env)
        if self.env.is_main:
            payload = {
                "fingerprint": self.fingerprint,
                "position": dataclasses.asdict(position),
                "world_size": self.env.world_size,
                "rng": states,
                "state": {name: obj.state_dict() for name, obj in objects.items() if obj is not None},
            }
            with atomic_path(self.path) as temporary:
                torch.save(payload, temporary)
        barrier(self.env)
        self.last_saved = self.clock()

    def end_epoch(self, position: Position, last: bool, **objects) -> None:
        """At an epoch's end, save if it was the run's ``last`` epoch or if ``due()`` on any rank
        (collective, like save): the wall-time interval, not the epoch, sets how much is written."""
        if last or all_reduce_max([float(self.due())], self.env)[0]:
            self.save(position, **objects)

    def after_step(self, end: "StepEnd", position: Position, **objects) -> None:
        """Finish a training step that check_step returned ``end`` for: save at ``position`` (the
        batches done, this step's included) when a checkpoint is due or a stop was asked for, and
        after a stop raise Interrupted. Collective, like save."""
        if end:
            self.save(position, **objects)
        if end == StepEnd.STOP:
            raise Interrupted()

    def load(self, **objects) -> Position:
        """Restore the objects and this rank's RNG state; Position() if there is nothing to resume.

        A checkpoint written for another config (fingerprint) is ignored, so a changed recipe
        starts over instead of continuing someone else's run. Loading never unpickles code
        (weights_only): a file that needs more than tensors and plain data is refused.
        """
        import torch

        self._hold_lock()
        if self.lock_held:
            remove_stale_temporaries(self.path)
        if not self.path.exists():
            return Position()
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
            # torch's message suggests loading unsafely instead; keep only what it found in the file.
            found = re.search(r"Unsupported (global: GLOBAL \S+|operand \S+)", str(error))
            reason = found.group(0) if found else f"{type(error).__name__} {str(error).split('. ')[0]}".strip()
            raise DataError(f"{self.path}: refused: a checkpoint may hold only tensors and plain data (anything "
                            f"else could run code when loaded), and this file cannot be read as such ({reason}). "
                            "If an older version of the workflow wrote it (it stored RNG states as numpy "
                            "objects), delete it to start the run over") from None
        if payload["fingerprint"] != self.fingerprint:
            log(self.env, f"ignoring {self.path}: written for another config")
            return Position()
        for name, obj in objects.items():
            if obj is not None:
                obj.load_state_dict(payload["state"][name])
        if payload["world_size"] == self.env.world_size:
            set_rng_states(payload["rng"][self.env.rank])
        else:
            log(self.env, f"world size changed ({payload['world_size']} -> {self.env.world_size}): "
                          "RNG streams are reseeded, so the continuation is not bit-identical")
        position = Position(**payload["position"])
        log(self.env, f"resuming from {self.path} at epoch {position.epoch}, step {position.step}")
        return position

    def remove(self) -> None:
        """Delete the checkpoint (rank 0 does; not collective, so it works after teardown)."""
        if self.env.is_main:
            self.path.unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.close()
            self.lock, self.lock_held = None, False


def gather_objects(obj, env: DistEnv) -> list:
    import torch.distributed as dist

    if not env.distributed:
        return [obj]
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


# ---- stopping: signals and divergence -------------------------------------------------------


class StopRequest:
    """Turns SIGTERM and SIGUSR1 (SLURM's warnings before a time limit) into a flag."""

    def __init__(self, signals=STOP_SIGNALS):
        self.requested = False
        self.signal_name = None
        for name in signals:
            signal.signal(getattr(signal, name), self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"received {self.signal_name}: checkpointing after this step", file=sys.stderr, flush=True)


class StepEnd(enum.IntEnum):
    """What check_step asks of the step's end (Checkpointer.after_step does it). Ordered, so the
    stronger of two requests is their max (a step that accumulates gradients over batches)."""

    CONTINUE = 0    # nothing (falsy)
    CHECKPOINT = 1  # the checkpointer's wall-time interval has passed: save and go on
    STOP = 2        # a stop signal: save, then raise Interrupted


def check_step(loss, stop: StopRequest, env: DistEnv, watch=None, checkpointer=None) -> StepEnd:
    """Call after the forward pass, before the update: raise Diverged if the loss is not finite and
    neither are the weights (with ``watch``), or if any rank's loss is not finite and no GradScaler
    will skip the update (without ``watch`` or with one that has no scaler); return StepEnd.STOP if any rank
    was asked to stop, else StepEnd.CHECKPOINT if any rank's ``checkpointer`` is ``due()``, so
    every rank saves together (then finish the step and call ``checkpointer.after_step``)."""
    value = float(loss.detach())
    # Non-finite weights make the forward pass, and so the loss, non-finite: reading every weight
    # only then keeps a pass over the model off every step (7% of a smoke classifier job's CPU
    # time); check_weights at the end finds weights the forward pass never used.
    weights_bad = watch is not None and not math.isfinite(value) and not watch.weights_finite()
    due = checkpointer is not None and checkpointer.due()
    stop_any, nonfinite_any, weights_any, due_any = all_reduce_max(
        [float(stop.requested), float(not math.isfinite(value)), float(weights_bad), float(due)], env)
    if weights_any:
        raise watch.diverged("non-finite weights", watch.steps)
    if nonfinite_any and (watch is None or watch.scaler is None):
        reason = f"non-finite training loss ({value} on rank {env.rank}) without an AMP loss scaler to skip the update"
        raise Diverged(reason) if watch is None else watch.diverged(reason, watch.steps + 1)
    if stop_any:
        return StepEnd.STOP
    return StepEnd.CHECKPOINT if due_any else StepEnd.CONTINUE


class StepWatch:
    """Counts optimizer steps and the ones the AMP GradScaler skips, and tells them from divergence.

    ``step(optimizer)`` updates through ``scaler`` if there is one: the scaler skips an update
    whose gradients are not finite and lowers its scale, which is how a skip is recognised. A
    skipped step is normal under AMP (the scale is calibrated that way); ``max_skipped_steps``
    in a row is divergence (config ``max_skipped_steps``). Non-finite weights are divergence
    (checked in check_step before an update whose loss is not finite, and by ``check_weights`` at
    the end). It also keeps
    the learning rate of the first and last steps and a digest of all of them (the schedule in
    optimizer steps, comparable between process counts), and the run's ``batch`` (BatchSplit).
    Its counts are checkpointed with the run (state_dict).
    """

    def __init__(self, model, scaler=None, max_skipped_steps=None, batch: BatchSplit = None):
        self.parameters = list(model.parameters())
        self.scaler = scaler
        self.max_skipped_steps = max_skipped_steps
        if scaler is not None and not max_skipped_steps:
            raise ValueError("a StepWatch with a GradScaler needs max_skipped_steps")
        self.batch = batch
        self.steps = 0
        self.skipped = 0
        self.consecutive_skipped = 0
        self.learning_rates = {"first": None, "last": None, "schedule_sha256": hashlib.sha256().hexdigest()}

    def weights_finite(self) -> bool:
        import torch

        return bool(torch.stack([parameter.isfinite().all() for parameter in self.parameters]).all())

    def check_weights(self, env: DistEnv) -> None:
        """Raise Diverged if any rank's weights are not finite (collective)."""
        if all_reduce_max([float(not self.weights_finite())], env)[0]:
            raise self.diverged("non-finite weights", self.steps)

    def step(self, optimizer) -> None:
        self.steps += 1
        lr = float(optimizer.param_groups[0]["lr"])
        chained = f"{self.learning_rates['schedule_sha256']}{lr!r}".encode()
        self.learning_rates = {"first": lr if self.learning_rates["first"] is None else self.learning_rates["first"],
                               "last": lr, "schedule_sha256": hashlib.sha256(chained).hexdigest()}
        if self.scaler is None:
            optimizer.step()
            return
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        if self.scaler.get_scale() >= scale:
            self.consecutive_skipped = 0
            return
        self.skipped += 1
        self.consecutive_skipped += 1
        if self.consecutive_skipped >= self.max_skipped_steps:
            raise self.diverged(f"{self.consecutive_skipped} consecutive optimizer steps skipped by the AMP loss "
                                "scaler (non-finite gradients)", self.steps)

    def diverged(self, reason: str, step: int) -> Diverged:
        error = Diverged(reason, step)
        error.record = self.record(error)
        return error

    def record(self, diverged=None) -> dict:
        """For metrics.json: steps, skipped steps, the limit, where and why training diverged, the
        learning rates and the batch split."""
        return {
            "optimizer_steps": self.steps,
            "learning_rate": dict(self.learning_rates),
            "batch": None if self.batch is None else dataclasses.asdict(self.batch),
            "skipped_steps": self.skipped,
            "max_consecutive_skipped_steps": self.max_skipped_steps if self.scaler is not None else None,
            "diverged": None if diverged is None else {"step": diverged.step, "reason": diverged.reason},
        }

    def state_dict(self):
        return {"steps": self.steps, "skipped": self.skipped, "consecutive_skipped": self.consecutive_skipped,
                "learning_rates": dict(self.learning_rates)}

    def load_state_dict(self, state):
        self.steps, self.skipped, self.consecutive_skipped = state["steps"], state["skipped"], state["consecutive_skipped"]
        self.learning_rates = dict(state["learning_rates"])


# ---- EMA ------------------------------------------------------------------------------------


class ExponentialMovingAverage:
    """``averaged = decay * averaged + (1 - decay) * model`` over parameters and buffers,
    as in the torchvision reference (torch.optim.swa_utils.AveragedModel, use_buffers=True).

    ``module`` is the averaged model to evaluate; ``update(model)`` after an optimizer step;
    the first update (and the first after ``restart()``) copies the weights.
    """

    def __init__(self, model, decay: float, device=None):
        from torch.optim.swa_utils import AveragedModel

        self.decay = decay

        def ema_average(averaged, current, num_averaged):
            return decay * averaged + (1.0 - decay) * current

        self.module = AveragedModel(model, device=device, avg_fn=ema_average, use_buffers=True)

    def update(self, model) -> None:
        self.module.update_parameters(model)

    def restart(self) -> None:
        self.module.n_averaged.fill_(0)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state):
        self.module.load_state_dict(state)


# ---- samplers -------------------------------------------------------------------------------


def distributed_sampler(dataset, env: DistEnv, seed: int, shuffle: bool = True):
    """torch DistributedSampler (also at world size 1, where it is a seeded per-epoch shuffle)."""
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed)


class RepeatedAugmentSampler:
    """The torchvision reference's RASampler (from DeiT): each index is repeated ``repetitions``
    times so the copies land on different ranks with different augmentations; each rank keeps
    ``len(dataset) // round_to * round_to / world_size`` indices per epoch (the reference rounds
    to 256; tiny smoke datasets need a smaller multiple)."""

    def __init__(self, dataset, env: DistEnv, seed: int, repetitions: int = 3, round_to: int = 256):
        self.size = len(dataset)
        self.env = env
        self.seed = seed
        self.repetitions = repetitions
        self.epoch = 0
        self.num_samples = math.ceil(self.size * repetitions / env.world_size)
        self.total_size = self.num_samples * env.world_size
        self.num_selected = self.size // round_to * round_to // env.world_size
        if self.num_selected == 0:
            raise DataError(f"repeated-augment sampler: {self.size} items round down to 0 per process "
                            f"(a multiple of {round_to}, {env.world_size} processes): too few for this recipe")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch

        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        indices = [index for index in order for _ in range(self.repetitions)]
        indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.env.rank : self.total_size : self.env.world_size][: self.num_selected])

    def __len__(self) -> int:
        return self.num_selected


class ResumableSampler:
    """Wraps a per-epoch sampler; ``set_epoch(epoch, skip_batches)`` drops the first batches of
    the epoch (done before a mid-epoch checkpoint) without loading their items."""

    def __init__(self, sampler, batch_size: int):
        self.sampler = sampler
        self.batch_size = batch_size
        self.skipped_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skipped_batches = skip_batches

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skipped_batches * self.batch_size, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skipped_batches * self.batch_size)
