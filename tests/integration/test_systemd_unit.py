"""The shipped systemd files, checked with systemd's own tools.

systemd is not PID 1 here, so the unit cannot be started. What can run for
real: `systemd-analyze verify` and `security --offline`, `systemd-sysusers`
and `systemd-tmpfiles` into a throw-away root, and the unit's seccomp policy
(SystemCallFilter=, SystemCallErrorNumber=, MemoryDenyWriteExecute=) applied
with libseccomp to a process that does what chute and its modules do. The
last is a stand-in for systemd: it rebuilds the rules systemd would load
(src/shared/seccomp-util.c), since systemd itself cannot apply them here.
"""

from __future__ import annotations

import ctypes.util
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_package, require_tool

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "chute.service"
SHIPPED_CHUTE = "/opt/chute/bin/chute"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "systemd-analyze"


@pytest.fixture(autouse=True)
def systemd_analyze() -> None:
    """Every test here reads the unit as systemd does, with systemd-analyze."""
    require_tool("systemd-analyze", package="systemd")


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, values in order of appearance."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(timespan: str) -> float:
    """A systemd time span ("90s", "1min 30s") in seconds, as systemd reads it."""
    out = subprocess.run([SYSTEMD_ANALYZE, "timespan", timespan], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"μs:\s*(\d+)", out).group(1)) / 1_000_000


@pytest.fixture(scope="module")
def settings() -> dict[str, list[str]]:
    return unit_settings(UNIT.read_text())


@pytest.fixture(scope="module")
def production_config() -> dict:
    return yaml.safe_load((SYSTEMD_DIR / "config.yaml").read_text())


@pytest.fixture
def installed_unit(tmp_path) -> Path:
    """A copy of the unit whose commands point at this checkout's `chute` console script."""
    text = UNIT.read_text()
    assert SHIPPED_CHUTE in text
    path = tmp_path / "chute.service"
    path.write_text(text.replace(SHIPPED_CHUTE, local_chute()))
    return path


def verify_complaints(unit: Path) -> list[str]:
    """What `systemd-analyze verify` says about this unit, warnings included.

    verify exits 0 on parse warnings ("Unknown key 'Tpye'", "Failed to parse
    sec value"): systemd ignores such lines, which in production silently
    drops a setting. So every line naming the unit counts as an error. Lines
    about other units on this host (the dependency tree of multi-user.target)
    are not ours and are left out.
    """
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--recursive-errors=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    complaints = [line for line in lines if unit.name in line]
    if proc.returncode != 0:
        complaints.append(f"exit status {proc.returncode}: {lines}")
    return complaints


def test_unit_verifies_cleanly(installed_unit):
    assert verify_complaints(installed_unit) == []


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("Type=notify", "Tpye=notify"),
        ("WatchdogSec=30s", "WatchdogSec=30x"),
        ("[Service]", "[Servcie]"),
    ],
    ids=["typo-key", "bad-value", "typo-section"],
)
def test_verify_catches_a_broken_line(installed_unit, good, bad):
    # The check above only means something if a typo makes it fail.
    text, replaced = re.subn(rf"(?m)^{re.escape(good)}$", bad, installed_unit.read_text())
    assert replaced == 1
    installed_unit.write_text(text)
    assert verify_complaints(installed_unit) != []


def test_exposure_is_two_or_lower():
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match, f"no exposure in output:\n{proc.stdout}\n{proc.stderr}"
    assert float(match.group(1)) < 2.1, proc.stdout


