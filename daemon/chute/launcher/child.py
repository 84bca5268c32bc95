"""A forked child of the launcher becoming the module: the state of a fresh ``python entrypoint``, then its exit.

The launcher (server.py) forks; the child returns out of its serve loop with a `ModuleRun`, and
``__main__`` calls `run_as_main` at the top level, so the interpreter's own exit is the module's.
"""

from __future__ import annotations

import atexit
import gc
import importlib.machinery
import io
import os
import signal
import sys
import time
import types
import weakref
from dataclasses import dataclass
from typing import Any

from .. import procs
from .protocol import is_startup_variable, startup_variables


@dataclass
class Ending:
    """How the module running in this process ends, once its code has: set by `run_as_main`, acted on by
    `exit_module` (registered first at the launcher's start, so it is the last atexit handler to run)."""

    fast: bool = False  # exit_module is registered: the module's exit skips tearing down the preloads
    status: int | None = None  # None: in the launcher, or a status only the interpreter knows
    interrupted: bool = False  # an uncaught KeyboardInterrupt: die by SIGINT, as a fresh interpreter does
    launcher_modules: frozenset[str] = frozenset()  # sys.modules when the launcher was ready


ending = Ending()  # this process's: the launcher's, and after the fork the module's
_PACKAGE = os.path.dirname(__file__)  # a traceback's frames in here are the launcher's, not the module's
_SYS_DELETES = (
    "path",
    "argv",
    "ps1",
    "ps2",
    "last_type",
    "last_value",
    "last_traceback",
    "path_hooks",
    "path_importer_cache",
    "meta_path",
    "__interactivehook__",
)


@dataclass(frozen=True)
class Startup:
    """What this interpreter started with, that every module it forks must start with too."""

    environ: dict[str, str]  # start-up variables as the interpreter left them (PEP 538 may set LC_CTYPE)
    path: list[str]  # sys.path without the entry for the script (or here, the cwd of -m)
    handlers: dict[int, Any]  # signal number -> SIG_DFL, SIG_IGN or default_int_handler
    mask: set[int]  # blocked signals, inherited as a fresh exec would inherit them
    encoding: str  # of sys.stdin/stdout/stderr (PYTHONIOENCODING, the locale, UTF-8 mode)
    errors: str  # of sys.stdin/stdout (stderr's is always backslashreplace)
    buffered: bool  # stdio buffered, unless PYTHONUNBUFFERED / -u (sys.flags does not say)

    @classmethod
    def take(cls) -> Startup:
        handlers = {
            signum: signal.getsignal(signum)
            for signum in signal.valid_signals()
            if signum not in (signal.SIGKILL, signal.SIGSTOP)
        }
        stdout: Any = sys.__stdout__  # the launcher's own: it is started with stdout on /dev/null
        return cls(
            environ=startup_variables(os.environ),
            path=sys.path[0 if sys.flags.safe_path else 1 :],
            handlers={signum: handler for signum, handler in handlers.items() if handler is not None},
            mask=signal.pthread_sigmask(signal.SIG_BLOCK, []),
            encoding=stdout.encoding,
            errors=stdout.errors,
            buffered=not stdout.write_through,
        )


@dataclass(frozen=True)
class ModuleRun:
    """What a forked child runs: argv as the module would have been exec'd with, and its environment."""

    argv: list[str]
    env: dict[str, str]
    startup: Startup


def register_exit() -> None:
    """Register `exit_module`, if it can be the last atexit handler to run (none is registered yet)."""
    if atexit._ncallbacks() == 0:  # it must run last, so it must be registered first
        atexit.register(exit_module)
        ending.fast = True


def _become(run: ModuleRun) -> str:
    """In the child: the process state of a fresh ``python entrypoint``; returns the script's path."""
    startup = run.startup
    os.environ.clear()  # os.environ's updates putenv, so C code and subprocesses see the module's
    os.environ.update({name: value for name, value in run.env.items() if not is_startup_variable(name)})
    os.environ.update(startup.environ)
    for signum, handler in startup.handlers.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, startup.mask)
    _open_stdio(startup)
    script = run.argv[1]
    path = os.path.join(os.getcwd(), script)  # as CPython makes __file__: joined, not normalized
    sys.argv, sys.orig_argv = list(run.argv[1:]), list(run.argv)
    sys.path[:] = ([] if sys.flags.safe_path else [os.path.dirname(os.path.realpath(path))]) + startup.path
    _reset_libraries()
    return path


