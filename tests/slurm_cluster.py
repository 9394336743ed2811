"""A throwaway single-node SLURM cluster on this machine, built from Debian's packages, for
the test of ``profiles/slurm``.

munged on a private socket, MariaDB + slurmdbd (so that ``sacct`` works), slurmctld and one
slurmd whose node has a counted GRES ``gpu`` backed by dummy device files (so that jobs
asking ``--gpus=1`` schedule and get ``CUDA_VISIBLE_DEVICES``). Everything listens on the
loopback address only, on ports picked free at start; every daemon runs in the foreground
as a child of this process and is ended by its pid; all state lives in one temporary
folder, removed at the end. SLURM's client commands reach this cluster through wrappers
(``SlurmCluster.bin``, put first on PATH by ``SlurmCluster.env()``) that set SLURM_CONF:
the executor plugin's job step drops SLURM_CONF from the environment of its inner ``srun``.

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "true"], env=cluster.env(), check=True)

``python tests/slurm_cluster.py`` brings one up and keeps it until Ctrl-C (for debugging:
it prints the ``export`` lines that point a shell at it).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# What the cluster needs (the same list is installed by .ci/run).
PACKAGES = ("munge", "slurmctld", "slurmd", "slurmdbd", "slurm-client", "mariadb-server")
DAEMON_BINARIES = ("munged", "munge", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd",
                   "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "salloc", "squeue", "sacct", "sacctmgr", "scontrol", "scancel",
           "sinfo", "sshare", "sstat")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ClusterError(RuntimeError):
    """The cluster could not be brought up; the message carries the daemons' logs."""


def which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), SYSTEM_PATH]))


def missing_binaries() -> list[str]:
    return [b for b in DAEMON_BINARIES + CLIENTS if which(b) is None]


def unavailable_reason() -> str | None:
    """Why this machine cannot bring up the cluster (a test's skip reason), or None. It
    can when it runs as root and the packages are installed or installable with apt-get."""
    if os.geteuid() != 0:
        return "bringing up a SLURM cluster needs root (daemons, munge key, mknod)"
    if missing_binaries() and which("apt-get") is None:
        return f"SLURM packages missing ({', '.join(missing_binaries())}) and no apt-get to install them"
    return None


def install_packages(timeout: int = 900) -> None:
    """Install PACKAGES with apt-get (as .ci/run does) if any binary is missing."""
    if not missing_binaries():
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if missing_binaries():
        raise ClusterError(f"still missing after apt-get install: {', '.join(missing_binaries())}")


