"""The bundled media modules against the ffmpeg command line, side by side.

Usage: .venv/bin/python bench/media.py [--clip FILE] [--seconds 30] [--repeat 3]
       [--long FILE | --long-minutes 10 | --no-long] [--keep DIR]

Makes (with PyAV, no ffmpeg needed) the test clip: 1280x720 25 fps
``testsrc2``, x264 ``preset fast crf 20`` with x264's default GOP (250
frames, 10 s), a 997 Hz sine in 48 kHz stereo AAC; or takes ``--clip``.
Then, ``--repeat`` times and alternating so that a busy machine slows both
sides alike, runs:

- each module through chute, as a one-entry job: two ``chute run`` daemons
  (one pool worker each, one with the warm launcher, one with ``launcher:
  {mode: fresh}``), started once before the rounds as a daemon is, and a
  file dropped into the module's inbox; the time is from the claim to the
  ledger row (the ledger's ``queued_at`` to ``finished_at``): staging and
  hashing the input, launching the module, the module, checking its output,
  publishing the result, archiving the input and writing the ledger. The CPU
  time is everything the daemon and its processes spent meanwhile;
- the whole ``media_ingest`` job the same way, and through ``chute submit``
  (which starts chute and its launcher, with the preloads, for the one file);
- where the ``ffmpeg`` command is installed, the same products with the CLI,
  from starting the command to its exit (its start-up included), and the
  job as a script would run them: probe, sheet, WAV and proxy at once, then
  loudness and waveform;
- the contact sheet of a 1080p 10-minute file with a 10 s GOP (made once,
  and kept with ``--keep``: it takes minutes to encode), against the CLI
  decoding keyframes only.

Prints the fastest of the repeats for each, with the CPU time (user + sys,
all threads and children) of that run, and the ratio of wall times to the
CLI's: the median over the rounds of each round's ratio (the runs of a
round are next to each other, under the same load). On a shared machine the
CPU times say what the wall times cannot.
"""

from __future__ import annotations

import argparse
import heapq
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import av
import av.filter
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.proctime import cpu, reaped, tree_cpu  # noqa: E402
from tests.harness import Daemon, Setup, files, ledger_runs  # noqa: E402

MODULES = ROOT / "modules"
JOBS = ROOT / "jobs"
LONG_ROW = "contact sheet, long 1080p file"
SUBMIT_ROW = "media_ingest (`chute submit`)"
MODES = ("warm", "fresh")
RUN_TIMEOUT = 900.0  # seconds one run may take before the bench gives up (the long file's, on a busy machine)


@dataclass
class Row:
    """One product: every measurement of the repeats, as (wall, cpu) seconds."""

    name: str
    warm: list[tuple[float, float]] = field(default_factory=list)
    fresh: list[tuple[float, float]] = field(default_factory=list)
    cli: list[tuple[float, float]] = field(default_factory=list)

    def best(self, which):
        """The fastest run's (wall, cpu), or None."""
        values = getattr(self, which)
        return min(values) if values else None

    def ratio(self, which):
        """The median over the rounds of this round's wall time / the CLI's, or None.

        Each chute run is next to its CLI run, so a round's ratio compares two
        runs under the same load; the best times may come from different rounds.
        """
        pairs = [(mine[0], cli[0]) for mine, cli in zip(getattr(self, which), self.cli)]
        return statistics.median(mine / cli for mine, cli in pairs) if pairs else None


def main() -> int:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="chute-bench-media-") as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        clip = args.clip or _clip(folder / "clip.mp4", args.seconds, 1280, 720, "fast")
        long = (
            None
            if args.no_long
            else (
                args.long
                or _clip(folder / f"long-{args.long_minutes:g}min.mp4", args.long_minutes * 60, 1920, 1080, "veryfast")
            )
        )
        rows = _measure(clip, long, folder, args.repeat, shutil.which("ffmpeg") is not None)
    _print(rows, clip, long, args.repeat)
    return 0


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, help="measure on this file instead of making the clip")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the made clip")
    parser.add_argument("--repeat", type=int, default=3, help="runs of everything; the best counts")
    parser.add_argument("--long", type=Path, help="a long file for the contact sheet row")
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--no-long", action="store_true", help="skip the long file's row")
    parser.add_argument("--keep", type=Path, help="write (and reuse) clips and outputs here")
    return parser.parse_args()


