"""A real Dask cluster on 127.0.0.1 for the tests: `dask scheduler` and `dask worker` processes.

Each worker is kept running the way its systemd unit (`Restart=always`) keeps it:
`dask worker` exits when it loses its scheduler, and is started again. Every
process carries an environment marker (inherited by the modules a worker
starts), so `Cluster.close()` leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from chute.entry import sweep
from tests.harness import wait_until

DASK = Path(sys.executable).with_name("dask")


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA of our own and one certificate it signed for 127.0.0.1 (openssl): {"ca_file", "cert", "key"}."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr = (folder / n for n in ("ca.pem", "ca.key", "cert.pem", "cert.key", "cert.csr"))
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=chute test CA",
        ],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    return {"ca_file": ca, "cert": cert, "key": key}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Supervised:
    """One command, started again whenever it exits until `stop()` (systemd's Restart=always)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str]):
        self.argv, self.log_path, self.env = argv, log, env
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._start()
        self.thread = threading.Thread(target=self._keep, daemon=True)
        self.thread.start()

    def _start(self) -> None:
        with self.lock, open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env
            )
            self.starts += 1

    def _keep(self) -> None:
        while not self.stopping.is_set():
            self.proc.wait()
            if self.stopping.wait(0.2):  # systemd's RestartSec
                return
            self._start()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            if self.proc.poll() is None:
                self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(5)


class Cluster:
    """A scheduler on a fixed port (so it can be restarted in place) and named workers."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, tls: dict[str, Path] | None = None):
        """`tls`: {"ca_file", "cert", "key"} for every process of the cluster (then the address is tls://)."""
        self.root = root
        self.port = free_port()
        self.address = f"{'tls' if tls else 'tcp'}://127.0.0.1:{self.port}"
        self.tls = (
            []
            if not tls
            else ["--tls-ca-file", str(tls["ca_file"]), "--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"])]
        )
        self.marker = f"CHUTE_TEST_DASK={uuid.uuid4().hex}"
        self.env = {**os.environ, **(env or {}), "CHUTE_TEST_DASK": self.marker.split("=", 1)[1]}
        self.env.pop("NOTIFY_SOCKET", None)
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, Supervised] = {}
        self.start_scheduler()

    def start_scheduler(self) -> None:
        with open(self.root / "scheduler.log", "ab") as log:
            self.scheduler = subprocess.Popen(
                [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard", *self.tls],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )

    def kill_scheduler(self) -> None:
        self.scheduler.kill()
        self.scheduler.wait()

    def add_worker(self, name: str, env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()) -> Supervised:
        """A `dask worker --nthreads 1` named `name` (its log: root/worker-NAME.log), restarted when it exits."""
        argv = [
            *wrap,
            str(DASK),
            "worker",
            self.address,
            "--nthreads",
            "1",
            "--name",
            name,
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            "--death-timeout",
            "60",
            "--local-directory",
            str(self.root / "dask-scratch"),
            *self.tls,
        ]
        worker = Supervised(argv, self.root / f"worker-{name}.log", {**self.env, **(env or {})})
        self.workers[name] = worker
        return worker

    def addresses(self) -> dict[str, str]:
        """Worker name -> address, as the scheduler knows them now ({} while it is not listening)."""
        from distributed import Client
        from distributed.security import Security

        try:  # a Client that fails to connect leaves its event loop thread behind: try the port first
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except OSError:
            return {}
        security = None
        if self.tls:
            ca, cert, key = self.tls[1], self.tls[3], self.tls[5]
            security = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
        with Client(self.address, timeout=10, set_as_default=False, security=security) as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
        return {w["name"]: address for address, w in info.items()}

    def wait_for_workers(self, count: int, timeout: float = 60) -> dict[str, str]:
        return wait_until(lambda: (a := self.addresses()) and len(a) >= count and a, timeout, interval=0.3)

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        if self.scheduler is not None and self.scheduler.poll() is None:
            self.scheduler.send_signal(signal.SIGTERM)
            try:
                self.scheduler.wait(10)
            except subprocess.TimeoutExpired:
                self.scheduler.kill()
                self.scheduler.wait()
        sweep(self.marker)