def free_ports(n: int, address: str = "127.0.0.1") -> list[int]:
    """n distinct TCP ports free on ``address`` right now (held together while picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((address, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def node_hardware() -> dict[str, int]:
    """CPUs, Boards, SocketsPerBoard, CoresPerSocket, ThreadsPerCore, RealMemory as
    ``slurmd -C`` reports them (a node configured above them is drained)."""
    out = subprocess.run([which("slurmd"), "-C"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    first = out.splitlines()[0]
    fields = dict(kv.split("=", 1) for kv in first.split() if "=" in kv)
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    return {k: int(fields[k]) for k in keys if k in fields}


class SlurmCluster:
    """One controller, one node (``node``), one partition, one account; see the module doc.

    ``gpus``: the node's GRES gpu count; ``mem_fraction``: the share of the memory that
    ``slurmd -C`` reports that the node offers (never more, or it is drained);
    ``def_mem_per_cpu``: MB a job gets per CPU when it asks no memory (without it a job
    takes the whole node's memory); ``min_job_age``: seconds a finished job stays visible
    to squeue (the plugin's squeue status command needs a few minutes)."""

    # Every daemon is named "localhost" and addressed as 127.0.0.1, whatever this machine's
    # hostname resolves to: with CommunicationParameters=NoCtldInAddrAny,NoInAddrAny (and
    # DbdAddr) each binds to that address only.
    address = "127.0.0.1"
    host = "localhost"
    node = "ptnode"
    cluster_name = "ptmech"
    partition = "ptmech-test"
    account = "ptmech-test"

    def __init__(self, gpus: int = 2, mem_fraction: float = 0.75, def_mem_per_cpu: int = 512,
                 min_job_age: int = 300, timeout: float = 60.0, keep: bool = False):
        self.gpus, self.mem_fraction, self.def_mem_per_cpu = gpus, mem_fraction, def_mem_per_cpu
        self.min_job_age, self.timeout, self.keep = min_job_age, timeout, keep
        self.root: Path | None = None
        self.bringup_seconds: float | None = None
        self._procs: list[tuple[str, subprocess.Popen]] = []

    # --- paths ---------------------------------------------------------------------------

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def pids(self) -> dict[str, int]:
        """The pid of each daemon this object started."""
        return {name: p.pid for name, p in self._procs}

    def env(self, base: dict | None = None) -> dict:
        """An environment whose SLURM commands talk to this cluster."""
        e = dict(os.environ if base is None else base)
        e["PATH"] = os.pathsep.join([str(self.bin), e.get("PATH", ""), SYSTEM_PATH])
        e["SLURM_CONF"] = str(self.conf)
        for var in [v for v in e if v.startswith(("SBATCH_", "SRUN_", "SALLOC_"))]:
            del e[var]
        return e

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (through the wrappers) against this cluster."""
        proc = subprocess.run([str(self.bin / args[0]), *args[1:]], env=self.env(), capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc

    # --- bring-up ------------------------------------------------------------------------

    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        t0 = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="ptmech-slurm-"))
        try:
            for sub in ("etc", "bin", "log", "munge", "db", "run", "state", "spool", "dev", "tmp"):
                (self.root / sub).mkdir(mode=0o700)
            # munged wants every folder above its socket searchable by all
            self.root.chmod(0o711)
            (self.root / "munge").chmod(0o711)
            self._ports = dict(zip(("mysql", "dbd", "ctld", "slurmd"), free_ports(4, self.address)))
            self.step_seconds = {}
            for step in (self._write_wrappers, self._start_munge, self._start_mariadb, self._write_configs,
                         self._start_slurmdbd, self._register_accounts, self._start_slurmctld,
                         self._start_slurmd):
                t = time.monotonic()
                step()
                self.step_seconds[step.__name__.strip("_")] = round(time.monotonic() - t, 2)
        except BaseException as e:
            report = self.logs()
            self.stop()
            if isinstance(e, ClusterError):
                raise ClusterError(f"{e}\n\n{report}") from None
            raise
        self.bringup_seconds = time.monotonic() - t0

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        out = open(self.log_dir / f"{name}.out", "ab")
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env or self.env(), cwd=self.root, start_new_session=True)
        finally:
            out.close()
        self._procs.append((name, proc))
        return proc

    def _wait(self, what: str, ready, proc: subprocess.Popen | None = None, timeout: float | None = None):
        """Poll ``ready()`` (truthy = ready; a string = fail at once with it) until it is,
        ``proc`` dies or ``timeout`` seconds pass."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last = None
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise ClusterError(f"{what}: the daemon exited with status {proc.returncode}")
            try:
                last = ready()
            except (subprocess.SubprocessError, OSError, ClusterError) as e:
                last = e
            if isinstance(last, str):
                raise ClusterError(f"{what}: {last}")
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.2)
        raise ClusterError(f"{what}: not ready after {timeout or self.timeout:.0f} s (last check: {last!r})")

    def _write_wrappers(self) -> None:
        for name in CLIENTS:
            path = self.bin / name
            path.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{which(name)}" "$@"\n')
            path.chmod(0o755)

    def _start_munge(self) -> None:
        key = self.etc / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        d = self.root / "munge"
        proc = self._spawn("munged", [
            which("munged"), "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
            f"--log-file={self.log_dir / 'munged.log'}", f"--pid-file={d / 'munged.pid'}",
            f"--seed-file={d / 'munged.seed'}", "--num-threads=2",
        ])

        def ready():
            return self.munge_socket.exists() and subprocess.run(
                [which("munge"), "-n", "-S", str(self.munge_socket)], capture_output=True, timeout=10
            ).returncode == 0

        self._wait("munged", ready, proc)

    def _start_mariadb(self) -> None:
        data, sock = self.root / "db" / "data", self.root / "db" / "mysql.sock"
        self._mysql_socket = sock
        proc = subprocess.run([
            which("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
            "--auth-root-authentication-method=socket", "--skip-test-db", "--skip-name-resolve",
        ], capture_output=True, text=True, timeout=120)
        (self.log_dir / "mariadb-install-db.out").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed ({proc.returncode})")
        proc = self._spawn("mariadbd", [
            which("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={sock}",
            f"--port={self._ports['mysql']}", f"--bind-address={self.address}", "--skip-name-resolve",
            f"--pid-file={self.root / 'db' / 'mariadbd.pid'}", "--user=root",
            f"--log-error={self.log_dir / 'mariadbd.log'}", f"--tmpdir={self.root / 'tmp'}",
            "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--performance-schema=OFF",
        ])
        self._db_password = secrets.token_hex(16)

        def sql(statement: str) -> subprocess.CompletedProcess:
            return subprocess.run([which("mariadb"), "--no-defaults", f"--socket={sock}", "-u", "root",
                                   "-e", statement], capture_output=True, text=True, timeout=20)

        self._wait("mariadbd", lambda: sock.exists() and sql("SELECT 1").returncode == 0, proc)
        done = sql(f"CREATE USER 'slurm'@'{self.address}' IDENTIFIED BY '{self._db_password}'; "
                   f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{self.address}';")
        if done.returncode != 0:
            raise ClusterError(f"creating the slurm database user failed: {done.stderr}")

    def _write_configs(self) -> None:
        host = self.host
        hw = node_hardware()
        hw["RealMemory"] = max(256, int(hw.get("RealMemory", 1024) * self.mem_fraction))
        node_hw = " ".join(f"{k}={v}" for k, v in hw.items())
        dev = self.root / "dev"
        for i in range(self.gpus):
            # slurmd drops a GRES gpu that has no File=: dummy character devices stand in.
            os.mknod(dev / f"gpu{i}", 0o600 | 0o020000, os.makedev(195, i))
        state, spool, log = self.root / "state", self.root / "spool", self.log_dir
        munge = f"socket={self.munge_socket}"
        self.conf.write_text(f"""\
ClusterName={self.cluster_name}
SlurmctldHost={host}({self.address})
SlurmctldPort={self._ports['ctld']}
SlurmdPort={self._ports['slurmd']}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
AuthInfo={munge}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}
SlurmdPidFile={self.root / 'run' / 'slurmd.pid'}
SlurmctldLogFile={log / 'slurmctld.log'}
SlurmdLogFile={log / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={self.address}
AccountingStoragePort={self._ports['dbd']}
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
JobCompType=jobcomp/none
MinJobAge={self.min_job_age}
DefMemPerCPU={self.def_mem_per_cpu}
NodeName={self.node} NodeAddr={self.address} NodeHostname={host} {node_hw} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        last = self.gpus - 1
        files = f"{dev}/gpu[0-{last}]" if last > 0 else f"{dev}/gpu0"
        (self.etc / "gres.conf").write_text(f"AutoDetect=off\nNodeName={self.node} Name=gpu File={files}\n")
        dbd = self.etc / "slurmdbd.conf"
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo={munge}
DbdHost={host}
DbdAddr={self.address}
DbdPort={self._ports['dbd']}
CommunicationParameters=NoInAddrAny
SlurmUser=root
LogFile={log / 'slurmdbd.log'}
PidFile={self.root / 'run' / 'slurmdbd.pid'}
StorageType=accounting_storage/mysql
StorageHost={self.address}
StoragePort={self._ports['mysql']}
StorageUser=slurm
StoragePass={self._db_password}
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)

    def _start_slurmdbd(self) -> None:
        proc = self._spawn("slurmdbd", [which("slurmdbd"), "-D"])
        self._wait("slurmdbd", lambda: self.run("sacctmgr", "-n", "list", "cluster", check=False,
                                                timeout=10).returncode == 0, proc)

    def _register_accounts(self) -> None:
        """The cluster, an account, and root in it (one sacctmgr session: each call costs
        a second or more)."""
        commands = (f"add cluster {self.cluster_name}\n"
                    f"add account {self.account} cluster={self.cluster_name}\n"
                    f"add user root account={self.account} cluster={self.cluster_name}\n")
        proc = subprocess.run([str(self.bin / "sacctmgr"), "-i"], input=commands, env=self.env(),
                              capture_output=True, text=True, timeout=60)
        accounts = self.run("sacctmgr", "-n", "-P", "list", "associations", "user=root",
                            "format=account").stdout.split()
        if self.account not in accounts:
            raise ClusterError(f"registering account {self.account} failed: {proc.stdout}{proc.stderr}")

    def _start_slurmctld(self) -> None:
        proc = self._spawn("slurmctld", [which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: "UP" in self.run("scontrol", "ping", check=False, timeout=10).stdout,
                   proc)

    def _start_slurmd(self) -> None:
        proc = self._spawn("slurmd", [which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])

        def ready():
            state = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False).stdout.strip()
            if re.match(r"(drain|down|fail)", state):
                return f"node {self.node} is {state}:\n" + self.run("scontrol", "show", "node", self.node,
                                                                   check=False).stdout
            return state.startswith(("idle", "mixed", "allocated"))

        self._wait("slurmd", ready, proc)
        gres = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%G").stdout.strip()
        if f"gpu:{self.gpus}" not in gres:
            raise ClusterError(f"node {self.node} offers GRES {gres!r}, not gpu:{self.gpus}")

    # --- teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every job, end each daemon this object started (by its pid: SIGTERM,
        then SIGKILL after 15 s) in the reverse order of their start, remove the state."""
        alive = {name for name, p in self._procs if p.poll() is None}
        if {"slurmctld", "slurmd"} <= alive:
            try:
                self.run("scancel", "--full", f"--partition={self.partition}", check=False, timeout=10)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and self.run(
                        "squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED",
                        check=False, timeout=10).stdout.strip():
                    time.sleep(0.5)
            except (subprocess.SubprocessError, OSError):
                pass
        for name, proc in reversed(self._procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)
        self._procs.clear()
        if self.root is not None and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def logs(self, lines: int = 40) -> str:
        """The last lines of every daemon's log (for failure messages)."""
        if self.root is None or not self.log_dir.exists():
            return "(no logs)"
        parts = []
        for path in sorted(self.log_dir.iterdir()):
            text = path.read_text(errors="replace").splitlines()
            if text:
                parts.append(f"--- {path.name} (last {min(lines, len(text))} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(logs empty)"


def _main() -> None:
    reason = unavailable_reason()
    if reason:
        sys.exit(reason)
    install_packages()

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # also when started in the background,
    signal.signal(signal.SIGINT, interrupt)   # where SIGINT is ignored
    with SlurmCluster(keep="--keep" in sys.argv) as c:
        print(f"up in {c.bringup_seconds:.1f} s {c.step_seconds}; state in {c.root}; pids {c.pids}", flush=True)
        print(f"export PATH={c.bin}:$PATH SLURM_CONF={c.conf}", flush=True)
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()
