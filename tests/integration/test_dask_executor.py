"""The Dask executor in this process, on a real cluster: what it does when its own connection drops.

The daemon's connection to the scheduler is cut (its comm aborted, as a network
blip would) while the scheduler and the worker stay up, so the worker goes on
running the attempt the daemon has given up on: it must be stopped before the
run is sent again (two attempts of one run must never overlap).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.harness import Setup, files, processes_with, wait_until

pytest.importorskip(
    "distributed", reason="the Dask executor needs dask.distributed, from the `dask` extra (`make venv` installs it)"
)

from chute.catalog import load_catalog  # noqa: E402
from chute.claims import new_run_id  # noqa: E402
from chute.dask_executor import DaskExecutor  # noqa: E402
from chute.executor import ExecutorUnavailable  # noqa: E402
from chute.run import Launch, RunSpec, RunStatus  # noqa: E402

from tests.acceptance.test_dask import SLEEP_ONCE, alive  # noqa: E402
from tests.dask_cluster import Cluster  # noqa: E402


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path, env={"CHUTE_TEST_ONCE": str(tmp_path / "once")})
    yield c
    c.close()


def test_an_attempt_left_running_by_a_lost_connection_is_stopped_before_the_run_goes_again(tmp_path, cluster):
    (tmp_path / "once").mkdir()
    cluster.add_worker("a")
    cluster.wait_for_workers(1)
    # Fresh interpreters: the test finds the module by the run's marker in its /proc environ
    # (a module forked by a warm launcher shows the launcher's environment there).
    setup = Setup(tmp_path, executor={"kind": "dask", "address": cluster.address})
    main = setup.defs / "modules" / "copy" / "main.py"
    main.write_text(SLEEP_ONCE + main.read_text())
    inbox = setup.inbox()
    for key in ("path", "outbox", "quarantine"):
        Path(inbox[key], ".chute" if key == "path" else "").mkdir(parents=True)
    cat = load_catalog(setup.write())
    cfg = cat.config
    cfg.work_dir.mkdir()
    source = tmp_path / "clip.bin"
    source.write_bytes(b"clip\n")
    spec = RunSpec(
        run_id=new_run_id(),
        job=cat.jobs["twostep"],
        input_path=source,
        input_name=source.name,
        outbox=Path(inbox["outbox"]),
        quarantine=Path(inbox["quarantine"]),
        work_dir=cfg.work_dir,
        owner="test",
        default_timeout=60,
        host="test",
        environ=(),
        python=sys.executable,
        launch=Launch("fresh"),
    )
    executor = DaskExecutor(lambda: cfg)
    try:
        wait_until(lambda: executor.free() == 1, 30)
        first = executor.submit(spec)
        [module] = wait_until(lambda: processes_with(f"CHUTE_RUN_ID={spec.run_id}"), 30)
        executor.client.scheduler_comm.comm.abort()  # the daemon's connection only
        with pytest.raises(ExecutorUnavailable):
            first.result(30)
        wait_until(lambda: not alive(module), 30)  # stopped on the worker that never lost the scheduler
        wait_until(lambda: executor.free() == 1 and not executor.cluster.stale_now(), 30)
        result = executor.submit(spec).result(60)
    finally:
        executor.close()
    assert result.status == RunStatus.SUCCEEDED and result.worker is not None
    assert files(Path(inbox["outbox"])) == ["clip"]