def test_service_contract(settings):
    # contract §8: readiness and watchdog over sd_notify, foreground, drained stop.
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert settings["KillMode"] == ["mixed"]
    assert settings["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert settings["ExecStartPre"] == [f"{SHIPPED_CHUTE} check --config /etc/chute/config.yaml"]
    assert settings["ExecStart"] == [f"{SHIPPED_CHUTE} run --config /etc/chute/config.yaml"]
    assert "--detach" not in settings["ExecStart"][0]
    assert seconds(settings["WatchdogSec"][0]) > 0


def test_unit_delegates_its_cgroup_to_chute(settings):
    # chute puts each pool worker in a cgroup of its own below the unit's (daemon/chute/cgroups.py), so what
    # a module leaves dies with its worker; ProtectControlGroups=yes would make that subtree read-only.
    assert settings["Delegate"] == ["yes"]
    assert settings.get("ProtectControlGroups", ["no"]) == ["no"]


def test_stop_timeout_outlasts_the_drain(settings, production_config):
    # Otherwise systemd kills runs that shutdown_timeout promised to wait for.
    assert seconds(settings["TimeoutStopSec"][0]) > production_config["shutdown_timeout"] + 10


def test_every_folder_the_config_writes_is_writable(settings, production_config):
    writable = [Path(p.lstrip("-")) for p in settings["ReadWritePaths"]]
    writable += [Path("/var/lib") / name for name in settings["StateDirectory"]]
    config = production_config
    folders = [config["state_dir"], config["work_dir"]]
    for inbox in config["inboxes"]:
        folders += [inbox[key] for key in ("path", "outbox", "quarantine", "archive") if key in inbox]
    for folder in folders:
        assert any(Path(folder).is_relative_to(root) for root in writable), folder
    # The share root the unit waits for is the one it may write.
    assert settings["RequiresMountsFor"] == settings["ReadWritePaths"]


def test_config_reads_modules_and_jobs_from_the_checkout(production_config):
    assert production_config["modules_path"] == ["/opt/chute/src/modules"]
    assert production_config["jobs_path"] == ["/opt/chute/src/jobs"]


def local_chute() -> str:
    """This checkout's `chute` console script, next to the running interpreter."""
    chute = shutil.which("chute", path=str(Path(sys.executable).parent))
    if chute is None:
        pytest.skip(f"the `chute` command is not installed next to {sys.executable}: `make venv` installs it")
    return chute


def local_config(tmp_path: Path, job: str = "example_job") -> Path:
    """systemd/config.yaml with the install's paths moved to this checkout and tmp_path."""
    checkout = SYSTEMD_DIR.parent
    if not (checkout / "jobs" / f"{job}.yaml").is_file():
        pytest.skip(f"the production config names the bundled job jobs/{job}.yaml, which this checkout lacks")
    text = (SYSTEMD_DIR / "config.yaml").read_text().replace("job: example_job", f"job: {job}")
    for installed, here in [
        ("/opt/chute/src", checkout),
        ("/var/lib/chute", tmp_path / "var"),
        ("/srv/media", tmp_path / "media"),
    ]:
        text = text.replace(installed, str(here))
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return config


def test_production_config_passes_chute_check(tmp_path):
    proc = subprocess.run(
        [local_chute(), "check", "--config", str(local_config(tmp_path))], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(
    os.geteuid() != 0, reason="runs systemd-sysusers and systemd-tmpfiles for real, which create files only as root"
)
def test_sysusers_and_tmpfiles_create_the_folders(tmp_path):
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        require_tool(tool, package="systemd")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    tmpfiles = tmp_path / "chute.tmpfiles"
    # Also the share folders, commented out for the reason the file gives.
    text = (SYSTEMD_DIR / "chute.tmpfiles").read_text()
    tmpfiles.write_text(re.sub(r"(?m)^#d ", "d  ", text))

    for command in (
        ["systemd-sysusers", f"--root={root}", str(SYSTEMD_DIR / "chute.sysusers")],
        ["systemd-tmpfiles", f"--root={root}", "--create", str(tmpfiles)],
    ):
        proc = subprocess.run(command, capture_output=True, text=True)
        # tmpfiles refuses unsafe ownership chains with a message, not always a status.
        assert proc.returncode == 0 and "unsafe" not in proc.stderr, proc.stderr

    user = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("chute:"))
    uid, gid = int(user[2]), int(user[3])
    assert user[5] == "/var/lib/chute"

    def owner_and_mode(path: str) -> tuple[int, int, str]:
        st = (root / path.lstrip("/")).stat()
        return st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)

    assert owner_and_mode("/etc/chute") == (0, gid, "0o750")
    for folder in ("/var/lib/chute", "/var/lib/chute/state", "/var/lib/chute/work"):
        assert owner_and_mode(folder) == (uid, gid, "0o750")
    for folder in ("inbox", "outbox", "quarantine", "archive"):
        assert owner_and_mode(f"/srv/media/{folder}/example") == (uid, gid, "0o2770")


