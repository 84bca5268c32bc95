"""The warm module launcher (chute.launcher): real launcher processes forking real modules.

Every parity test runs the same module twice, as a fresh interpreter exactly as chute starts one
(``Popen([python, entrypoint, ...], cwd=folder, env=env, stdin=DEVNULL, start_new_session=True,
close_fds=True)``) and through a Launcher, and compares what the module saw and did.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from chute.launcher import Exit, Launcher, LauncherUnavailable
from chute.procs import stopped

from tests.harness import wait_until
from tests.pipelines import proc_alive

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
RUN_TIMEOUT = 60

# What a module sees of its process, as JSON on stdout. Threads are counted before anything is
# imported: a fresh `import numpy` starts OpenBLAS's pool at once, a warm child only when it is used.
VIEW = r"""
import os
threads = len(os.listdir("/proc/self/task"))
import ctypes, json, locale, random, signal, sys, tempfile, time

def stream(s):
    raw = getattr(s.buffer, "raw", s.buffer)
    return [s.encoding, s.errors, s.line_buffering, s.write_through, s.mode, s.name,
            type(s.buffer).__name__, raw.name, s.fileno()]

def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True

getenv = ctypes.CDLL(None).getenv
getenv.restype = ctypes.c_char_p
main = sys.modules["__main__"]
print("CHUTE_PROGRESS 0.5")
print(json.dumps({
    "argv": sys.argv, "orig_argv": sys.orig_argv, "executable": sys.executable,
    "cwd": os.getcwd(), "path": sys.path, "file": __file__, "name": __name__,
    "globals": sorted(globals()), "main_is_this": main.__dict__ is globals(),
    "spec": repr(__spec__), "package": __package__, "cached": __cached__,
    "loader": [type(__loader__).__name__, __loader__.name, __loader__.path],
    "own_group": os.getpgid(0) == os.getpid(), "own_session": os.getsid(0) == os.getpid(),
    "environ": dict(os.environ),
    "c_environ": {name: (getenv(name.encode()) or b"").decode()
                  for name in ("CHUTE_TEST_MARK", "CHUTE_TEST_LAUNCHER_ONLY", "LC_CTYPE")},
    "stdin_is_devnull": os.path.samestat(os.fstat(0), os.stat(os.devnull)), "stdin_read": sys.stdin.read(),
    "stdio": [stream(sys.stdin), stream(sys.stdout), stream(sys.stderr)],
    "stdio_dunder": [sys.stdin is sys.__stdin__, sys.stdout is sys.__stdout__, sys.stderr is sys.__stderr__],
    "fds": [fd for fd in range(256) if is_open(fd)],
    "signals": {signal.Signals(s).name if s in signal.Signals._value2member_map_ else str(s): repr(signal.getsignal(s))
                for s in sorted(signal.valid_signals())},
    "mask": sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "threads": threads, "tmpdir": tempfile.gettempdir(), "umask": os.umask(0o022),
    "locale": locale.setlocale(locale.LC_CTYPE), "tzname": list(time.tzname),
    "flags": list(sys.flags), "filesystem_encoding": sys.getfilesystemencoding(),
    "random": random.random(),
}))
"""

# How a module ends, by its first argument; every ending also shows that the module's threads were
# joined, its atexit handlers ran, and its objects were torn down (an unflushed, unclosed file).
ENDINGS = r"""
import atexit, os, signal, sys, threading, time

class Noisy:
    def __del__(self):
        print("torn down; a global defined later is", _later, flush=True)

noisy = Noisy()
_later = "still there"
unclosed = open(os.path.join(os.environ["CHUTE_TEST_OUT"], "unclosed.txt"), "w")
unclosed.write("written, never closed\n")
import helper  # a module of the module's own, with an unclosed file of its own
atexit.register(lambda: print("atexit ran", "__file__" in globals()))
gate = threading.Event()
threading.Thread(target=lambda: (gate.wait(), print("thread joined"))).start()
print("CHUTE_PROGRESS 0.25")
print("buffered, not flushed", end="")
gate.set()
ending = sys.argv[1]
if ending == "raises":
    def parse(text):
        return int(text)
    parse("not a number")
elif ending == "exit7":
    sys.exit(7)
elif ending == "exit_text":
    sys.exit("stopped: a message for the log")
