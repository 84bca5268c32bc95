"""`executor.kind: dask`: runs on a real Dask cluster (`dask scheduler`, `dask worker` processes on 127.0.0.1).

The workers are kept running as their systemd units would keep them (tests/dask_cluster.py):
`dask worker` exits when its scheduler goes away and is started again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.harness import (
    CHUTE,
    Daemon,
    Setup,
    assert_processed_once,
    drop,
    files,
    ledger_runs,
    processes_with,
    status_json,
    wait_until,
)

pytest.importorskip(
    "distributed", reason="the Dask executor needs dask.distributed, from the `dask` extra (`make venv` installs it)"
)

from tests.dask_cluster import Cluster, free_port, make_certificates  # noqa: E402

# The copy module, plus: with $CHUTE_TEST_ONCE set (in the workers' environment), the first step of a run
# sleeps for a long time on its first attempt only, so a test can kill the worker under it.
SLEEP_ONCE = """\
import os, time
_once = os.environ.get("CHUTE_TEST_ONCE")
if _once and os.environ["CHUTE_STEP"] == "first":
    _flag = os.path.join(_once, os.environ["CHUTE_RUN_ID"])
    if not os.path.exists(_flag):
        open(_flag, "w").close()
        time.sleep(120)
"""


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def dask_setup(root: Path, cluster: Cluster, **config) -> Setup:
    return Setup(root, executor={"kind": "dask", "address": cluster.address}, **config)


def need_unshare(*args: str) -> None:
    """Skip unless `unshare ARGS true` works here (it needs CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", *args, "true"], capture_output=True).returncode:
        pytest.skip(f"cannot run `unshare {' '.join(args)}` here (it needs CAP_SYS_ADMIN)")


def workers_used(daemon: Daemon) -> set[str]:
    return {e["worker"] for e in daemon.events("run.published")}


def drain_on(d: Daemon, inbox: dict, good: str, count: int) -> dict[str, bytes]:
    """Once `good` has joined: drop `count` files, run them all, stop; every run went to `good`."""
    d.wait_event("executor.worker_joined", worker=good)
    inputs = {f"f{i}.bin": f"file {i}\n".encode() for i in range(count)}
    for name, data in inputs.items():
        drop(Path(inbox["path"]), name, data)
    wait_until(lambda: len(files(Path(inbox["archive"]))) == len(inputs), 60)
    assert d.stop() == 0
    assert workers_used(d) == {good}
    return inputs


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_forty_files_through_two_workers_each_published_once(tmp_path, cluster):
    cluster.add_worker("a")
    cluster.add_worker("b")
    addresses = cluster.wait_for_workers(2)
    setup = dask_setup(tmp_path, cluster)
    inbox = setup.inbox()
    path = Path(inbox["path"])
    path.mkdir()
    config = setup.write()
    inputs = {f"f{i:02d}.bin": f"file {i}\n".encode() * (i + 1) for i in range(40)}
    with Daemon(config) as d:
        d.wait_event("executor.worker_joined", count=2)
        for name, data in inputs.items():
            drop(path, name, data)
        wait_until(lambda: len(files(Path(inbox["archive"]))) == len(inputs), 90)
        assert d.stop() == 0
        assert workers_used(d) == set(addresses.values())  # spread across both
        assert d.events("run.deferred") == [] and d.events("daemon.error") == []
    assert_processed_once(inbox, inputs)
    assert {r.worker for r in ledger_runs(config)} == set(addresses.values())


def victim_setup(tmp_path: Path, cluster) -> tuple[dict[str, str], dict, Path, dict[str, bytes]]:
    """Two workers and one file whose module sleeps once: (worker names by address, inbox, config, inputs)."""
    need_unshare("--pid", "--fork", "--mount-proc")
    once = tmp_path / "once"
    once.mkdir()
    for name in ("a", "b"):
        cluster.add_worker(name, env={"CHUTE_TEST_ONCE": str(once)})
    names = {address: name for name, address in cluster.wait_for_workers(2).items()}
    # Fresh interpreters: a warm launcher would take its modules down with the worker (PR_SET_PDEATHSIG);
    # these tests are about a module the dead worker left running.
    setup = dask_setup(tmp_path, cluster, launcher={"mode": "fresh"})
    main = setup.defs / "modules" / "copy" / "main.py"
    main.write_text(SLEEP_ONCE + main.read_text())
    inbox = setup.inbox()
    Path(inbox["path"]).mkdir(exist_ok=True)
    return names, inbox, setup.write(), {"victim.bin": b"victim\n"}


# The daemon in a PID namespace of its own cannot see (or sweep) the workers' processes, as on another
# host: a module left behind must be swept by the worker side.
APART = ("unshare", "--pid", "--fork", "--mount-proc")


def victim_running(d: Daemon, tmp_path: Path, inbox: dict, inputs: dict[str, bytes]) -> tuple[str, str, int]:
    """Drop the file and wait until its module sleeps: (run id, its worker, the module's pid)."""
    d.wait_event("executor.worker_joined", count=2)
    drop(Path(inbox["path"]), "victim.bin", inputs["victim.bin"])
    [started] = d.wait_event("entry.started", step="first")
    run_id, worker = started["run_id"], started["worker"]
    wait_until(lambda: (tmp_path / "once" / run_id).exists())
    [module] = wait_until(lambda: processes_with(f"CHUTE_RUN_ID={run_id}"))
    return run_id, worker, module


def test_a_worker_killed_under_its_run_runs_it_elsewhere_once_and_its_module_is_swept(tmp_path, cluster):
    _, inbox, config, inputs = victim_setup(tmp_path, cluster)
    with Daemon(config, wrap=APART) as d:
        run_id, worker, module = victim_running(d, tmp_path, inbox, inputs)
        [active] = status_json(config)["active"]
        assert (active["run_id"], active["state"], active["worker"]) == (run_id, "running", worker)
        os.kill(parent_of(module), signal.SIGKILL)  # the Dask worker process running it
        [left] = d.wait_event("executor.worker_left", worker=worker)
        assert left["runs"] == [run_id]
        wait_until(lambda: len(files(Path(inbox["archive"]))) == 1, 60)
        wait_until(lambda: not alive(module), 30)  # swept when the worker came back
        [inner] = Path(f"/proc/{d.pid}/task/{d.pid}/children").read_text().split()
        os.kill(int(inner), signal.SIGTERM)  # the daemon itself, not `unshare`
        assert d.proc.wait(30) == 0
        # Deferred for its worker's death first. Under load (2 shared cores) the scheduler may hand the
        # re-run to a worker that is going too, which defers it once more: still a crash, never a quarantine.
        deferred = d.events("run.deferred", run_id=run_id)
        assert deferred[0]["fault"] == "crash" and worker in deferred[0]["reason"], deferred
        assert {e["fault"] for e in deferred} == {"crash"}, deferred
        [published] = d.events("run.published", run_id=run_id)
        assert published["worker"] != worker
        assert d.events("run.quarantined") == []
    assert_processed_once(inbox, inputs)
    # Killed by the other worker's sweep (the daemon's, at once) or by the restarted worker's clean-up.
    assert any(
        event in (tmp_path / f"worker-{n}.log").read_text()
        for n in ("a", "b")
        for event in ('"worker.orphans_killed"', '"worker.swept"')
    )


def test_a_module_left_by_a_dead_worker_is_swept_by_the_workers_left_on_its_host(tmp_path, cluster):
    """Issue 19.4: the daemon's sweep reaches the workers (it failed on every call with distributed 2026.8)."""
    names, inbox, config, inputs = victim_setup(tmp_path, cluster)
    with Daemon(config, wrap=APART) as d:
        run_id, worker, module = victim_running(d, tmp_path, inbox, inputs)
        # Its worker dies for good, its nanny first (no restart, so no restarted worker's clean-up): only the
        # daemon's sweep, run by the other worker on this host, can find the module left behind.
        dead = cluster.workers[names[worker]]
        dead.stopping.set()
        worker_pid = parent_of(module)
        assert parent_of(worker_pid) == dead.proc.pid  # `dask worker` itself is the nanny
        os.kill(dead.proc.pid, signal.SIGKILL)
        os.kill(worker_pid, signal.SIGKILL)
        d.wait_event("executor.worker_left", worker=worker)
        wait_until(lambda: not alive(module), 30)
        wait_until(lambda: len(files(Path(inbox["archive"]))) == 1, 60)
        [inner] = Path(f"/proc/{d.pid}/task/{d.pid}/children").read_text().split()
        os.kill(int(inner), signal.SIGTERM)  # the daemon itself, not `unshare`
        assert d.proc.wait(30) == 0
        assert d.events("executor.sweep_failed") == []
        [published] = d.events("run.published", run_id=run_id)
        assert published["worker"] != worker
    assert_processed_once(inbox, inputs)
    other = "b" if names[worker] == "a" else "a"
    [swept] = [line for line in (tmp_path / f"worker-{other}.log").read_text().splitlines() if '"worker.swept"' in line]
    assert f"CHUTE_RUN_ID={run_id}" in swept and '"killed": 1' in swept
    assert dead.starts == 1


def test_the_scheduler_killed_and_restarted_mid_run_loses_and_duplicates_nothing(tmp_path, cluster):
    cluster.add_worker("a")
    cluster.add_worker("b")
    cluster.wait_for_workers(2)
    setup = dask_setup(tmp_path, cluster)
    inbox = setup.inbox()
    path = Path(inbox["path"])
    path.mkdir()
    config = setup.write()
    inputs = {f"f{i:02d}.bin": f"sleep=0.4\nfile {i}\n".encode() for i in range(12)}
    names = list(inputs)
    with Daemon(config) as d:
        d.wait_event("executor.worker_joined", count=2)
        for name in names[:8]:
            drop(path, name, inputs[name])
        d.wait_event("entry.started", count=3)
        cluster.kill_scheduler()
        d.wait_event("executor.disconnected")
        for name in names[8:]:  # files keep arriving while the cluster is away
            drop(path, name, inputs[name])
        cluster.start_scheduler()
        d.wait_event("executor.connected", count=2, timeout=60)
        wait_until(lambda: len(files(Path(inbox["archive"]))) == len(inputs), 90)
        assert d.stop() == 0
        assert d.events("run.quarantined") == [] and d.events("daemon.error") == []
        deferred = d.events("run.deferred")
        assert deferred and all(e["fault"] == "outage" for e in deferred)  # nothing charged as a crash
    assert_processed_once(inbox, inputs)


def test_a_worker_that_does_not_see_the_share_is_refused_and_the_others_work(tmp_path, cluster):
    need_unshare("--mount", "--propagation", "private")
    share = tmp_path / "share"
    share.mkdir()
    cluster.add_worker("good")
    # Its own mount namespace, with an empty tmpfs over the share: it sees none of the daemon's folders.
    hide = (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs tmpfs "$0" && exec "$@"',
        str(share),
    )
    cluster.add_worker("blind", wrap=hide)
    addresses = cluster.wait_for_workers(2)
    setup = dask_setup(tmp_path, cluster)
    inbox = setup.inbox("share/in")
    path = Path(inbox["path"])
    path.mkdir(parents=True)
    config = setup.write()
    with Daemon(config) as d:
        [refused] = d.wait_event("executor.worker_refused")
        assert (refused["worker"], refused["path"]) == (addresses["blind"], str(path / ".chute"))
        inputs = drain_on(d, inbox, addresses["good"], 6)
        assert len(d.events("executor.worker_refused")) == 1
    assert_processed_once(inbox, inputs)
    assert {r.worker for r in ledger_runs(config)} == {addresses["good"]}


def test_a_worker_without_chute_does_not_stop_the_daemon_and_gets_no_runs(tmp_path, cluster):
    broken = tmp_path / "no-chute" / "chute"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'chute'\")\n")
    cluster.add_worker("good")
    cluster.add_worker("without", env={"PYTHONPATH": str(broken.parent)})
    addresses = cluster.wait_for_workers(2)
    setup = dask_setup(tmp_path, cluster)
    inbox = setup.inbox()
    Path(inbox["path"]).mkdir(parents=True)
    with Daemon(setup.write()) as d:
        [failed] = d.wait_event("executor.plugin_failed")
        assert "No module named 'chute'" in failed["reason"]
        inputs = drain_on(d, inbox, addresses["good"], 4)
        assert d.events("executor.worker_joined", worker=addresses["without"]) == []  # (its probe fails, or kills it)
    assert_processed_once(inbox, inputs)


