"""The `chute` command line (contract §7): each bad input is one line and an exit code."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from . import config as config_mod
from .errors import RET_FAILED, RET_INTERRUPTED, RET_OK, ChuteError, DefinitionError, UsageError
from .model import display_path
from .names import shown

# The catalog (every module and job) and `chute submit`'s runner are imported by the commands that use
# them: `chute status` reads only the config and the ledger, and answers in a fraction of a second (issue 21).
if TYPE_CHECKING:
    from .catalog import Catalog

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


def _catalog(args: argparse.Namespace) -> Catalog:
    from .catalog import load_catalog

    return load_catalog(config_mod.find(args.config))


@command("check")
def cmd_check(args: argparse.Namespace) -> int:
    from .catalog import load_catalog

    file = config_mod.find(args.config)
    try:
        cat = load_catalog(file)
    except DefinitionError as exc:
        for problem in exc.problems:
            print(shown(problem), file=sys.stderr)
        n = len(exc.problems)
        print(f"{display_path(file)}: invalid, {n} problem{'s' if n != 1 else ''}", file=sys.stderr)
        return RET_FAILED
    cfg = cat.config
    embedded = " (the embedded default)" if cat.config_file == config_mod.EMBEDDED_DEFAULT.resolve() else ""
    print(f"config   {display_path(cat.config_file)}{embedded}")
    print(f"modules  {len(cat.modules)}: {', '.join(sorted(cat.modules)) or '-'}")
    print(f"jobs     {len(cat.jobs)}: {', '.join(sorted(cat.jobs)) or '-'}")
    print(f"inboxes  {len(cfg.inboxes)}")
    for inbox in cfg.inboxes:
        print(f"  {shown(inbox.path)} -> {inbox.job} -> {shown(inbox.outbox)}")
    for n, inbox in enumerate(cfg.inboxes):
        if not inbox.create and not inbox.path.is_dir():
            where = f"inboxes[{n}].path {shown(inbox.path)}"
            print(f"warning: {where} does not exist: the daemon waits for it (create: true makes it at start)")
    print("ok")
    return RET_OK


@command("plan")
def cmd_plan(args: argparse.Namespace) -> int:
    cat = _catalog(args)
    if args.job not in cat.jobs:
        from .yamlfile import did_you_mean

        hint = did_you_mean(args.job, cat.jobs) or f" (defined: {', '.join(sorted(cat.jobs)) or 'none'})"
        raise UsageError(f"no job named {args.job!r}{hint}")
    plan = cat.jobs[args.job]
    print(f"job {plan.name} {plan.version}  ({display_path(Path(plan.source))})")
    print(f"input: the dropped file ({plan.input_type}) -> {', '.join(plan.input_names)}")
    for n, step in enumerate(plan.steps, 1):
        print(f"step {n}: {step.name}  ({len(step.entries)} in parallel)")
        for e in step.entries:
            flags = [f"--{b.param} {b.artifact}" for b in e.inputs + e.outputs]
            flags += [f"--{k} {v}" for k, v in e.options]
            print(f"  {e.module}  {shown(' '.join(flags))}")
    print("artifacts:")
    width = max(len(a.name) for a in plan.artifacts)
    for a in plan.artifacts:
        origin = "the dropped file" if a.step is None else f"{a.step}/{a.module}"
        kept = "public" if a.public else "deleted after the run"
        print(f"  {shown(a.name):<{width}}  {a.type:<8} {origin:<28} {kept}")
    return RET_OK


@command("schema")
def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from .schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return RET_OK


@command("init")
def cmd_init(args: argparse.Namespace) -> int:
    from .starter import init

    made = init(args.dir)
    print(f"wrote {shown(display_path(made[0]))}")
    print(f"made  {', '.join(shown(display_path(p)) for p in made[1:])}")
    config = shown(display_path(made[0]))
    print(f"next: chute check --config {config}, then chute run --config {config}")
    return RET_OK


@command("modules")
def cmd_modules(args: argparse.Namespace) -> int:
    cat = _catalog(args)
    for name in sorted(cat.modules):
        m = cat.modules[name].manifest
        ins = ", ".join(f"{a.param_name}:{a.type}" for a in m.inputs)
        outs = ", ".join(f"{a.param_name}:{a.type}" for a in m.outputs)
        print(f"{name:<18} {shown(m.version or '-'):<6} {ins} -> {outs}   {shown(m.description)}")
    return RET_OK


@command("jobs")
def cmd_jobs(args: argparse.Namespace) -> int:
    cat = _catalog(args)
    for name in sorted(cat.jobs):
        plan = cat.jobs[name]
        public = ", ".join(a.name for a in plan.public)
        public, version = shown(public), shown(plan.version)
        print(f"{name:<18} {version:<6} {len(plan.steps)} steps, {len(plan.entries())} entries; publishes {public}")
    return RET_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chute", description="A watch-folder daemon that runs media pipelines.")
    p.add_argument("--version", action="version", version=f"chute {__version__}")
    p.add_argument("--verbose", "-v", action="store_true", help="more detail on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument(
            "--config",
            type=Path,
            help="config file (default: ./config.yaml, /etc/chute/config.yaml, the embedded default)",
        )
        sp.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help="more detail on errors")
        return sp

    add("check", "validate the config, modules and jobs")
    add("plan", "show a job's resolved steps and artifact flow").add_argument("job")
    add("modules", "list the loaded modules")
    add("jobs", "list the defined jobs")
    sub.add_parser("schema", help="print the JSON Schema of the config file (for editors: see config.example.yaml)")
    sub.add_parser("init", help="write a starter config.yaml and its folders in DIR").add_argument("dir", type=Path)
    for extra in EXTRA_PARSERS:
        extra(add)
    return p


def _extra_parsers() -> list[Callable]:
    from .web.command import add_parser as web_parser  # argparse only: the web app is imported by `chute web`

    return [_submit_parser, _run_parser, _status_parser, _retry_parser, _pause_parser, web_parser]


def _submit_parser(add) -> None:
    sp = add("submit", "run one job on one file now (the file is read in place, never moved)")
    sp.add_argument("file", type=Path)
    sp.add_argument("--job", required=True)
    sp.add_argument("--outbox", type=Path, help="default: the outbox of the first inbox that runs this job")
    sp.add_argument(
        "--quarantine", type=Path, help="default: that inbox's quarantine, or a 'quarantine' folder beside the outbox"
    )


@command("submit")
def cmd_submit(args: argparse.Namespace) -> int:
    from . import submit

    return submit.run(args)


def _run_parser(add) -> None:
    sp = add("run", "run the daemon (in the foreground unless --detach)")
    sp.add_argument(
        "--detach",
        action="store_true",
        help="run in the background, for hosts without systemd (under systemd, run in the foreground); "
        "returns once the daemon is watching its inboxes",
    )
    sp.add_argument(
        "--pidfile",
        type=Path,
        help="with --detach, required: holds the daemon's pid while it runs; a second --detach on it "
        "refuses (exit 3), one left by a dead daemon is taken over; removed on a clean stop",
    )
    sp.add_argument(
        "--log-file",
        type=Path,
        help="with --detach, required: the log lines are appended here (JSON unless log.format says "
        "otherwise); rotate it with logrotate's copytruncate",
    )


def _status_parser(add) -> None:
    sp = add("status", "what is queued, running, and the last results")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--limit", type=int, default=20, help="how many recent results (default 20)")


def _retry_parser(add) -> None:
    sp = add("retry", "move quarantined inputs back into their inbox")
    sp.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    sp.add_argument("--all", action="store_true", help="every quarantined input still in its quarantine folder")


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from . import logs
    from .service import run_daemon

    cat = _catalog(args)
    if args.detach:
        from .detach import detach

        return detach(cat, args.pidfile, args.log_file)
    if args.pidfile or args.log_file:
        raise UsageError("--pidfile and --log-file go with --detach")
    logs.configure(cat.config.log.format, cat.config.log.level)
    run_daemon(cat)
    return RET_OK


def _ledger_exists(state_dir: Path) -> None:
    from .ledger import FILE

    if not (state_dir / FILE).exists():
        raise ChuteError(f"no ledger in {state_dir}: the daemon has not run with this config yet")


@command("status")
def cmd_status(args: argparse.Namespace) -> int:
    from . import status
    from .config_check import load_config

    # The config alone: a module or job that fails to load does not hide what the ledger says.
    config, _ = load_config(config_mod.find(args.config))
    _ledger_exists(config.state_dir)
    status.show(config, args.limit, args.json)
    return RET_OK


@command("retry")
def cmd_retry(args: argparse.Namespace) -> int:
    from .ledger import Ledger
    from .retry import retry

    if not args.run_ids and not args.all:
        raise UsageError("name the RUN_IDs to retry, or pass --all")
    if args.run_ids and args.all:
        # Both would pair each named id with whichever failed run came first.
        raise UsageError("name the RUN_IDs to retry or pass --all, not both")
    cat = _catalog(args)
    _ledger_exists(cat.config.state_dir)
    ledger = Ledger(cat.config.state_dir)
    try:
        failed = retry(ledger, args.run_ids)
    finally:
        ledger.close()
    return RET_FAILED if failed else RET_OK


def _pause_parser(add) -> None:
    sp = add("pause", "stop claiming (from these inboxes, or all); the runs in flight finish")
    sp.add_argument("inboxes", nargs="*", metavar="INBOX", help="an inbox's path, as configured or resolved")
    sp.add_argument("--wait", action="store_true", help="return once nothing runs in the paused inboxes")
    sp = add("resume", "claim again (from these inboxes, or all)")
    sp.add_argument("inboxes", nargs="*", metavar="INBOX", help="an inbox's path, as configured or resolved")


@command("pause")
@command("resume")
def cmd_pause(args: argparse.Namespace) -> int:
    from . import control_client
    from .config_check import load_config

    file = config_mod.find(args.config)
    config, _ = load_config(file)
    named = control_client.inbox_paths(file, [str(i.path) for i in config.inboxes], args.inboxes)
    message: dict = {"op": args.command, "by": "cli"} | ({} if named is None else {"inboxes": named})
    reply = control_client.request(config.state_dir, message)
    status = control_client.request(config.state_dir, {"op": "status"})
    rows = [r for r in status["inboxes"] if named is None or r["path"] in named]
    for r in rows:
        state = "paused" if r["paused"] else "claiming"
        busy = f"  ({r['running']} running, {r['queued']} queued)" if r["running"] or r["queued"] else ""
        changed = "" if r["path"] in reply["changed"] else f"  (already {state})"
        print(f"{state:<9} {shown(r['path'])}{busy}{changed}")
    if args.command == "pause" and args.wait:
        wait: dict = {"op": "wait"} | ({} if named is None else {"inboxes": named})
        while not control_client.request(config.state_dir, wait).get("idle"):
            pass  # the daemon held the request WAIT_MAX seconds: ask again
        print("drained: nothing runs in the paused inboxes")
    return RET_OK


@command("web")
def cmd_web(args: argparse.Namespace) -> int:
    from .web.command import run

    return run(args)


EXTRA_PARSERS = _extra_parsers()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DefinitionError as exc:
        for problem in exc.problems:
            print(shown(problem), file=sys.stderr)
        return exc.exit_code
    except ChuteError as exc:
        print(f"chute: {shown(exc)}", file=sys.stderr)
        if args.verbose and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("chute: interrupted", file=sys.stderr)
        return RET_INTERRUPTED
    except Exception as exc:  # a bug: still one line unless asked for more
        print(
            f"chute: internal error: {type(exc).__name__}: {shown(exc)} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        if args.verbose:
            traceback.print_exc()
        return RET_FAILED


if __name__ == "__main__":
    sys.exit(main())
