"""`chute submit FILE --job NAME`: one run now, in the foreground, with live progress."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

from . import config as config_mod
from . import entry, logs, staging
from .catalog import Catalog, load_catalog
from .claims import new_run_id
from .errors import RET_FAILED, RET_OK, UsageError
from .launcher.warm import Modules
from .leases import Identity
from .names import shown
from .run import Launch, RunResult, RunSpec, RunStatus
from .runner import execute
from .systemd import module_environ


def _folders(cat, args) -> tuple[Path, Path]:
    inbox = next((i for i in cat.config.inboxes if i.job == args.job), None)
    outbox = args.outbox or (inbox.outbox if inbox else None)
    if outbox is None:
        raise UsageError(f"job {args.job!r} has no inbox in the config: pass --outbox")
    quarantine = args.quarantine or (
        inbox.quarantine if inbox and not args.outbox else outbox.resolve().parent / "quarantine"
    )
    return outbox.resolve(), quarantine.resolve()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    # A file name that is not UTF-8 is printed as its own bytes, as ls(1) would, instead of
    # failing in print() after the run (stdout is strict under a UTF-8 locale).
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # not on a StringIO that a caller swapped in
            stream.reconfigure(errors="surrogateescape")
    cat = load_catalog(config_mod.find(args.config))
    if args.job not in cat.jobs:
        raise UsageError(f"no job named {args.job!r} (defined: {', '.join(sorted(cat.jobs)) or 'none'})")
    file = args.file
    if not file.is_file():
        raise UsageError(f"{file} is not a file")
    outbox, quarantine = _folders(cat, args)
    cfg = cat.config
    for folder in (outbox, quarantine):  # given on the command line: made now, never by the delivery
        folder.mkdir(parents=True, exist_ok=True)
    spec = _spec(cat, args.job, file, outbox, quarantine)
    # SIGTERM too stops every module process and removes the workspace, like Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    interactive = sys.stdout.isatty() and cfg.log.format != "json"
    # Log lines go to stderr, so stdout holds just the result (`dir=$(chute submit ...)` works).
    logs.configure(cfg.log.format, "warning" if interactive else cfg.log.level, stream=sys.stderr)
    # This process runs nothing else: whatever a module leaves is ours to end. Without it (OSError),
    # what a module leaves is found by its run's marker only (the step engine's sweep).
    with contextlib.suppress(OSError):
        entry.become_subreaper()
    modules = _launcher(spec)
    try:
        result = _with_progress(spec, modules) if interactive else execute(spec, modules=modules)
    finally:
        if modules is not None:
            modules.close()
        entry.kill_orphans(set())
        shutil.rmtree(cfg.work_dir / spec.owner, ignore_errors=True)
    return _report(result)


def _spec(cat: Catalog, job: str, file: Path, outbox: Path, quarantine: Path) -> RunSpec:
    """The run of `file` by `job`, in a workspace owner folder of this process's own."""
    cfg = cat.config
    me = Identity.mine()
    owner = staging.owner_dir(cfg.work_dir, me, f"submit-{me.daemon_id}").name
    return RunSpec(
        run_id=new_run_id(),
        job=cat.jobs[job],
        input_path=file.resolve(),
        input_name=file.name,
        outbox=outbox,
        quarantine=quarantine,
        work_dir=cfg.work_dir,
        owner=owner,
        default_timeout=cfg.defaults.timeout,
        host=me.host,
        environ=tuple(module_environ(os.environ).items()),
        python=sys.executable,
        launch=Launch(cfg.launcher.mode, tuple(cfg.launcher.preload)),
        work_reserve=cfg.work_reserve,
    )


def _launcher(spec: RunSpec) -> Modules | None:
    modules = Modules()
    return modules if modules.for_run(spec) is not None else None


def _with_progress(spec: RunSpec, modules) -> RunResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description:<32}"),
        BarColumn(),
        TextColumn("{task.fields[state]:<10}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        tasks = {
            e.label: progress.add_task(f"{e.step} / {e.module}", total=1.0, state="waiting", start=False)
            for e in spec.job.entries()
        }

        def emit(event: str, label: str, **fields) -> None:
            task = tasks[label]
            if event == "entry.started":
                progress.start_task(task)
                progress.update(task, state=f"try {fields['attempt']}" if fields["attempt"] > 1 else "running")
            elif event == "entry.progress":
                progress.update(task, completed=fields["progress"])
            elif event == "entry.finished":
                progress.update(task, completed=1.0, state="done")
            elif event == "entry.failed":
                progress.update(task, state="retrying" if fields["retrying"] else "failed")

        return execute(spec, emit=emit, modules=modules)


def _report(result: RunResult) -> int:
    if result.status == RunStatus.SUCCEEDED:
        # On a terminal the folder is shown escaped; to a pipe it is its exact bytes, so `dir=$(chute submit ...)`
        # names the folder even when the input's name holds a newline or is not UTF-8.
        print(f"published {shown(result.result_dir) if sys.stdout.isatty() else result.result_dir}")
        return RET_OK
    error = result.error or {}
    where = " / ".join(x for x in (error.get("step"), error.get("module")) if x)
    print(f"failed{' in ' + where if where else ''}: {shown(error.get('reason'))}", file=sys.stderr)
    if result.result_dir:
        print(f"report in {shown(result.result_dir)}", file=sys.stderr)
    return RET_FAILED