def test_no_reachable_scheduler_at_start_is_one_line_and_exit_1(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    setup = Setup(tmp_path, executor={"kind": "dask", "address": address, "connect_timeout": 1})
    setup.inbox()
    config = setup.write()
    result = subprocess.run([str(CHUTE), "run", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"chute: cannot reach the Dask scheduler at {address} (executor.address) within 1 s"
    ]


def test_sigterm_stops_the_run_on_its_worker_and_puts_the_input_back(tmp_path, cluster):
    cluster.add_worker("a")
    cluster.wait_for_workers(1)
    setup = dask_setup(tmp_path, cluster, shutdown_timeout=0.5)
    inbox = setup.inbox()
    path = Path(inbox["path"])
    path.mkdir()
    config = setup.write()
    with Daemon(config) as d:
        d.wait_event("executor.worker_joined")
        drop(path, "long.bin", b"sleep=60\n")
        [started] = d.wait_event("entry.started")
        module = started["pid"]  # forked by the worker's warm launcher (its environ is the launcher's)
        assert alive(module)
        assert d.stop() == 0  # drained for shutdown_timeout, then cancelled through Dask: no shared file
        assert d.events("daemon.cancelling")[0]["runs"] == [started["run_id"]]
        assert d.events("executor.stuck") == [] and d.events("executor.cancel_failed") == []
        [released] = d.events("run.released")
        assert released["to"] == str(path / "long.bin")
    assert files(path) == ["long.bin"] and (path / "long.bin").read_bytes() == b"sleep=60\n"
    assert not alive(module)
    assert files(Path(inbox["outbox"])) == [] and files(Path(inbox["quarantine"])) == []


def test_a_tls_cluster_runs_files_and_refuses_a_daemon_without_certificates(tmp_path):
    require_tool("openssl", package="openssl")  # makes the test certificates
    tls = make_certificates(tmp_path / "tls")
    cluster = Cluster(tmp_path, tls=tls)
    try:
        cluster.add_worker("a")
        cluster.wait_for_workers(1)
        plain_address = cluster.address.replace("tls://", "tcp://")  # no certificate: the scheduler will not talk
        plain = Setup(tmp_path, executor={"kind": "dask", "address": plain_address, "connect_timeout": 2})
        plain.inbox()
        result = subprocess.run(
            [str(CHUTE), "run", "--config", str(plain.write("plain"))], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"chute: cannot reach the Dask scheduler at {plain_address} (executor.address) within 2 s"
        ]
        missing = Setup(
            tmp_path,
            executor={
                "kind": "dask",
                "address": cluster.address,
                "security": {**{k: str(v) for k, v in tls.items()}, "ca_file": str(tmp_path / "gone.pem")},
            },
        )
        missing.inbox()
        result = subprocess.run(
            [str(CHUTE), "run", "--config", str(missing.write("missing"))], capture_output=True, text=True, timeout=60
        )
        assert (result.returncode, result.stderr.splitlines()) == (
            1,
            [f"chute: cannot read executor.security.ca_file {tmp_path / 'gone.pem'}"],
        )
        setup = Setup(
            tmp_path,
            executor={"kind": "dask", "address": cluster.address, "security": {k: str(v) for k, v in tls.items()}},
        )
        inbox = setup.inbox()
        path = Path(inbox["path"])
        path.mkdir(exist_ok=True)
        inputs = {f"f{i}.bin": f"file {i}\n".encode() for i in range(3)}
        with Daemon(setup.write()) as d:
            d.wait_event("executor.worker_joined")
            for name, data in inputs.items():
                drop(path, name, data)
            wait_until(lambda: len(files(Path(inbox["archive"]))) == len(inputs), 60)
            assert d.stop() == 0
        assert_processed_once(inbox, inputs)
    finally:
        cluster.close()