# --- The unit's seccomp policy, applied to real daemon and module work. ---

LIBSECCOMP = ctypes.util.find_library("seccomp")

# Loads the rules systemd would, then execs the given program. argv[1] is a
# JSON policy: {"allow": [syscalls], "errno": int | None, "mdwe": bool}.
APPLY_SECCOMP = textwrap.dedent(
    """
    import ctypes, json, sys, os

    policy = json.loads(sys.argv[1])
    lib = ctypes.CDLL(sys.argv[2], use_errno=True)

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ALLOW, KILL_PROCESS = 0x7FFF0000, 0x80000000
    ERRNO = lambda e: 0x00050000 | (e & 0xFFFF)
    MASKED_EQ = 7

    def rule(ctx, action, name, *cmps):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:  # not a syscall of this architecture
            return False
        array = (Cmp * max(1, len(cmps)))(*cmps)
        return lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array) == 0

    # MemoryDenyWriteExecute=: its own filter, loaded first as systemd does
    # (the allow list may forbid loading more).
    if policy["mdwe"]:
        EPERM, PROT_WRITE, PROT_EXEC, SHM_EXEC = 1, 2, 4, 0o100000
        ctx = lib.seccomp_init(ALLOW)
        wx = Cmp(2, MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC)
        x = Cmp(2, MASKED_EQ, PROT_EXEC, PROT_EXEC)
        shm = Cmp(2, MASKED_EQ, SHM_EXEC, SHM_EXEC)
        for name, cmp in [("mmap", wx), ("mprotect", x), ("pkey_mprotect", x), ("shmat", shm)]:
            rule(ctx, ERRNO(EPERM), name, cmp)
        assert lib.seccomp_load(ctx) == 0

    # SystemCallFilter= and SystemCallErrorNumber=: an allow list.
    denied = ERRNO(policy["errno"]) if policy["errno"] else KILL_PROCESS
    ctx = lib.seccomp_init(denied)
    allowed = sum(rule(ctx, ALLOW, name) for name in policy["allow"])
    assert allowed > 200, allowed
    assert lib.seccomp_load(ctx) == 0

    os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
    """
)

# What a module does: encode and decode video and audio with PyAV, compute on
# frames with numpy (OpenBLAS), OpenCV and scipy, call back through ctypes.
MODULE_WORK = textwrap.dedent(
    """
    import ctypes, mmap, sys
    import av, numpy as np, scipy.signal

    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        print("wx-refused")

    path = sys.argv[1]
    with av.open(path, "w") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        for i in range(25):
            picture = np.full((240, 320, 3), i * 10, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            container.mux(video.encode(frame))
        tone = np.sin(np.arange(1024, dtype=np.float32) / 8)[None, :]
        for i in range(25):
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 1024
            container.mux(audio.encode(frame))
        container.mux(video.encode())
        container.mux(audio.encode())

    frames = []
    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    stack = np.stack(frames).astype(np.float64).reshape(len(frames), -1)[:, :4096]
    np.linalg.svd(stack @ stack.T)  # BLAS, with its own buffers and threads
    scipy.signal.resample(stack[0], 100)
    try:
        import cv2
    except ImportError:
        pass
    else:
        cv2.GaussianBlur(cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY), (5, 5), 0)
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda n: n + 1)
    print("frames", len(frames), "callback", callback(41))
    """
)