def _clip(path, seconds, width, height, preset):
    if not path.exists():
        started = time.monotonic()
        print(f"making {path.name}: {seconds:g} s {width}x{height} ...", flush=True)
        partial = path.with_name(f"{path.stem}.partial{path.suffix}")
        make_test_clip(partial, seconds, width, height, preset)
        partial.rename(path)
        print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    return path


def _measure(clip, long, folder, repeat, with_cli):
    """Every row, ``repeat`` times, each chute run next to its CLI run."""
    out = folder / "out"
    out.mkdir(exist_ok=True)
    wav = _wav(clip, out / "audio.wav")
    runs = _module_rows(clip, wav, long)
    commands = cli_commands(clip, long, out) if with_cli else {}
    rows = {name: Row(name) for name in [*runs, SUBMIT_ROW]}
    with _Chutes(folder / "chute", runs) as chutes:
        for attempt in range(repeat):
            print(f"round {attempt + 1} of {repeat}", flush=True)
            for name, (_, source) in runs.items():
                rows[name].warm.append(chutes.run("warm", name, source, attempt))
                rows[name].fresh.append(chutes.run("fresh", name, source, attempt))
                if name in commands:
                    rows[name].cli.append(_run(commands[name]))
                elif name == "media_ingest" and with_cli:
                    rows[name].cli.append(cli_job(clip, out / "job"))
            rows[SUBMIT_ROW].warm.append(_submit(clip, folder))
            if with_cli:
                rows[SUBMIT_ROW].cli.append(cli_job(clip, out / "job"))
    return list(rows.values())


def _module_rows(clip, wav, long):
    """Row name -> (media_ingest's entry for the module, the input), in media_ingest's order."""
    job = yaml.safe_load((JOBS / "media_ingest.yaml").read_text())
    entries = {entry["module"]: entry for step in job["steps"] for entry in step["entries"]}
    rows = {
        "media_ingest": (None, clip),
        "probe": (entries["probe"], clip),
        "contact sheet": (entries["thumbnails"], clip),
        "audio WAV": (entries["example_module"], clip),
        "proxy": (entries["proxy"], clip),
        "loudness": (entries["loudness"], wav),
        "waveform": (entries["waveform"], wav),
    }
    if long is not None:
        rows[LONG_ROW] = (entries["thumbnails"], long)
    return rows


def _wav(clip, wav):
    """The sound of the clip, made once by the `example_module` module (loudness and waveform read it)."""
    folder = MODULES / "example_module"
    argv = [sys.executable, "main.py", "--input", str(clip), "--output", str(wav)]
    env = {**os.environ, "TMPDIR": str(wav.parent), "CHUTE_MODULE": "example_module"}
    _run(argv, cwd=folder, env=env)
    return wav


def _slug(name):
    return "".join(c if c.isalnum() else "_" for c in name)


def _one_entry_job(name, entry):
    """A job that runs one of media_ingest's entries, its output public, on the job's input."""
    entry = {**entry, "output_artifacts": [{**a, "public": True} for a in entry["output_artifacts"]]}
    return {
        "name": f"bench_{_slug(name)}",
        "version": "1.0",
        "description": f"bench: {name} alone",
        "input_artifacts": [dict(entry["input_artifacts"][0])],
        "steps": [{"name": "only", "entries": [entry]}],
    }


class _Chutes:
    """Two `chute run` daemons (warm launcher, fresh interpreters), one pool worker and one inbox per row each."""

    def __init__(self, root, runs):
        self.root, self.daemons, self.configs = root, {}, {}
        jobs = root / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        for name, (entry, _) in runs.items():
            if entry is not None:
                (jobs / f"bench_{_slug(name)}.yaml").write_text(yaml.safe_dump(_one_entry_job(name, entry)))
        for mode in MODES:
            shutil.rmtree(root / mode, ignore_errors=True)
            setup = Setup(
                root / mode,
                modules_path=[str(MODULES)],
                jobs_path=[str(jobs), str(JOBS)],
                workers=1,
                launcher={"mode": mode},
                defaults={"settle": 0.2, "poll_interval": 1.0, "timeout": RUN_TIMEOUT},
                shutdown_timeout=30,
            )
            for name in runs:
                job = "media_ingest" if name == "media_ingest" else f"bench_{_slug(name)}"
                setup.inbox(_slug(name), job=job, watch="events")
            self.configs[mode] = setup.write()

    def __enter__(self):
        for mode, config in self.configs.items():
            self.daemons[mode] = Daemon(config).start()
        return self

    def __exit__(self, *exc):
        for daemon in self.daemons.values():
            daemon.kill()

    def run(self, mode, name, source, attempt):
        """(wall, cpu) of one file through the row's inbox: from its claim to its ledger row."""
        daemon, config, slug = self.daemons[mode], self.configs[mode], _slug(name)
        inbox = self.root / mode / slug
        inbox.mkdir(exist_ok=True)
        dropped = f"{slug}-{attempt}{source.suffix}"
        hidden = inbox / f".{dropped}.dropping"
        shutil.copyfile(source, hidden)  # a copy: the run archives (moves) it and stages it read-only
        spent = _chute_cpu(daemon.pid)
        os.replace(hidden, inbox / dropped)
        deadline = time.monotonic() + RUN_TIMEOUT
        while (run := _finished(config, inbox, dropped)) is None:
            if not daemon.alive() or time.monotonic() > deadline:
                raise SystemExit(f"chute ({mode}) did not finish {dropped}:\n{daemon.text()[-3000:]}")
            time.sleep(0.1)  # a light poll: this process must not take the cores the run is measured on
        spent = _chute_cpu(daemon.pid) - spent
        if run.state.value != "succeeded":
            raise SystemExit(f"chute ({mode}) failed {dropped}: {run.error}")
        return _stamp(run.finished_at) - _stamp(run.queued_at), spent