elif ending == "modkit_fail":
    from chute.modkit import fail
    fail("unusable input: not a media file")
elif ending == "segfault":
    os.kill(os.getpid(), signal.SIGSEGV)
elif ending == "interrupted":
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(60)
"""

HELPER = r"""
import os
appended = open(os.path.join(os.environ["CHUTE_TEST_OUT"], "unclosed.txt"), "a")
appended.write("appended by a helper, never closed\n")
"""

SLEEPER = r"""
import subprocess, sys, time
if len(sys.argv) > 1:  # a child in the module's process group, as an ffmpeg would be
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(child.pid, flush=True)
print("started", flush=True)
time.sleep(600)
"""

BLAS = r"""
import os, numpy as np
a = np.arange(90000, dtype=float).reshape(300, 300) / 90000
assert np.allclose((a @ np.eye(300)), a)
print(len(os.listdir("/proc/self/task")))
"""

# Everything a module could do to its process that must not reach the next module run.
VANDAL = r"""
import os, signal, sys, threading, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGUSR1, lambda *_: None)
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP])
os.chdir("/")
os.umask(0o077)
for _ in range(5):
    os.set_inheritable(os.open(os.devnull, os.O_RDONLY), True)
os.environ["CHUTE_TEST_VANDAL"] = "1"
os.environ.pop("CHUTE_TEST_MARK")
sys.path.insert(0, "/nowhere")
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
import numpy.random
numpy.random.seed(0)
how = sys.argv[1]
if how == "os_exit":
    os._exit(3)
elif how == "segfault":
    os.kill(os.getpid(), signal.SIGSEGV)
"""


@dataclass(frozen=True)
class Ran:
    returncode: int | None
    stdout: str
    stderr: str


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A module folder holding every test module, and a TMPDIR and output folder beside it."""
    module = tmp_path / "module"
    module.mkdir()
    for name, text in [
        ("view.py", VIEW),
        ("endings.py", ENDINGS),
        ("helper.py", HELPER),
        ("sleeper.py", SLEEPER),
        ("blas.py", BLAS),
        ("vandal.py", VANDAL),
    ]:
        (module / name).write_text(textwrap.dedent(text))
    (tmp_path / "tmp").mkdir()
    (tmp_path / "out").mkdir()
    return module