# What the daemon does around a run: a WAL ledger, an inotify watch, sd_notify,
# a module in its own process group, and stopping one with TERM to its group.
DAEMON_WORK = textwrap.dedent(
    """
    import os, signal, socket, sqlite3, subprocess, sys, time
    import watchdog.events, watchdog.observers
    from chute.systemd import Notifier

    folder, module = sys.argv[1], sys.argv[2]
    observer = watchdog.observers.Observer()
    observer.schedule(watchdog.events.FileSystemEventHandler(), folder)
    observer.start()
    ledger = sqlite3.connect(os.path.join(folder, "ledger.db"))
    ledger.execute("PRAGMA journal_mode=WAL")
    ledger.execute("BEGIN IMMEDIATE")
    ledger.execute("CREATE TABLE runs (id TEXT)")
    ledger.execute("INSERT INTO runs VALUES ('r1')")
    ledger.commit()

    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(os.path.join(folder, "notify"))
    notifier = Notifier({"NOTIFY_SOCKET": os.path.join(folder, "notify")})
    notifier.ready()
    assert systemd.recv(64) == b"READY=1"

    run = subprocess.run([sys.executable, "-c", module, os.path.join(folder, "clip.mp4")],
                         start_new_session=True, capture_output=True, text=True,
                         env=dict(os.environ, TMPDIR=folder))
    print(run.stdout, end="")
    print(run.stderr, end="", file=sys.stderr)

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               start_new_session=True)
    os.killpg(sleeper.pid, signal.SIGTERM)
    print("module stopped by", -sleeper.wait())
    observer.stop()
    observer.join()
    sys.exit(run.returncode)
    """
)


def syscall_group(name: str) -> set[str]:
    """The system calls of a SystemCallFilter= group, nested groups expanded."""
    out = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter", "--no-pager", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= syscall_group(item) if item.startswith("@") else {item}
    return calls


def seccomp_policy(settings: dict[str, list[str]]) -> dict:
    """The unit's seccomp settings as the rules systemd builds from them."""
    allow: set[str] | None = None
    for value in settings["SystemCallFilter"]:
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        calls = set().union(*(syscall_group(n) if n.startswith("@") else {n} for n in names))
        if allow is None:
            assert not deny, "chute's unit starts from an allow list"
            allow = calls
        else:
            allow = allow - calls if deny else allow | calls
    error = settings.get("SystemCallErrorNumber", [None])[-1]
    errno_value = getattr(errno, error) if error else None
    mdwe = settings.get("MemoryDenyWriteExecute", ["no"])[-1] == "yes"
    return {"allow": sorted(allow), "errno": errno_value, "mdwe": mdwe}


@pytest.fixture
def libseccomp() -> None:
    """The seccomp tests load the unit's filter with libseccomp, as systemd does."""
    require_package(LIBSECCOMP is not None, "the library libseccomp", package="libseccomp2")


needs_libseccomp = pytest.mark.usefixtures("libseccomp")


@needs_libseccomp
@pytest.mark.timeout(180)
def test_media_work_runs_under_the_units_seccomp_policy(settings, tmp_path):
    # Runs as whoever runs the tests. As root, SQLite also fchown()s its WAL
    # to the database's owner, which ~@privileged answers with EPERM and
    # SQLite ignores; as the unit's User=chute it never makes that call.
    policy = seccomp_policy(settings)
    assert policy["mdwe"], "the unit sets MemoryDenyWriteExecute=yes"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            APPLY_SECCOMP,
            json.dumps(policy),
            LIBSECCOMP,
            "-c",
            DAEMON_WORK,
            str(tmp_path),
            MODULE_WORK,
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The filter was in force, and the module work and the group stop succeeded.
    assert "wx-refused" in proc.stdout
    assert "frames 25 callback 42" in proc.stdout
    assert "module stopped by 15" in proc.stdout