def _open_stdio(startup: Startup) -> None:
    """sys.stdin/stdout/stderr on fds 0-2, made as CPython's create_stdio makes them (Python/pylifecycle.c)."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        errors = "backslashreplace" if name == "stderr" else startup.errors
        stream = _stdio_stream(fd, f"<{name}>", startup.encoding, errors, startup.buffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)  # typeshed calls sys.__stdout__ final; CPython's create_stdio sets it


def _stdio_stream(fd: int, name: str, encoding: str, errors: str, buffered: bool) -> io.TextIOWrapper:
    writing = fd != 0
    buffer: Any = open(fd, "wb" if writing else "rb", -1 if buffered or not writing else 0, closefd=False)
    raw = getattr(buffer, "raw", buffer)  # unbuffered: the FileIO itself
    raw.name = name
    line_buffering = buffered and (raw.isatty() or fd == 2)
    stream: Any = io.TextIOWrapper(buffer, encoding, errors, "\n", line_buffering, not buffered)
    stream.mode = "w" if writing else "r"
    return stream


def _reset_libraries() -> None:
    """State the launcher's imports hold that a fresh interpreter would make anew from the module's environment."""
    modules: dict[str, Any] = sys.modules  # only those already imported: importing one here would cost the module
    if "tempfile" in modules:
        modules["tempfile"].tempdir = None  # re-read from the module's TMPDIR
    time.tzset()
    if "numpy.random" in modules:
        modules["numpy.random"].seed()  # `random` reseeds itself at fork; numpy's global RandomState does not
    if "faulthandler" in modules and modules["faulthandler"].is_enabled():
        modules["faulthandler"].enable()  # onto the new sys.stderr


def _main_namespace(path: str) -> dict[str, Any]:
    """A new ``__main__`` module for the script at `path`, as ``python path`` makes it (Python/pythonrun.c)."""
    main_module = types.ModuleType("__main__")
    namespace = main_module.__dict__
    namespace["__loader__"] = importlib.machinery.SourceFileLoader("__main__", path)
    namespace["__annotations__"] = {}
    namespace["__builtins__"] = sys.modules["builtins"]
    namespace["__file__"] = path
    namespace["__cached__"] = None
    sys.modules["__main__"] = main_module
    return namespace


def _run_script(path: str, program: str, namespace: dict[str, Any]) -> None:
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as error:
        print(f"{program}: can't open file {path!r}: [Errno {error.errno}] {error.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    exec(compile(source, path, "exec", dont_inherit=True), namespace)


def run_as_main(run: ModuleRun) -> None:
    """Become the module and run it; the interpreter's exit is then the module's, as for a fresh one.

    The steps after the script are _PyRun_SimpleFileObject's: flush stdio; then either exit at once
    (SystemExit), or report an uncaught exception, and remove __file__ and __cached__ from __main__.
    """
    path = _become(run)
    namespace = _main_namespace(path)
    try:
        _run_script(path, run.argv[0], namespace)
    except SystemExit as exit:
        _flush_io()
        ending.status = _status_of(exit.code)
        raise  # the interpreter prints sys.exit("text") itself
    except BaseException as error:  # noqa: BLE001 - an uncaught exception ends a fresh interpreter so
        _flush_io()
        if isinstance(error, KeyboardInterrupt) and not ending.fast:
            raise  # then only the interpreter can die by SIGINT (and the traceback shows launcher frames)
        _print_uncaught(error)
        ending.status, ending.interrupted = 1, isinstance(error, KeyboardInterrupt)
        _forget_file(namespace)
        raise SystemExit(1) from None
    _flush_io()
    _forget_file(namespace)
    ending.status = 0


def _flush_io() -> None:
    for stream in (sys.stderr, sys.stdout):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - as flush_io() in Python/pythonrun.c: errors are cleared
            pass


def _forget_file(namespace: dict[str, Any]) -> None:
    namespace.pop("__file__", None)
    namespace.pop("__cached__", None)


def _print_uncaught(error: BaseException) -> None:
    traceback = error.__traceback__
    while traceback is not None and os.path.dirname(traceback.tb_frame.f_code.co_filename) == _PACKAGE:
        traceback = traceback.tb_next  # the module's frames only, as a fresh interpreter shows them
    error.__traceback__ = traceback
    sys.last_type, sys.last_value, sys.last_traceback = type(error), error, traceback
    sys.excepthook(type(error), error, traceback)


def _status_of(code: object) -> int | None:
    """The exit status sys.exit(code) gives (None: one only the interpreter computes)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code if -(2**31) <= code < 2**31 else None
    return 1


