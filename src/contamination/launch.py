"""Starting a training command with one process per GPU, on one node or several.

``python -m contamination launch --nodes N --processes-per-node G --cpus-per-node C -- <verb> ...``
runs ``python -m contamination <verb> ...``:
- one process (G <= 1, one node): directly;
- one node: ``torchrun --standalone`` with G processes;
- N > 1 nodes (inside a SLURM allocation of N nodes, G GPUs each): ``srun`` starts one torchrun
  per node, and the torchruns meet at a c10d rendezvous hosted on this node (the first of the
  allocation, where the job's script runs). ``--standalone`` is never used across nodes: it
  would start N separate single-node trainings.
The profile (profiles/slurm) sets nodes and processes per node from its GPUS_PER_NODE site
setting; without it (a laptop, the smoke run) every job is one process.
"""

import os
import shlex
import shutil
import socket
import sys

from contamination.errors import ConfigError

# c10d rendezvous ports: spread by job id so that jobs sharing a head node do not collide.
RENDEZVOUS_PORT_BASE, RENDEZVOUS_PORT_SPAN = 29500, 2000


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("launch", help="run a training verb with one process per GPU, on one or more nodes")
    parser.add_argument("--nodes", type=int, default=1, help="nodes of the job (SLURM allocation)")
    parser.add_argument("--processes-per-node", type=int, default=1, help="processes (GPUs) per node")
    parser.add_argument("--cpus-per-node", type=int, default=1, help="CPUs of the job on each node")
    parser.add_argument("command", nargs="+", help="-- then the verb and its arguments")
    parser.set_defaults(run=run_launch)


def run_launch(args) -> None:
    command = launch_command(args.nodes, args.processes_per_node, args.cpus_per_node, args.command,
                             job_id=os.environ.get("SLURM_JOB_ID"), host=socket.gethostname())
    sys.stdout.flush()
    os.execvp(command[0], command)


def launcher_command(nodes: int, processes_per_node: int, cpus_per_node: int) -> str:
    """What a training rule's shell runs its verb with: ``python -m contamination``, or with
    several processes the ``launch`` verb (quoted, ready to prefix the verb)."""
    if nodes == 1 and processes_per_node == 1:
        return "python -m contamination"
    return shlex.join(["python", "-m", "contamination", "launch", f"--nodes={nodes}",
                       f"--processes-per-node={processes_per_node}", f"--cpus-per-node={cpus_per_node}", "--"])


def launch_command(nodes: int, processes_per_node: int, cpus_per_node: int, verb: list, job_id, host) -> list:
    """The argv that runs ``python -m contamination <verb...>`` with that process layout."""
    if nodes < 1 or processes_per_node < 1 or cpus_per_node < 1:
        raise ConfigError(f"launch: nodes ({nodes}), processes per node ({processes_per_node}) and CPUs per node "
                          f"({cpus_per_node}) must be at least 1")
    module = ["-m", "contamination", *verb]
    if nodes == 1 and processes_per_node == 1:
        return [sys.executable, *module]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    if nodes == 1:
        return [*torchrun, "--standalone", f"--nproc-per-node={processes_per_node}", *module]
    if job_id is None:
        raise ConfigError(f"launch: {nodes} nodes need a SLURM allocation (SLURM_JOB_ID is not set)")
    if shutil.which("srun") is None:
        raise ConfigError(f"launch: {nodes} nodes need srun on PATH")
    port = RENDEZVOUS_PORT_BASE + int(job_id) % RENDEZVOUS_PORT_SPAN
    return [
        # --overlap: the step snakemake's job step runs in holds this node's CPUs and GPUs.
        "srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
        f"--cpus-per-task={cpus_per_node}", "--kill-on-bad-exit=1",
        *torchrun, f"--nnodes={nodes}", f"--nproc-per-node={processes_per_node}",
        "--rdzv-backend=c10d", f"--rdzv-endpoint={host}:{port}", f"--rdzv-id={job_id}", *module,
    ]