@needs_libseccomp
@pytest.mark.timeout(300)
def test_bundled_job_runs_under_the_units_seccomp_policy(settings, tmp_path):
    # The real thing: `chute submit` running the bundled media_ingest job
    # (PyAV, numpy, scipy, ...) with the unit's system call policy in force.
    from tests.media import make_clip

    config = local_config(tmp_path, job="media_ingest")
    (tmp_path / "drop").mkdir()
    clip = make_clip(tmp_path / "drop" / "clip.mp4", seconds=2.0)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            APPLY_SECCOMP,
            json.dumps(seccomp_policy(settings)),
            LIBSECCOMP,
            local_chute(),
            "submit",
            "--config",
            str(config),
            "--job",
            "media_ingest",
            str(clip),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifests = list((tmp_path / "media" / "outbox" / "example").glob("*/manifest.json"))
    assert len(manifests) == 1, proc.stdout + proc.stderr
    assert json.loads(manifests[0].read_text())["status"] == "succeeded"


def _daemon_fds(tmp_path: Path, inboxes: int, workers: int) -> int:
    """Descriptors a real idle `chute run` holds with this many inboxes and pool workers, metrics on."""
    from tests.harness import Daemon, Setup
    from tests.integration.test_metrics import scrape

    root = tmp_path / f"{inboxes}x{workers}"
    root.mkdir()
    setup = Setup(root, workers=workers, launcher={"mode": "fresh"}, metrics={"listen": "127.0.0.1:0"})
    for i in range(inboxes):
        setup.inbox(f"in{i}", watch="events")
    with Daemon(setup.write()) as d:
        [listening] = d.wait_event("metrics.listening")
        host, port = listening["address"].rsplit(":", 1)
        scrape(host, int(port))
        count = len(os.listdir(f"/proc/{d.pid}/fd"))
        assert d.stop() == 0
    return count


def test_descriptor_limit_covers_500_inboxes_and_a_full_pool(settings, tmp_path):
    """LimitNOFILE= against the daemon's own descriptors, measured: per inbox, per pool worker, and fixed."""
    from chute.metrics_http import MAX_CONNECTIONS

    soft = int(settings["LimitNOFILE"][0].split(":")[0])
    base = _daemon_fds(tmp_path, 1, 1)
    per_inbox = (_daemon_fds(tmp_path, 11, 1) - base) / 10
    per_worker = (_daemon_fds(tmp_path, 1, 3) - base) / 2
    # 256 is the most workers a config may ask for; every metrics connection open at once, and its server's own.
    need = base + 499 * per_inbox + 255 * per_worker + MAX_CONNECTIONS + 4
    # Twice that: room for the brief ones (claims, the /proc walk, notification and Dask connections).
    assert soft >= 2 * need, (soft, base, per_inbox, per_worker, need)


WEB_UNIT = SYSTEMD_DIR / "chute-web.service"


def test_the_web_unit_verifies_cleanly_and_its_exposure_is_two_or_lower(tmp_path):
    """chute-web.service, hardened like the daemon's: verify finds nothing, and the offline exposure is low."""
    installed = tmp_path / WEB_UNIT.name
    installed.write_text(WEB_UNIT.read_text().replace(SHIPPED_CHUTE, local_chute()))
    assert verify_complaints(installed) == []
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(WEB_UNIT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout)
    assert match and float(match.group(1)) < 2.1, proc.stdout
    settings = unit_settings(WEB_UNIT.read_text())
    # The token as a systemd credential (docs/web.md), the share read-only, the user of its own in group chute.
    assert settings["LoadCredential"] == ["chute-web-token:/etc/chute/web-token"]
    assert settings["ProtectSystem"] == ["strict"] and "/srv/media" not in " ".join(settings["ReadWritePaths"])
    assert settings["User"] == ["chute-web"] and settings["Group"] == ["chute"]
    assert settings["ExecStart"] == [f"{SHIPPED_CHUTE} web --config /etc/chute/config.yaml"]
