"""Find the shot boundaries (hard cuts) of a video with PySceneDetect.

PySceneDetect's ContentDetector, fed by its PyAV backend, scores how much
each frame differs from the one before in hue, saturation, luma and edges; a
score at or above ``threshold`` starts a new shot. See README.md.
"""

from importlib.metadata import version

from chute.extras import require_media

require_media()  # without chute[media]: one line and exit 1, not an ImportError

from scenedetect import SceneManager, StatsManager
from scenedetect.backends.pyav import VideoStreamAv
from scenedetect.detectors import ContentDetector
from scenedetect.video_stream import VideoOpenFailure

from chute.modkit import (
    BadOption,
    Option,
    UnusableInput,
    format_timecode,
    open_media,
    progress,
    run,
    write_json,
)

SCHEMA = "chute.scenes/1"
OPTIONS = [Option("threshold", float, 27.0)]
MIN_SCENE_FRAMES = 15  # PySceneDetect's default: no two cuts closer than this


def main(args):
    if not 0 < args.threshold <= 255:
        raise BadOption(f"threshold must be above 0 and at most 255, not {args.threshold}")
    # Our own open first: it reports a file PyAV cannot use in one line.
    with open_media(args.input, need="video"):
        pass
    video = _open(args.input)
    stats = StatsManager()
    scenes = SceneManager(stats_manager=stats)
    scenes.add_detector(_Detector(video.duration.seconds, args.threshold))
    frames = scenes.detect_scenes(video)
    if frames <= 0:
        raise UnusableInput("no picture could be decoded")
    write_json(args.output, _report(video, scenes, stats, args.threshold))
    progress(1.0)


class _Detector(ContentDetector):
    """ContentDetector that reports progress as it goes."""

    def __init__(self, duration, threshold):
        super().__init__(threshold=threshold, min_scene_len=MIN_SCENE_FRAMES)
        self.duration = duration

    def process_frame(self, timecode, frame_img):
        if self.duration:
            progress(timecode.seconds / self.duration)
        return super().process_frame(timecode, frame_img)


def _open(path):
    try:
        # Frame threads, as the ffmpeg CLI decodes (PyAV's default is slices
        # only). FFmpeg's log stays off (PyAV's default), so the log callback
        # that PySceneDetect warns about with threads is never installed.
        return VideoStreamAv(str(path), threading_mode="AUTO", suppress_output=True)
    except VideoOpenFailure as error:
        raise UnusableInput(f"PySceneDetect cannot open the video ({error})")
    except Exception as error:  # FrameRateUnavailable and the like
        raise UnusableInput(f"PySceneDetect cannot read the video ({type(error).__name__})")


def _report(video, scenes, stats, threshold):
    rate = video.frame_rate
    scene_list = scenes.get_scene_list(start_in_scene=True)
    # Every scene but the first starts with a cut.
    cuts = [{**_at(start.seconds, rate), "score": _score(stats, start)} for start, _ in scene_list[1:]]
    shots = [
        {
            "start": _at(start.seconds, rate),
            "end": _at(end.seconds, rate),
            "duration_s": round(end.seconds - start.seconds, 6),
        }
        for start, end in scene_list
    ]
    return {
        "schema": SCHEMA,
        "detector": {
            "name": "content",
            "threshold": threshold,
            "min_scene_frames": MIN_SCENE_FRAMES,
            "library": f"PySceneDetect {version('scenedetect')}, PyAV backend",
        },
        "frame_rate": f"{rate.numerator}/{rate.denominator}",
        "duration_s": round(video.duration.seconds, 6),
        "cuts": cuts,
        "scenes": shots,
    }


def _at(seconds, rate):
    """A point in time three ways: seconds, HH:MM:SS.mmm and frame index."""
    return {
        "time_s": round(seconds, 6),
        "timecode": format_timecode(seconds),
        "frame": round(seconds * rate),
    }


def _score(stats, cut):
    (score,) = stats.get_metrics(cut, [ContentDetector.FRAME_SCORE_KEY])
    return None if score is None else round(float(score), 3)


if __name__ == "__main__":
    run(main, inputs=["input"], outputs=["output"], options=OPTIONS)
