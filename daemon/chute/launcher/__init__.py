"""The warm module launcher: modules forked from a process that has already imported PyAV, numpy and Pillow.

A fresh ``python main.py`` pays for the interpreter (~20 ms) and for ``import av`` (~180 ms) on every
module run. The launcher is one ``python -m chute.launcher`` per `Launcher`, started on the first
`Launcher.spawn`, that imports ``chute.modkit`` and the preload list once, then forks a child per module
run. The child is made into what ``subprocess.Popen([python, entrypoint, *args], cwd=folder, env=env,
stdin=DEVNULL, start_new_session=True, close_fds=True)`` would have given (contract §2): its own session and
process group, the module's argv, cwd, environment, sys.path[0], fresh sys.stdin/stdout/stderr on fds 0-2
and nothing else open, the signal dispositions and mask a fresh interpreter starts with, reseeded random
generators; the entrypoint then runs as ``__main__`` at the top level of the launcher's main, so the
interpreter's own exit (exit status, traceback, joining threads, atexit) is the module's, except that
the preloaded libraries are not torn down (`child.exit_module` says why and what is kept).

What cannot be re-done in a forked child is what an interpreter reads once at start-up
(`protocol.is_startup_variable`: PYTHON*, the locale, the dynamic loader, thread counts): the launcher is
started with the first module's values, and a module whose environment differs there gets
`LauncherUnavailable` (run it fresh). The preloaded libraries were imported with the launcher's
environment, and every module shares the launcher's str hash seed (unless PYTHONHASHSEED fixes it for both).

One program per file, in the order they run: `client` (the `Launcher`, in the process that wants modules
run: a pool worker, a Dask worker, `chute submit`), `server` (the launcher process, `python -m
chute.launcher`, see `__main__`), `child` (a forked child becoming the module); `protocol` is what the
client and the launcher share, `warm` the launcher a process keeps between its runs.
"""

from .client import Exit, Launcher, LauncherUnavailable

__all__ = ["Exit", "Launcher", "LauncherUnavailable"]
