"""An inbox that is a real Samba share: files put with `smbclient` arrive through smbd (contract §5.2).

smbd runs in the foreground on 127.0.0.1 with a private smb.conf, as root (it must be
root to start), sharing the inbox for guests with `force user = root`. The daemon
watches the server-side folder: smbd's writes are local, so inotify sees them and
/proc shows smbd holding the file open until the client closes it. (That works here
because the daemon, like smbd, runs as root; see the xfail in test_daemon.py for a
daemon that cannot see smbd in /proc.)

Mounting the share with `mount -t cifs`, to see `watch: auto` choose polling on a
real cifs mount, needs cifs in the kernel: the test says why it skips where it is not.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chute.entry import sweep

from tests.conftest import require_tool
from tests.harness import Daemon, Setup, event_time, files, ledger_states, sha256, wait_until

SETTLE = 0.3

SERVER_CONF = """\
[global]
  server role = standalone server
  interfaces = lo
  bind interfaces only = yes
  smb ports = {port}
  disable netbios = yes
  server min protocol = SMB2
  map to guest = Bad User
  private dir = {state}/private
  lock directory = {state}/lock
  state directory = {state}/state
  pid directory = {state}/pid
  cache directory = {state}/cache
  ncalrpc dir = {state}/ncalrpc
  passdb backend = tdbsam:{state}/private/passdb.tdb
  log file = {state}/log.smbd
  max log size = 0
  load printers = no
  printcap name = /dev/null
  disable spoolss = yes

[inbox]
  path = {inbox}
  read only = no
  guest ok = yes
  force user = root
