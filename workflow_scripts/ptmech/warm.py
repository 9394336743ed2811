"""Warm starts: run a short job's Python script in a process forked from a server that has
already imported the heavy libraries, so that each of many small jobs does not spend seconds
importing torch and transformers (about 4 s a job on a laptop, against well under a second of
work for each of the organism's model jobs).

A script calls ``handoff(preload)`` as its first statement. Unless warm starts are off (the
default; ``PTMECH_WARM_START=1`` turns them on) or this process already is a warm child, it

1. connects to the server for this interpreter, environment and ``preload`` (a Unix socket
   in ``ptmech-warm-<uid>/`` under ``$XDG_RUNTIME_DIR`` or the temporary folder, a folder
   only this user may enter, and the server serves only this user's processes; the first
   job starts the server, under a lock, and waits for it to import ``preload`` and what the
   job itself had imported, such as Snakemake's script preamble),
2. sends its script path, arguments, working folder, environment and its stdin, stdout and
   stderr,
3. waits while the server forks a child that takes over those files, folder, environment
   and arguments and runs the script from its first line (``runpy``; this time
   ``handoff`` returns at once), and
4. exits with the child's exit status.

The child computes exactly what a fresh process would: the same code on the same inputs,
with the libraries imported before the fork instead of after it. The server imports only
the libraries in ``preload`` (never this project's own modules, so edits to them take effect
at the next job), never runs a computation (no thread pools, no CUDA: forking after either
is unsafe) and is keyed by everything a child inherits from it: the interpreter, the whole
environment but ``CUDA_VISIBLE_DEVICES`` (applied in the child; CUDA starts only there), the
working folder when ``PYTHONPATH`` holds a relative entry, ``preload``, and the modification
times of this file and of the preloaded packages. A job that is killed takes its child with
it (the server sees the connection close); the server exits after ``PTMECH_WARM_IDLE``
seconds (default 30) without a job. If anything about the server fails before the child
starts, the script runs in its own process as if warm starts were off.

Standard library only: the server runs this file as a script, so it imports nothing of
ptmech.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import runpy
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback

# What ptmech's jobs import (models, caches, tables, figures): one server serves them all.
PRELOAD = ("torch", "transformers", "transformers.models.llama.modeling_llama", "numpy", "pandas", "h5py",
           "sklearn.linear_model", "matplotlib.pyplot", "seaborn")
ENABLE = "PTMECH_WARM_START"
IDLE = "PTMECH_WARM_IDLE"
PER_JOB_ENV = ("CUDA_VISIBLE_DEVICES",)
START_TIMEOUT_S = 300.0
_HEADER = struct.Struct("!I")


# ------------------------------------------------------------------------------ the job side

def enabled() -> bool:
    return os.environ.get(ENABLE, "0") == "1" and sys.platform.startswith("linux") and hasattr(os, "fork")


def in_child() -> bool:
    """Whether this process is a warm child (its script is already running warm)."""
    return bool(getattr(sys, "_ptmech_warm_child", False))


def handoff(preload: list[str] | tuple[str, ...] = PRELOAD) -> None:
    """Run the calling script (``sys.argv[0]``) in a warm child and exit with its status; or
    return, to run it here, when warm starts are off, when this process is the warm child,
    or when no server could take the job."""
    if in_child() or not enabled():
        return
    status = run_warm(os.path.abspath(sys.argv[0]), list(sys.argv), list(preload))
    if status is None:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    raise SystemExit(status)


def server_key(preload: list[str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in PER_JOB_ENV}
    # a relative or empty PYTHONPATH entry (the working folder) puts the job's folder on its path
    relative = any(not os.path.isabs(p) for p in env["PYTHONPATH"].split(os.pathsep)) if "PYTHONPATH" in env else False
    mtimes = []
    for name in [__file__] + [_origin(m) for m in preload]:
        with contextlib.suppress(OSError, TypeError):
            mtimes.append((name, os.stat(name).st_mtime_ns))
    blob = json.dumps([sys.executable, sys.version, sorted(env.items()), os.getcwd() if relative else None,
                       sorted(preload), mtimes])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _origin(module: str) -> str | None:
    """The file of ``module``'s top-level package, without importing it."""
    with contextlib.suppress(Exception):
        spec = importlib.util.find_spec(module.split(".")[0])
        return spec.origin if spec else None
    return None


def socket_path(key: str) -> str | None:
    """The server's socket, in a folder of this user's that no one else may enter (a job
    hands its environment and streams to whoever listens there), or None if that folder
    cannot be had."""
    folder = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), f"ptmech-warm-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return os.path.join(folder, f"{key}.sock")


def run_warm(script: str, argv: list[str], preload: list[str]) -> int | None:
    """The exit status of ``script`` run by a warm child, or None if no child started."""
    path = socket_path(server_key(preload))
    if path is None:
        return None
    started = ""
    try:
        conn = _connect(path)
        if conn is None:
            conn = _start_and_connect(path, preload)
        if conn is None:
            return None
        with conn:
            message = json.dumps({"script": script, "argv": argv, "cwd": os.getcwd(),
                                  "env": dict(os.environ)}).encode()
            socket.send_fds(conn, [_HEADER.pack(len(message)) + message], [0, 1, 2])
            reader = conn.makefile("r")
            started = reader.readline()
            if not started.startswith("started "):
                return None  # the server went away before forking: run cold
            finished = reader.readline()
    except OSError:
        if not started.startswith("started "):
            return None
        finished = ""  # the script has started: it must not run a second time
    if finished.startswith("exit "):
        return int(finished.split()[1])
    print(f"ptmech.warm: lost the warm server while the job's child (pid {started.split()[1]}) ran; "
          "rerun the job, or set PTMECH_WARM_START=0", file=sys.stderr)
    return 1