def _finished(config, inbox, name):
    """The ledger's row of the run of ``name`` once it is written (after the input is archived), else None."""
    archived = name in files(Path(f"{inbox}-archive"))
    if not archived and not files(Path(f"{inbox}-quarantine")):  # cheap, so it is looked at first
        return None
    for run in ledger_runs(config):
        if run.input_name == name and run.finished_at is not None:
            return run
    return None


def _stamp(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _chute_cpu(daemon):
    """CPU seconds the daemon and every process under it have spent so far (reaped ones included)."""
    return cpu(daemon) + reaped(daemon) + tree_cpu(daemon)


def _submit(clip, folder):
    """(wall, cpu) of ``chute submit CLIP --job media_ingest``, its modules included."""
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "modules_path": [str(MODULES)],
                "jobs_path": [str(JOBS)],
                "state_dir": str(folder / "state"),
                "work_dir": str(folder / "work"),
                "log": {"format": "json", "level": "warning"},
            }
        )
    )
    outbox = folder / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    chute = Path(sys.executable).with_name("chute")
    argv = [str(chute), "submit", str(clip), "--job", "media_ingest", "--config", str(config), "--outbox", str(outbox)]
    return _run(argv)


def make_test_clip(path, seconds, width, height, preset):
    """testsrc2 in x264 (crf 20, default GOP) and a 997 Hz sine in AAC: the test clip."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.options = {"preset": preset, "crf": "20"}
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        pictures = _source(f"testsrc2=size={width}x{height}:rate=25:duration={seconds}", "buffersink")
        sound = _source(
            f"sine=frequency=997:sample_rate=48000:duration={seconds},aformat=sample_fmts=fltp:channel_layouts=stereo",
            "abuffersink",
        )
        # Interleaved in time, as a recorder writes them.
        timed = heapq.merge(
            ((frame.time, video, frame) for frame in pictures),
            ((frame.time, audio, frame) for frame in sound),
            key=lambda item: item[0],
        )
        for _, stream, frame in timed:
            if stream is video:
                frame.pict_type = av.video.frame.PictureType.NONE  # x264 chooses the keyframes
            container.mux(stream.encode(frame))
        for stream in (video, audio):
            container.mux(stream.encode(None))


def _source(description, sink_name):
    """Frames of an FFmpeg source filter chain, as a generator."""
    graph = av.filter.Graph()
    chain = [graph.add(*part.split("=", 1)) for part in description.split(",")]
    chain.append(graph.add(sink_name))
    for left, right in zip(chain, chain[1:]):
        left.link_to(right)
    graph.configure()
    while True:
        try:
            yield graph.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            return


def cli_commands(clip, long, out):
    """Row name -> the ffmpeg command line making the same product."""
    seconds, count = _duration(clip), 12
    quiet = ["-v", "error", "-y", "-nostdin"]
    wav = out / "cli_audio.wav"
    commands = {
        "probe": ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(clip)],
        "contact sheet": [
            "ffmpeg",
            *quiet,
            "-i",
            str(clip),
            "-vf",
            f"fps={count}/{seconds:.3f},scale=320:-2,tile=4x3",
            "-frames:v",
            "1",
            "-q:v",
            "3",
            str(out / "cli_sheet.jpg"),
        ],
        "audio WAV": ["ffmpeg", *quiet, "-i", str(clip), "-vn", "-c:a", "pcm_s16le", str(wav)],
        "proxy": [
            "ffmpeg",
            *quiet,
            "-i",
            str(clip),
            "-vf",
            "scale=-2:360",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-c:a",
            "aac",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-b:a",
            "128k",
            "-movflags",
            "+faststart",
            str(out / "cli_proxy.mp4"),
        ],
        "loudness": ["ffmpeg", "-nostdin", "-nostats", "-i", str(wav), "-af", "ebur128=peak=true", "-f", "null", "-"],
        "waveform": [
            "ffmpeg",
            *quiet,
            "-i",
            str(wav),
            "-filter_complex",
            "showwavespic=s=1200x240",
            "-frames:v",
            "1",
            str(out / "cli_waveform.png"),
        ],
    }
    if long is not None:
        every = max(1, _keyframe_count(long) // count)
        commands[LONG_ROW] = [
            "ffmpeg",
            *quiet,
            "-skip_frame",
            "nokey",
            "-i",
            str(long),
            "-vf",
            f"select=not(mod(n\\,{every})),scale=320:-2,tile=4x3",
            "-frames:v",
            "1",
            str(out / "cli_long_sheet.jpg"),
        ]
    return commands


def cli_job(clip, folder):
    """(wall, cpu) of media_ingest as a script runs it with the CLI: four at once, then two."""
    folder.mkdir(exist_ok=True)
    commands = cli_commands(clip, None, folder)
    started, cpu = time.perf_counter(), 0.0
    for batch in (["probe", "contact sheet", "audio WAV", "proxy"], ["loudness", "waveform"]):
        running = [
            subprocess.Popen(commands[name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name in batch
        ]
        for process in running:
            cpu += _reap(process, commands)
    return time.perf_counter() - started, cpu


def _duration(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return float(stream.duration * stream.time_base)


def _keyframe_count(path):
    with av.open(str(path)) as container:
        return sum(1 for entry in container.streams.video[0].index_entries if entry.is_keyframe)


def _run(argv, **options):
    """(wall, cpu) of one command; its CPU (user + sys) includes its children's."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **options)
    cpu = _reap(process, argv)
    return time.perf_counter() - started, cpu