"""

CLIENT_CONF = """\
[global]
  client min protocol = SMB2
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Share:
    """A running smbd sharing `inbox` as //127.0.0.1/inbox on `port`."""

    inbox: Path
    port: int
    client_conf: Path
    log: Path
    smbclient: str

    def put(self, local: Path, remote: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """`smbclient -c 'put local remote'` as a guest; the remote name goes in quoted."""
        return subprocess.run(self.put_command(local, remote), capture_output=True, text=True, timeout=timeout)

    def put_command(self, local: Path, remote: str) -> list[str]:
        return [
            self.smbclient,
            "//127.0.0.1/inbox",
            "-p",
            str(self.port),
            "-N",
            f"--configfile={self.client_conf}",
            "-c",
            f'put "{local}" "{remote}"',
        ]


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Share]:
    smbd = require_tool("smbd", package="samba")
    smbclient = require_tool("smbclient", package="smbclient")
    if os.geteuid() != 0:
        pytest.skip("smbd, the Samba server these tests share the inbox with, only starts as root")
    state = tmp_path / "samba"
    for sub in ("private", "lock", "state", "pid", "cache", "ncalrpc"):
        (state / sub).mkdir(parents=True)
    inbox = tmp_path / "in"
    inbox.mkdir()
    port = free_port()
    conf = state / "smb.conf"
    conf.write_text(SERVER_CONF.format(port=port, state=state, inbox=inbox))
    client_conf = state / "client.conf"
    client_conf.write_text(CLIENT_CONF)
    marker = f"CHUTE_TEST_SMBD={uuid.uuid4().hex}"
    env = dict(os.environ, CHUTE_TEST_SMBD=marker.split("=", 1)[1])
    out = open(state / "smbd.out", "wb")
    # A session of its own: on SIGTERM smbd signals its whole process group, which must not be pytest's.
    proc = subprocess.Popen(
        [smbd, "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:

        def listening():
            if proc.poll() is not None:
                raise AssertionError(f"smbd exited ({proc.returncode}):\n{(state / 'smbd.out').read_text()[-2000:]}")
            return accepts(port)

        wait_until(listening, timeout=30)
        yield Share(inbox, port, client_conf, state / "smbd.out", smbclient)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        sweep(marker)  # its per-client children and helpers (smbd-notifyd, cleanupd)
        out.close()


def start_daemon(tmp_path: Path, **inbox: object) -> tuple[Path, Daemon]:
    setup = Setup(tmp_path)
    setup.inbox(**inbox)
    config = setup.write()
    return config, Daemon(config)


def wait_finished(config: Path, n: int, timeout: float = 30.0) -> None:
    wait_until(lambda: ledger_states(config).get("succeeded", 0) >= n, timeout)


def test_files_put_over_smb_are_claimed_once_complete(tmp_path, share):
    config, daemon = start_daemon(tmp_path)
    small = tmp_path / "small.mov"
    small.write_bytes(b"over smb\n")
    large = tmp_path / "large.mov"
    large.write_bytes(b"large\n" + os.urandom(8 * 1024 * 1024))
    with daemon as d:
        for local, remote in ((small, "small.mov"), (large, "large clip.mov")):
            put = share.put(local, remote)
            assert put.returncode == 0, put.stdout + put.stderr
        wait_finished(config, 2)
        claimed = sorted(ev["file"] for ev in d.events("file.claimed"))
    assert claimed == ["large clip.mov", "small.mov"]
    archive, outbox = tmp_path / "in-archive", tmp_path / "in-out"
    assert sha256(archive / "small.mov") == sha256(small)
    assert sha256(archive / "large clip.mov") == sha256(large)
    assert sha256(outbox / "large clip" / "result.bin") == sha256(large)
    manifest = json.loads((outbox / "large clip" / "manifest.json").read_text())
    assert manifest["input"]["size"] == large.stat().st_size
    assert files(share.inbox) == []


def test_a_slow_smb_upload_is_claimed_only_after_smbd_closes_it(tmp_path, share):
    """smbclient reads a FIFO the test feeds with pauses; meanwhile smbd holds the file open, unchanged."""
    config, daemon = start_daemon(tmp_path)
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    parts = [b"slow\n" + os.urandom(64 * 1024), os.urandom(256 * 1024), os.urandom(128 * 1024)]
    remote = share.inbox / "slow.mov"
    with daemon as d:
        client = subprocess.Popen(share.put_command(fifo, "slow.mov"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            with open_fifo(fifo, client) as feed:
                for part in parts[:-1]:
                    feed.write(part)
                    feed.flush()
                    wait_until(remote.exists, timeout=20)  # smbd has created it, and holds it open
                    time.sleep(3 * SETTLE)  # the upload stalls, longer than settle
                    assert d.events("file.claimed") == [], "claimed while smbd still had it open"
                feed.write(parts[-1])
            fed_at = time.time()  # smbd closes the file after this, when smbclient is done
            assert client.wait(30) == 0, client.stdout.read().decode()
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            client.stdout.close()
        wait_finished(config, 1)
        [claimed] = d.events("file.claimed")
    assert event_time(claimed) > fed_at
    assert (tmp_path / "in-archive" / "slow.mov").read_bytes() == b"".join(parts)
    assert (tmp_path / "in-out" / "slow" / "result.bin").read_bytes() == b"".join(parts)


def open_fifo(fifo: Path, reader: subprocess.Popen):
    """`fifo` opened to write, once `reader` has opened it to read (an AssertionError if it exits first)."""

    def opened():
        if reader.poll() is not None:
            raise AssertionError(f"smbclient exited ({reader.returncode}): {reader.stdout.read().decode()}")
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            return None

    fd = wait_until(opened, timeout=20)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "wb")


def test_auto_polls_a_cifs_mount_of_the_share(tmp_path, share):
    # mount(8) loads the cifs module on demand, so the kernel can have cifs without
    # listing it yet: only a kernel with neither cifs built in nor modules to load has none.
    filesystems = Path("/proc/filesystems").read_text().split()
    modules = Path("/lib/modules") / os.uname().release
    if "cifs" not in filesystems and not modules.is_dir():
        pytest.skip(
            "this kernel cannot mount cifs (not built in, and no modules to load), so a real cifs mount "
            "is impossible here; tests/unit/test_watcher.py covers how a cifs mount is read"
        )
    require_tool("mount.cifs", package="cifs-utils")  # mount(8) hands cifs to it
    mount = tmp_path / "mnt"
    mount.mkdir()
    mounted = subprocess.run(
        [
            "mount",
            "-t",
            "cifs",
            "//127.0.0.1/inbox",
            str(mount),
            "-o",
            f"ip=127.0.0.1,port={share.port},guest,vers=3.0",
        ],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "the kernel refused to mount the share with cifs here (a container may not load or use cifs): "
            f"{mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        config, daemon = start_daemon(tmp_path, path=str(mount), watch="auto")
        with daemon as d:
            [watching] = d.events("inbox.watching")
            assert watching["mode"] == "poll"
            local = tmp_path / "via-smb.mov"
            local.write_bytes(b"via smb\n")
            put = share.put(local, "via-smb.mov")
            assert put.returncode == 0, put.stdout + put.stderr
            wait_finished(config, 1)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