def _connect(path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        return conn
    except OSError:
        conn.close()
        return None


def _start_and_connect(path: str, preload: list[str]) -> socket.socket | None:
    """Start the server under a lock (one server per key, however many jobs start at once)
    and connect to it once it listens."""
    import fcntl

    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)
        if conn is not None:
            return conn
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a server that died without cleaning up
        # what this job has imported so far (its interpreter's start and its preamble), not ptmech
        also = sorted(m for m in sys.modules if not m.startswith(("_", "ptmech")) and m != "__main__")
        # -c, so that no folder of ptmech's modules is on the server's path; its log next to the socket
        code = f"import sys; del sys.path[0]; import runpy; runpy.run_path({os.path.abspath(__file__)!r}, run_name='__main__')"
        with open(path + ".log", "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, "serve", path, json.dumps(preload), json.dumps(also)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if os.path.exists(path):
                return _connect(path)
            if proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None


# ------------------------------------------------------------------------------ the server

def serve(path: str, preload: list[str], also: list[str], idle: float) -> None:
    for name in preload:
        importlib.import_module(name)  # a module that fails to import should fail the job cold
    for name in also:  # what the first job had imported before its handoff (its preamble)
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    base_path = list(sys.path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ready = f"{path}.{os.getpid()}"
    server.bind(ready)
    os.chmod(ready, 0o600)
    server.listen(64)
    os.rename(ready, path)  # clients connect only once the imports are done
    inode = os.stat(path).st_ino
    children: dict[int, socket.socket] = {}
    killed: dict[int, float] = {}  # child -> when its job went away
    last = time.monotonic()
    try:
        while True:
            conns = list(children.values())
            readable, _, _ = select.select([server, *conns], [], [], 0.2)
            for conn in readable:
                if conn is server:
                    try:
                        client, _ = server.accept()
                    except OSError:
                        continue
                    if _peer_uid(client) != os.getuid():  # only this user's jobs
                        client.close()
                        continue
                    pid = _fork_job(client, server, conns, base_path)
                    if pid is not None:
                        children[pid] = client
                elif _closed(conn):  # the job is gone: so is its child
                    for pid, c in children.items():
                        if c is conn:
                            killed.setdefault(pid, time.monotonic())
                            _kill(pid, signal.SIGTERM if time.monotonic() - killed[pid] < 5 else signal.SIGKILL)
            for pid, status in _reaped():
                killed.pop(pid, None)
                conn = children.pop(pid, None)
                if conn is not None:
                    with contextlib.suppress(OSError):
                        conn.sendall(f"exit {status}\n".encode())
                    conn.close()
            if children:
                last = time.monotonic()
            elif time.monotonic() - last > idle:
                return
    finally:
        server.close()
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == inode:
                os.unlink(path)


def _closed(conn: socket.socket) -> bool:
    try:
        return not conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _fork_job(client: socket.socket, server: socket.socket, conns: list[socket.socket],
              base_path: list[str]) -> int | None:
    fds: list[int] = []
    try:
        client.settimeout(30)  # a job that connects and sends nothing must not stall the others
        data, fds, _, _ = socket.recv_fds(client, 1 << 16, 3)
        (size,) = _HEADER.unpack(data[:_HEADER.size])
        data = data[_HEADER.size:]
        while len(data) < size:
            chunk = client.recv(size - len(data))
            if not chunk:
                raise OSError("the job closed its connection")
            data += chunk
        job = json.loads(data)
        if len(fds) != 3:
            raise OSError("the job sent no stdin, stdout and stderr")
    except (OSError, ValueError, struct.error):
        for fd in fds:
            os.close(fd)
        client.close()
        return None
    client.settimeout(None)
    pid = os.fork()
    if pid == 0:
        server.close()
        for c in conns:
            c.close()
        client.close()
        _run_child(job, fds, base_path)  # never returns
    for fd in fds:
        os.close(fd)
    client.sendall(f"started {pid}\n".encode())
    return pid


def _run_child(job: dict, fds: list[int], base_path: list[str]) -> None:
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, as in a fresh process
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for stream in (sys.stdout, sys.stderr):  # buffered as a fresh process would buffer them
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=stream.isatty() or stream is sys.stderr)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = list(job["argv"])
        script = job["script"]
        sys.path[:] = [os.path.dirname(script), *base_path]  # as ``python script`` starts
        sys._ptmech_warm_child = True
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as stop:
            if stop.code is None:
                code = 0
            elif isinstance(stop.code, int):
                code = stop.code
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException as error:
            tb = error.__traceback__  # from the script's own frames, as a fresh process prints it
            while tb is not None and tb.tb_frame.f_code.co_filename != script:
                tb = tb.tb_next
            traceback.print_exception(type(error), error, tb or error.__traceback__)
            code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code & 0xFF if code >= 0 else 1)


def _reaped() -> list[tuple[int, int]]:
    out = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        code = os.waitstatus_to_exitcode(status)
        out.append((pid, code if code >= 0 else 128 - code))  # killed by signal n: 128 + n, as a shell says


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "serve":
    serve(sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), float(os.environ.get(IDLE, "30")))