def _reap(process, what):
    # os.wait4 gives the rusage of that one child (and of the children it
    # waited for), not of everything this process ever ran.
    error = process.stderr.read() if process.stderr else b""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.stderr:
        process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"failed: {what}: {error.decode(errors='replace').strip()[-500:]}")
    return usage.ru_utime + usage.ru_stime


def _print(rows, clip, long, repeat):
    print(
        f"\nclip: {clip.name}, {clip.stat().st_size / 1e6:.1f} MB"
        + (f"; long: {long.name}, {long.stat().st_size / 1e6:.0f} MB" if long else "")
    )
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, PyAV {av.__version__} "
        f"(FFmpeg {av.ffmpeg_version_info}), load average {os.getloadavg()[2]:.1f}; "
        f"times: best of {repeat} (and that run's CPU time); ratios: median of the "
        f"{repeat} rounds' ratios\n"
    )
    print(
        "chute: one file through a running `chute run` (one pool worker), from its claim to its ledger row:"
        " staging and hashing the input, launching the module (forked from the warm launcher, or a fresh"
        " interpreter), the module, checking its output, publishing, archiving the input, the ledger row;"
        " CPU: the daemon and every process under it meanwhile. `chute submit`: the whole command, its start-up"
        " and its warm launcher's included."
    )
    print(
        "ffmpeg CLI: the command (or, for media_ingest, the script running them) from its start to its exit,"
        " start-up included; CPU: the command's, its threads' and children's.\n"
    )
    print("| product | chute, warm launcher | chute, fresh interpreter | ffmpeg CLI | warm / CLI | fresh / CLI |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        warm, fresh, cli = row.best("warm"), row.best("fresh"), row.best("cli")
        print(
            f"| {row.name} | {_seconds(warm)} | {_seconds(fresh)} | {_seconds(cli)} "
            f"| {_ratio(row.ratio('warm'))} | {_ratio(row.ratio('fresh'))} |"
        )


def _seconds(measured):
    return "–" if measured is None else f"{measured[0]:.2f} s (CPU {measured[1]:.2f})"


def _ratio(value):
    return "–" if value is None else f"{value:.2f}×"


if __name__ == "__main__":
    sys.exit(main())
