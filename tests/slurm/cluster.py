"""A single-node SLURM cluster on loopback, for the SLURM tests.

It runs the real Debian daemons (`make test` installs them): munged authenticates
every SLURM message; MariaDB + slurmdbd keep job accounting, as on a production cluster, which
the tests read with `sacct` to prove that each job went through sbatch with its resources;
slurmctld schedules; slurmd runs the jobs. The node advertises fake GPUs backed by character
devices (SLURM only needs one device file per GPU), so a job that asks for k GPUs gets k of
them in CUDA_VISIBLE_DEVICES (the node's indices, since no cgroup renumbers them).

Every file lives under one scratch directory, with one exception: the link /run/slurm/conf to
that directory's configuration, the place where SLURM commands look when neither SLURM_CONF nor
/etc/slurm/slurm.conf exists (as on a "configless" node). The executor plugin removes SLURM_CONF
from the environment of the `srun` it runs inside each job, so that `srun` needs the link.

`SlurmCluster.start()` starts only these daemons, `stop()` cancels the jobs and then stops
exactly the processes `start()` started, in reverse order. One cluster runs at a time per
machine (a lock file), since /run/slurm/conf is shared.
"""

import fcntl
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMON_PROGRAMS = ["munged", "mariadb-install-db", "mariadbd", "slurmdbd", "slurmctld", "slurmd"]
CLIENT_PROGRAMS = ["mariadb", "sbatch", "srun", "scancel", "squeue", "sacct", "sinfo", "scontrol"]
SERVICE_USERS = ["munge", "mysql"]
# Character devices every Linux system has; each stands in for one GPU.
GPU_DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/urandom", "/dev/random", "/dev/tty"]
SYSTEM_CONFIG = Path("/etc/slurm/slurm.conf")
FALLBACK_CONFIG_DIR = Path("/run/slurm/conf")
LOCK_FILE = Path(tempfile.gettempdir()) / "contamination-slurm-test.lock"
STARTUP_TIMEOUT = 60.0
DATABASE_PASSWORD = "slurm-test"


class ClusterError(RuntimeError):
    """The test cluster failed to start; the message names the daemon and its log."""