@pytest.fixture
def _unmeasured(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's launcher and fresh interpreter run without coverage, even under `make test`.

    A coverage collector started in a launcher (COVERAGE_PROCESS_CONFIG) registers an atexit handler
    before the launcher's, which must be the first (launcher._register_exit): the module then leaves
    by the interpreter's own exit path, not the launcher's, and an exit compared with a fresh
    interpreter's differs. The launcher is still measured through every other warm test.
    """
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)


@pytest.fixture
def launcher():
    """A Launcher with chute's default preloads; closed after the test, and checked gone."""
    with Launcher(environ={**os.environ, "CHUTE_TEST_LAUNCHER_ONLY": "1"}) as client:
        yield client
        pid = client.pid
    if pid is not None:
        assert not proc_alive(pid), "the launcher outlived close()"


def module_env(folder: Path, **changes: str | None) -> dict[str, str]:
    """The environment chute gives a module (contract §2), with `changes` (None removes a variable)."""
    env = {
        **os.environ,
        "CHUTE_RUN_ID": "20261124T180512Z-3f9a1c",
        "CHUTE_JOB": "job",
        "CHUTE_STEP": "step",
        "CHUTE_MODULE": "module",
        "CHUTE_ENTRY": "entry-1",
        "CHUTE_TEST_MARK": "seen",
        "CHUTE_TEST_OUT": str(folder.parent / "out"),
        "TMPDIR": str(folder.parent / "tmp"),
        "PYTHONUNBUFFERED": "1",
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_fresh(argv: list[str], cwd: Path, env: dict[str, str]) -> Ran:
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    return Ran(proc.returncode, stdout.decode(), stderr.decode())


def run_warm(launcher: Launcher, argv: list[str], cwd: Path, env: dict[str, str]) -> Ran:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = launcher.spawn(argv, str(cwd), env, out_w, err_w)
    finally:
        os.close(out_w)
        os.close(err_w)
    stdout, stderr = read_all(out_r, err_r)
    return Ran(wait_exit(launcher, pid).returncode, stdout, stderr)


def read_all(*fds: int) -> list[str]:
    """Read the pipes `fds` to their end, together (a full pipe must not block the module)."""
    chunks: dict[int, bytes] = {fd: b"" for fd in fds}
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            events = selector.select(RUN_TIMEOUT)
            assert events, "a module's output did not end"
            for key, _ in events:
                data = os.read(key.fd, 65536)
                chunks[key.fd] += data
                if not data:
                    selector.unregister(key.fd)
                    os.close(key.fd)
    return [chunks[fd].decode() for fd in fds]


def wait_exit(launcher: Launcher, pid: int) -> Exit:
    """Wait, as chute's loop does, for launcher.fileno() to be readable, until `pid`'s exit is collected."""
    deadline = time.monotonic() + RUN_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(launcher.fileno(), selectors.EVENT_READ)
        while True:
            for exit in launcher.collect():
                if exit.pid == pid:
                    return exit
            assert selector.select(max(0.0, deadline - time.monotonic())), f"no exit reported for {pid}"


def view(ran: Ran) -> dict:
    assert ran.returncode == 0, ran.stderr
    progress, line = ran.stdout.splitlines()
    assert progress == "CHUTE_PROGRESS 0.5"
    return json.loads(line)


def both(launcher: Launcher, argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[Ran, Ran]:
    return run_fresh(argv, cwd, env), run_warm(launcher, argv, cwd, env)


# ---- parity: a module cannot tell a warm start from a fresh one ----


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({}, id="chute-env"),
        pytest.param({"PYTHONUNBUFFERED": None}, id="buffered-stdio"),
        pytest.param({"LANG": None, "LC_ALL": None, "LC_CTYPE": None}, id="no-locale-coerced"),
        pytest.param({"PYTHONIOENCODING": "latin-1:replace", "TZ": "Asia/Kolkata"}, id="io-encoding-and-tz"),
    ],
)
def test_a_module_sees_what_a_fresh_interpreter_gives_it(launcher, folder, changes):
    env = module_env(folder, **changes)
    fresh, warm = (view(ran) for ran in both(launcher, [PYTHON, "view.py", "--input", "/x/in.mp4"], folder, env))
    assert fresh.pop("random") != warm.pop("random"), "random was not reseeded"
    assert warm == fresh
    # And what the comparison stands on:
    assert warm["own_group"] and warm["own_session"] and warm["stdin_is_devnull"]
    assert warm["fds"] == [0, 1, 2]
    assert warm["cwd"] == str(folder) and warm["path"][0] == str(folder)
    assert warm["argv"] == ["view.py", "--input", "/x/in.mp4"]
    assert warm["c_environ"]["CHUTE_TEST_MARK"] == "seen" and not warm["c_environ"]["CHUTE_TEST_LAUNCHER_ONLY"]
    assert warm["signals"]["SIGINT"] == "<built-in function default_int_handler>"
    assert warm["signals"]["SIGPIPE"] == warm["signals"]["SIGXFSZ"] == "<Handlers.SIG_IGN: 1>"
    assert warm["signals"]["SIGTERM"] == "<Handlers.SIG_DFL: 0>"
    assert warm["tmpdir"] == str(folder.parent / "tmp")


@pytest.mark.parametrize(
    "ending, returncode",
    [
        ("returns", 0),
        ("raises", 1),
        ("exit7", 7),
        ("exit_text", 1),
        ("modkit_fail", 2),
        ("segfault", -signal.SIGSEGV),
        ("interrupted", -signal.SIGINT),
    ],
)
@pytest.mark.parametrize("unbuffered", ["1", None], ids=["unbuffered", "buffered"])
@pytest.mark.usefixtures("_unmeasured")
def test_a_module_ends_as_it_would_in_a_fresh_interpreter(launcher, folder, ending, returncode, unbuffered):
    env = module_env(folder, PYTHONUNBUFFERED=unbuffered)
    unclosed = folder.parent / "out" / "unclosed.txt"
    fresh = run_fresh([PYTHON, "endings.py", ending], folder, env)
    fresh_file = unclosed.read_text()
    unclosed.unlink()
    warm = run_warm(launcher, [PYTHON, "endings.py", ending], folder, env)
    assert warm.returncode == fresh.returncode == returncode
    assert (warm.stdout, warm.stderr, unclosed.read_text()) == (fresh.stdout, fresh.stderr, fresh_file)
    if returncode == -signal.SIGSEGV:
        return  # no Python exit at all: what was unflushed is lost, both ways
    assert warm.stdout.startswith("CHUTE_PROGRESS 0.25\n")
    assert "thread joined" in warm.stdout and "atexit ran" in warm.stdout and "torn down" in warm.stdout
    assert fresh_file == "written, never closed\nappended by a helper, never closed\n"


def test_a_traceback_and_messages_read_as_from_a_fresh_interpreter(launcher, folder):
    env = module_env(folder)
    raised = run_warm(launcher, [PYTHON, "endings.py", "raises"], folder, env)
    assert raised.stderr.startswith(f'Traceback (most recent call last):\n  File "{folder}/endings.py", line ')
    assert raised.stderr.endswith("ValueError: invalid literal for int() with base 10: 'not a number'\n")
    assert "launcher" not in raised.stderr
    assert run_warm(launcher, [PYTHON, "endings.py", "exit_text"], folder, env).stderr == (
        "stopped: a message for the log\n"
    )
    assert run_warm(launcher, [PYTHON, "endings.py", "modkit_fail"], folder, env).stderr == (
        "unusable input: not a media file\n"
    )


def test_the_probe_module_gives_the_same_json_both_ways(launcher, clip, tmp_path):
    probe = ROOT / "modules" / "probe"
    env = module_env(tmp_path / "module")
    argv = [PYTHON, "main.py", "--input", str(clip), "--output"]
    fresh = run_fresh([*argv, str(tmp_path / "fresh.json")], probe, env)
    warm = run_warm(launcher, [*argv, str(tmp_path / "warm.json")], probe, env)
    assert warm.returncode == fresh.returncode == 0, warm.stderr
    assert (warm.stdout, warm.stderr) == (fresh.stdout, fresh.stderr)
    described = json.loads((tmp_path / "warm.json").read_text())
    assert described == json.loads((tmp_path / "fresh.json").read_text())
    assert described["streams"][0]["codec"] == "h264"


def test_numpy_in_a_module_gets_its_blas_threads_back(launcher, folder):
    fresh, warm = both(launcher, [PYTHON, "blas.py"], folder, module_env(folder))
    assert warm.returncode == fresh.returncode == 0, warm.stderr
    assert warm.stdout == fresh.stdout  # as many threads after a matrix product as a fresh numpy has


def test_every_warm_module_gets_fresh_random_numbers(folder):
    code = "import random, numpy; print(random.random(), numpy.random.random())"
    (folder / "draw.py").write_text(code)
    with Launcher(preload=("numpy.random",)) as client:
        draws = {run_warm(client, [PYTHON, "draw.py"], folder, module_env(folder)).stdout for _ in range(3)}
    assert len(draws) == 3
    assert all(len(set(line.split())) == 2 for line in draws)


# ---- isolation: nothing a module does reaches a later module ----


@pytest.mark.parametrize("how", ["returns", "os_exit", "segfault"])
def test_a_module_cannot_change_what_the_next_one_sees(launcher, folder, how):
    env = module_env(folder)
    before = view(run_warm(launcher, [PYTHON, "view.py"], folder, env))
    vandal = run_warm(launcher, [PYTHON, "vandal.py", how], folder, env)
    assert vandal.returncode == {"returns": 0, "os_exit": 3, "segfault": -signal.SIGSEGV}[how], vandal.stderr
    after = view(run_warm(launcher, [PYTHON, "view.py"], folder, env))
    assert before.pop("random") != after.pop("random")
    assert after == before
    assert launcher.running


# ---- lifetime: the launcher never outlives its client, nor leaves modules behind ----


def spawn_sleeper(launcher: Launcher, folder: Path, *args: str) -> tuple[int, list[str]]:
    """Start sleeper.py; returns its pid once it runs, and the lines it printed until then."""
    read, write = os.pipe()
    try:
        pid = launcher.spawn([PYTHON, "sleeper.py", *args], str(folder), module_env(folder), write, write)
    finally:
        os.close(write)
    with os.fdopen(read) as out:
        lines = [out.readline().strip() for _ in range(1 + len(args))]
    assert lines[-1] == "started"
    return pid, lines[:-1]


def test_a_launcher_killed_mid_run_reports_its_module_lost_and_is_replaced(launcher, folder):
    module, _ = spawn_sleeper(launcher, folder)
    first, doorbell = launcher.pid, launcher.fileno()
    os.kill(first, signal.SIGKILL)
    exit = wait_exit(launcher, module)
    assert exit.returncode is None
    assert exit.reason == "the module launcher died (killed by signal 9)"
    wait_until(lambda: not proc_alive(module), timeout=10)
    assert not launcher.running
    ran = run_warm(launcher, [PYTHON, "endings.py", "exit7"], folder, module_env(folder))
    assert ran.returncode == 7
    assert launcher.pid != first and launcher.running
    assert launcher.fileno() == doorbell  # a caller's selector keeps working across the restart


def test_close_ends_the_launcher_and_every_module_group(folder):
    client = Launcher()
    module, (grandchild,) = spawn_sleeper(client, folder, "with-child")
    pid = client.pid
    client.close()
    client.close()  # idempotent
    assert not proc_alive(pid)
    wait_until(lambda: not proc_alive(module) and not proc_alive(int(grandchild)), timeout=10)
    assert client.fileno() == -1 and not client.running


CLIENT = r"""
import os, sys, time
from chute.launcher import Launcher
launcher = Launcher()
read, write = os.pipe()
pid = launcher.spawn([sys.executable, "sleeper.py"], sys.argv[1], dict(os.environ), write, write)
os.close(write)
assert os.fdopen(read).readline() == "started\n"
print(launcher.pid, pid, flush=True)
time.sleep(600)
"""


def test_a_client_killed_takes_its_launcher_and_modules_with_it(folder):
    client = subprocess.Popen([PYTHON, "-c", CLIENT, str(folder)], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        pids = [int(pid) for pid in client.stdout.readline().split()]
        assert len(pids) == 2 and all(proc_alive(pid) for pid in pids)
        client.kill()
        client.wait()
        wait_until(lambda: not any(proc_alive(pid) for pid in pids), timeout=10)
    finally:
        client.kill()
        client.wait()
        client.stdout.close()
        for pid in pids:
            if proc_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_launcher_has_no_thread_but_its_own_when_it_forks(launcher, folder):
    run_warm(launcher, [PYTHON, "blas.py"], folder, module_env(folder))
    assert "numpy" not in launcher.skipped and "av" not in launcher.skipped
    assert os.listdir(f"/proc/{launcher.pid}/task") == [str(launcher.pid)]
    fds = {fd: os.readlink(f"/proc/{launcher.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{launcher.pid}/fd")}
    others = sorted(target.split(":")[0] for fd, target in fds.items() if fd not in ("0", "1", "2"))
    assert others == ["anon_inode", "socket"]  # its selector and its socket: no pidfd left, no file of a preload


def test_a_preload_that_starts_a_thread_makes_the_launcher_unavailable(folder, tmp_path):
    (tmp_path / "threaded_library.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    )
    client = Launcher(preload=("chute.modkit", "threaded_library"))
    try:
        with pytest.raises(LauncherUnavailable, match="2 threads"):
            client.spawn([PYTHON, "view.py"], str(folder), module_env(folder, PYTHONPATH=str(tmp_path)), 1, 2)
        assert not client.running
    finally:
        client.close()


def test_a_thread_a_preload_has_just_ended_does_not_count(folder, tmp_path):
    """OpenBLAS's pool is joined just before the check; a joined thread can linger in /proc a moment."""
    (tmp_path / "brief_thread_library.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(0.2,)).start()\n"
    )
    with Launcher(preload=("chute.modkit", "brief_thread_library")) as client:
        ran = run_warm(client, [PYTHON, "endings.py", "returns"], folder, module_env(folder, PYTHONPATH=str(tmp_path)))
        assert ran.returncode == 0 and client.running


def test_a_preload_that_does_not_import_is_skipped(folder):
    with Launcher(preload=("chute.modkit", "no_such_library")) as client:
        ran = run_warm(client, [PYTHON, "endings.py", "returns"], folder, module_env(folder))
        assert ran.returncode == 0
        assert client.skipped == {"no_such_library": "ModuleNotFoundError: No module named 'no_such_library'"}


def test_what_a_launcher_cannot_honour_is_refused_for_a_fresh_start(launcher, folder):
    env = module_env(folder)
    assert run_warm(launcher, [PYTHON, "endings.py", "returns"], folder, env).returncode == 0
    with pytest.raises(LauncherUnavailable, match="PYTHONPATH"):
        launcher.spawn([PYTHON, "view.py"], str(folder), {**env, "PYTHONPATH": "/elsewhere"}, 1, 2)
    with pytest.raises(LauncherUnavailable, match="runs"):
        launcher.spawn([PYTHON, "-X", "dev", "view.py"], str(folder), env, 1, 2)
    with pytest.raises(LauncherUnavailable, match="not a file"):
        launcher.spawn([PYTHON, "missing.py"], str(folder), env, 1, 2)
    with pytest.raises(FileNotFoundError):  # as Popen raises it
        launcher.spawn([PYTHON, str(folder / "view.py")], str(folder / "gone"), env, 1, 2)
    for size in (230_000, 300_000):  # over the socket's buffer, and over the launcher's own limit
        with pytest.raises(LauncherUnavailable, match="too large"):
            launcher.spawn([PYTHON, "view.py"], str(folder), {**env, "BIG": "x" * size}, 1, 2)
    assert run_warm(launcher, [PYTHON, "endings.py", "exit7"], folder, env).returncode == 7


# ---- a launcher stopped by a module (SIGSTOP, issue 19) is killed and replaced, never waited for ----


def supervise_until_exit(launcher: Launcher, pid: int) -> Exit:
    """Drive `supervise` and `collect` as the step engine does, until `pid`'s exit is collected."""
    deadline = time.monotonic() + RUN_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(launcher.fileno(), selectors.EVENT_READ)
        due = launcher.supervise(time.monotonic())
        while True:
            for exit in launcher.collect():
                if exit.pid == pid:
                    return exit
            now = time.monotonic()
            assert now < deadline, f"no exit reported for {pid}"
            selector.select(max(0.0, min(due or deadline, deadline) - now))
            due = launcher.supervise(time.monotonic())


def test_a_launcher_stopped_under_its_module_is_killed_and_the_module_reported_lost(launcher, folder):
    module, _ = spawn_sleeper(launcher, folder)
    first = launcher.pid
    os.kill(first, signal.SIGSTOP)  # as a module's os.kill(os.getppid(), SIGSTOP) does
    exit = supervise_until_exit(launcher, module)
    assert exit.returncode is None
    assert exit.reason == "the module launcher was stopped (SIGSTOP?) and was killed"
    wait_until(lambda: not proc_alive(module) and not proc_alive(first), timeout=10)
    ran = run_warm(launcher, [PYTHON, "endings.py", "exit7"], folder, module_env(folder))
    assert ran.returncode == 7 and launcher.pid != first


def test_a_launcher_that_answers_its_pings_is_never_killed(launcher, folder):
    module, _ = spawn_sleeper(launcher, folder)
    first = launcher.pid
    now = time.monotonic()
    launcher.supervise(now)  # a ping
    with selectors.DefaultSelector() as selector:
        selector.register(launcher.fileno(), selectors.EVENT_READ)
        assert selector.select(RUN_TIMEOUT), "no answer to the ping"
    assert launcher.collect() == []  # the answer is no exit
    launcher.supervise(now + 3600)  # an hour later by its clock: still answering, still running
    assert launcher.pid == first and launcher.running and proc_alive(module)


def test_a_launcher_stopped_between_runs_is_replaced_at_the_next_spawn(launcher, folder):
    assert run_warm(launcher, [PYTHON, "endings.py", "exit7"], folder, module_env(folder)).returncode == 7
    first = launcher.pid
    os.kill(first, signal.SIGSTOP)
    wait_until(lambda: stopped(first), timeout=10)  # a signal takes effect when the process is next scheduled
    ran = run_warm(launcher, [PYTHON, "endings.py", "exit7"], folder, module_env(folder))
    assert ran.returncode == 7 and launcher.pid != first
    wait_until(lambda: not proc_alive(first), timeout=10)