def exit_module() -> None:
    """The last atexit handler of a module's process: the rest of a fresh interpreter's exit, made cheap.

    Py_FinalizeEx would now tear down every module, the preloads included: each object the launcher
    imported gets decref'd, and each such write copies a page shared with the launcher (~4000 page
    faults, ~15 ms after av + numpy + PIL). So this does what a module can notice of that teardown, in
    CPython's order (Py_FinalizeEx, Python/pylifecycle.c): non-daemon threads were joined and the other
    atexit handlers ran before this one; stdio is flushed (status 120 if that fails); __main__ and the
    modules the module imported are dropped and cleared, and collected, so their objects' __del__ and
    finalizers run; stdio is flushed again; then death by SIGINT after an uncaught KeyboardInterrupt,
    else every C stdio stream is flushed (fflush(NULL), what a module's C code can have buffered) and
    the process ends with _exit. What it leaves out is tearing down the objects the launcher made
    before the fork, and the C libraries' own exit handlers and destructors (the preloads': FFmpeg,
    OpenBLAS, libjpeg free their memory there), which cost ~2 ms a module and nothing it could see.
    """
    if ending.status is None:
        return  # the launcher itself, or an exit status only the interpreter knows: its full teardown
    status = ending.status if _flush_std_files() else 120
    _release_module_state()
    _flush_io()  # as CPython's later flush (or the streams' dealloc): silent, the status stays
    if ending.interrupted:  # exit_sigint() in Modules/main.c
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        status = 128 + signal.SIGINT  # still alive: SIGINT is blocked
    procs.flush_c_streams(hold_gil=True)  # so daemon threads stay stopped meanwhile
    os._exit(status)


def _flush_std_files() -> bool:
    """Flush sys.stdout and sys.stderr as flush_std_files() does; False if one failed."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except Exception as error:  # noqa: BLE001 - reported as CPython reports it (for stdout only)
            flushed = False
            if stream is sys.stdout and sys.stderr is not None:
                print(f"Exception ignored in: {stream!r}", file=sys.stderr)
                error.__traceback__ = None  # raised by C code: CPython shows no frame
                sys.excepthook(type(error), error, None)
    return flushed


def _release_module_state() -> None:
    """Tear down __main__ and the modules the module imported, as Py_FinalizeEx and finalize_modules do."""
    atexit._clear()  # CPython drops the callbacks once they all ran (this one never returns)
    gc.collect()  # before modules are destroyed, as CPython does; it also decides the order below
    _delete_special()
    imported = []
    for name in reversed(sys.modules):  # newest first; the launcher's modules are all older
        if name in ending.launcher_modules:
            break
        imported.append(name)
    modules = [sys.modules.pop(name, None) for name in ["__main__", *reversed(imported)]]
    refs = [weakref.ref(module) for module in modules if isinstance(module, types.ModuleType)]
    del modules
    gc.collect()  # most go here, with all they alone held
    for ref in reversed(refs):  # those still alive are wiped, the last imported first
        module = ref()
        if module is not None:
            _clear_module_dict(module.__dict__)
    module = None
    gc.collect()


def _delete_special() -> None:
    # As finalize_modules_delete_special: where a module's values hide from the teardown of modules.
    vars(sys.modules["builtins"])["_"] = None
    for name in _SYS_DELETES:
        setattr(sys, name, None)
    sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__


def _clear_module_dict(namespace: dict[str, Any]) -> None:
    # As _PyModule_ClearDict: names with one leading underscore first, then all but __builtins__.
    names = [name for name in namespace if isinstance(name, str)]
    for name in names:
        if name.startswith("_") and not name.startswith("__"):
            namespace[name] = None
    for name in names:
        if name != "__builtins__":
            namespace[name] = None