def unavailable_reason() -> str | None:
    """Why the cluster cannot run on this machine (a sentence), or None if it can."""
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (its daemons run as root, munge and mysql)"
    missing = [p for p in DAEMON_PROGRAMS + CLIENT_PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"SLURM test cluster programs missing: {', '.join(missing)} (`make test-system-packages` installs it)"
    for user in SERVICE_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user '{user}' is missing (`make test-system-packages` installs it)"
    if SYSTEM_CONFIG.exists():
        return f"{SYSTEM_CONFIG} exists: jobs of the test cluster would read that cluster's configuration"
    return None


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on 127.0.0.1 that are free right now."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def node_hardware() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) of this machine as slurmd detects them (`slurmd -C`)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    return tuple(int(re.search(rf"\b{key}=(\d+)", out).group(1)) for key in ("CPUs", "RealMemory"))


class SlurmCluster:
    """One node named after this host, `gpus` fake GPUs, accounting on; files under `scratch`."""

    def __init__(self, scratch: Path, gpus: int = 4):
        if gpus > len(GPU_DEVICES):
            raise ValueError(f"at most {len(GPU_DEVICES)} fake GPUs (one per device in GPU_DEVICES)")
        self.scratch = Path(scratch)
        self.gpus = gpus
        self.node = socket.gethostname().split(".")[0]
        self.config = self.scratch / "etc" / "slurm.conf"
        self.logs = self.scratch / "log"
        self._processes: list[tuple[str, subprocess.Popen]] = []
        self._lock = None
        self._made_paths: list[Path] = []  # /run/slurm/conf and /run/slurm if it was not there

    # ---- what tests use ------------------------------------------------------------------

    def environment(self, base: dict | None = None) -> dict:
        """`base` (default: os.environ) with SLURM_CONF pointing at this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.config)
        return env

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.environment(), capture_output=True, text=True, check=check)

    def accounting(self, *selection: str) -> list[dict]:
        """sacct records (one per job or array task, steps left out) as dicts."""
        fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "AllocTRES", "Timelimit"]
        out = self.run(
            "sacct", "--allusers", "--allocations", "--parsable2", "--noheader",
            "--starttime", "now-1days", "--format", ",".join(fields), *selection,
        ).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]

    # ---- life cycle ----------------------------------------------------------------------

    def start(self) -> "SlurmCluster":
        reason = unavailable_reason()
        if reason:
            raise ClusterError(reason)
        self._lock = open(LOCK_FILE, "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # waits for another test session's cluster
        try:
            self._prepare_directories()
            ports = dict(zip(["slurmctld", "slurmd", "slurmdbd", "mariadb"], free_ports(4)))
            self._write_configs(ports)
            self._link_config()
            self._start_munge()
            self._start_database(ports["mariadb"])
            self._start_daemon("slurmdbd", ["slurmdbd", "-D"], ready=lambda: _port_open(ports["slurmdbd"]))
            self._start_daemon(
                "slurmctld", ["slurmctld", "-D", "-i"],
                ready=lambda: self.run("scontrol", "ping", check=False).returncode == 0,
            )
            self._start_daemon("slurmd", ["slurmd", "-D"], ready=self._node_idle)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this object started, newest first."""
        if any(name == "slurmctld" for name, _ in self._processes):
            self.run("scancel", "--full", "--user", "root", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run("squeue", "--noheader", check=False).stdout.strip():
                time.sleep(0.5)
        for name, process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes.clear()
        for path in reversed(self._made_paths):
            if path.is_symlink():
                path.unlink()
            else:
                path.rmdir()
        self._made_paths.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- set-up steps --------------------------------------------------------------------

    def _prepare_directories(self) -> None:
        # The munge and mysql users must reach their own directories below the scratch dir.
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.scratch.chmod(0o755)
        for name in ["etc", "log", "state", "spool"]:
            (self.scratch / name).mkdir(exist_ok=True)
        for name, user in [("munge", "munge"), ("db", "mysql")]:
            path = self.scratch / name
            path.mkdir(mode=0o755, exist_ok=True)
            shutil.chown(path, user, user)

    def _write_configs(self, ports: dict) -> None:
        cpus, memory = node_hardware()
        munge_socket = self.scratch / "munge" / "munge.socket"
        s = self.scratch
        self.config.write_text(
            f"""# Written by tests/slurm/cluster.py: a one-node test cluster on loopback.
ClusterName=contamination-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={s}/state
SlurmdSpoolDir={s}/spool
SlurmctldPidFile={s}/slurmctld.pid
SlurmdPidFile={s}/slurmd.pid
SlurmctldLogFile={s}/log/slurmctld.log
SlurmdLogFile={s}/log/slurmd.log
MailProg=/bin/true
# No cgroups in containers: track processes by parent id, bind tasks with affinity only.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job asks for all node memory and jobs run one at a time.
DefMemPerCPU=1024
ReturnToService=2
MinJobAge=300
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
# For slurmdbd this is the munge socket to use.
AccountingStoragePass={munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (self.config.parent / "gres.conf").write_text(
            f"NodeName={self.node} Name=gpu File={','.join(GPU_DEVICES[: self.gpus])}\n"
        )
        dbd_config = self.config.parent / "slurmdbd.conf"
        dbd_config.write_text(
            f"""AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
LogFile={s}/log/slurmdbd.log
PidFile={s}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadb']}
StorageUser=slurm
StoragePass={DATABASE_PASSWORD}
StorageLoc=slurm_acct_db
"""
        )
        dbd_config.chmod(0o600)  # slurmdbd refuses a readable file that holds a password

    def _link_config(self) -> None:
        if FALLBACK_CONFIG_DIR.is_symlink():
            # Left behind by a test session that was killed; the lock says it is not running.
            FALLBACK_CONFIG_DIR.unlink()
        if FALLBACK_CONFIG_DIR.exists():
            raise ClusterError(f"{FALLBACK_CONFIG_DIR} exists and is not a link made by this harness")
        if not FALLBACK_CONFIG_DIR.parent.exists():
            FALLBACK_CONFIG_DIR.parent.mkdir(parents=True)
            self._made_paths.append(FALLBACK_CONFIG_DIR.parent)
        FALLBACK_CONFIG_DIR.symlink_to(self.config.parent)
        self._made_paths.append(FALLBACK_CONFIG_DIR)

    def _start_munge(self) -> None:
        directory = self.scratch / "munge"
        key = directory / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        command = [
            "munged", "--foreground",
            f"--socket={directory / 'munge.socket'}", f"--key-file={key}",
            f"--log-file={directory / 'munged.log'}", f"--pid-file={directory / 'munged.pid'}",
            f"--seed-file={directory / 'munged.seed'}",
        ]
        self._start_daemon("munged", command, ready=(directory / "munge.socket").exists, user="munge")

    def _start_database(self, port: int) -> None:
        data = self.scratch / "db" / "data"
        sock = self.scratch / "db" / "mysqld.sock"
        with open(self.logs / "mariadb-install-db.log", "w") as output:
            subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=mysql",
                 "--auth-root-authentication-method=socket", "--skip-test-db"],
                stdout=output, stderr=subprocess.STDOUT, check=True,
            )
        command = [
            "mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
            "--bind-address=127.0.0.1", "--skip-name-resolve", "--user=mysql",
            f"--pid-file={self.scratch / 'db' / 'mysqld.pid'}", "--innodb-buffer-pool-size=64M",
        ]
        self._start_daemon("mariadbd", command, ready=sock.exists)
        subprocess.run(
            ["mariadb", f"--socket={sock}", "--user=root", "--execute",
             f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{DATABASE_PASSWORD}';"
             " GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"],
            capture_output=True, text=True, check=True,
        )

    def _node_idle(self) -> bool:
        state = self.run("sinfo", "--noheader", "--Node", "--format=%t", check=False).stdout.split()
        return state == ["idle"]

    def _start_daemon(self, name: str, command: list[str], ready, user: str | None = None) -> None:
        log = self.logs / f"{name}.out"
        with open(log, "w") as output:
            process = subprocess.Popen(
                command,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                user=user,
                group=user,
                start_new_session=True,  # a Ctrl-C in the test session must reach stop(), not them
            )
        self._processes.append((name, process))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            if process.poll() is not None:
                raise ClusterError(f"{name} exited with status {process.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} not ready after {STARTUP_TIMEOUT:.0f} s; see {log} and {self.logs}")
            time.sleep(0.2)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
