"""What the zoo commands share: their flags (the model, the input engine),
what they pass to the library (``--model`` and ``--weights`` to
`nonlocal_tf.create_model` / `model_info`, the data flags to
`nonlocal_tf.data`), and the way in and out: ``--help`` lists the command's
own flags and exits 0, user mistakes become one line on stderr and exit
status 1, output paths are checked before any long work, and absl runs
``main``.

``NONLOCAL_TF_TRACEBACK=1`` shows the full traceback instead (for bug reports).
"""

from __future__ import annotations

import glob
import os
import signal
import sys
import time
from collections.abc import Callable

from absl import app, flags

FLAGS = flags.FLAGS


def define_model_flags(
    weights: bool = True, saved_model: bool = False, required: bool = True
) -> None:
    """``--model`` (any source `nonlocal_tf.create_model` takes; with
    ``saved_model`` a SavedModel too), ``--classes``, ``--width_per_group`` and,
    with ``weights``, ``--weights``."""
    kinds = "a SavedModel folder, " if saved_model else ""
    flags.DEFINE_string(
        "model",
        None,
        "The model: a named model (i3d_nl5_r50_8x8), a catalogue entry (i3d_nl5_r50_8x8.k400, "
        f"zoo/MODEL_ZOO.md), a preset folder or hf:// handle, a zoo.train run folder, {kinds}"
        "or a .keras file.",
        required=required,
    )
    flags.DEFINE_integer(
        "classes", None, "Classifier size; default: the model's, or the data's.", lower_bound=1
    )
    flags.DEFINE_integer(
        "width_per_group",
        None,
        "Bottleneck width of res2; default the model's (64 official; small for quick tests).",
        lower_bound=1,
    )
    if weights:
        flags.DEFINE_string(
            "weights",
            None,
            "Weights instead of the model's own: 'none', 'imagenet' (inflated), a catalogue "
            "entry, a preset, a run folder, a .keras or a checkpoint file.",
        )


def model_weights() -> str | None:
    """``--weights`` as `nonlocal_tf.create_model` takes it (unset: the model's own)."""
    from nonlocal_tf.pretrained.resolver import DEFAULT

    value = getattr(FLAGS, "weights", None)
    if value is None:
        return DEFAULT
    return None if value.lower() == "none" else value


def model_info():
    """`nonlocal_tf.model_info` of ``--model`` (with ``--weights``); an
    unknown name is a usage error."""
    from nonlocal_tf import pretrained

    try:
        return pretrained.model_info(FLAGS.model, model_weights())
    except pretrained.UnknownSourceError as exc:
        raise _unknown(exc) from None


def create_model(**overrides):
    """`nonlocal_tf.create_model` of ``--model`` with ``--weights``,
    ``--classes``, ``--width_per_group`` and ``overrides``."""
    from nonlocal_tf import pretrained

    if FLAGS.width_per_group is not None:
        overrides.setdefault("width_per_group", FLAGS.width_per_group)
    overrides.setdefault("classes", FLAGS.classes)
    try:
        return pretrained.create_model(FLAGS.model, model_weights(), **overrides)
    except pretrained.UnknownSourceError as exc:
        raise _unknown(exc) from None


def _unknown(exc: Exception) -> app.UsageError:
    text = str(exc)
    if text.startswith("Unknown model"):
        return app.UsageError(text.replace("Unknown model", "Unknown --model", 1))
    return app.UsageError(f"--model: {text}")


def define_input_flags(service: bool = True, augment: bool = True) -> None:
    """``--input_engine``, ``--input_workers`` (what reads video files), with
    ``augment`` ``--augment_on`` and with ``service`` ``--data_service``."""
    flags.DEFINE_enum(
        "input_engine",
        "auto",
        ["auto", "tf_data", "grain"],
        "What reads video files: tf.data threads or Grain worker processes. auto: tf.data on "
        "the TensorFlow backend, Grain on JAX and PyTorch (nonlocal_tf.runtime.input_engine); "
        "TFRecord shards too (Grain through the index beside each shard).",
    )
    flags.DEFINE_integer(
        "input_workers",
        None,
        "Grain's decoding processes (0: threads of this process); default: every core but one "
        "(frame shards on 2 cores or fewer: 0).",
        lower_bound=0,
    )
    if augment:
        flags.DEFINE_enum(
            "augment_on",
            "host",
            ["host", "device"],
            "Where clips are resized, cropped and flipped (test: cut into their 3 crops): host (the "
            "decoding workers) or device (the accelerator, in a compiled program of its own: the "
            "workers only decode, about 2x the clips per core from frame shards; read by Grain, "
            "which --input_engine=auto then picks).",
        )
    if not service:
        return
    flags.DEFINE_string(
        "data_service",
        None,
        "grpc://host:port of a tf.data service dispatcher (python -m zoo.data_service) whose "
        "workers read, decode and batch the TFRecord shards.",
    )


def videos_dataset(videos, spec, skips):
    """The 30-view test dataset of a video list (`zoo.predict`,
    `zoo.extract_features`), read as the input flags say, in order."""
    from nonlocal_tf import data

    return data.video_list_dataset(
        videos,
        "test",
        spec,
        FLAGS.input_engine,
        workers=FLAGS.input_workers,
        shuffle=False,
        skips=skips,
    )


def dataset(source: str, mode: str, spec, video_dir: str | None, **kwargs):
    """`nonlocal_tf.data.dataset_from_source` with the input flags; a missing
    source, or a CSV without its video folder, is a usage error."""
    from nonlocal_tf import data

    kwargs.setdefault("engine", FLAGS.input_engine)
    kwargs.setdefault("workers", FLAGS.input_workers)
    kwargs.setdefault("data_service", FLAGS.data_service)
    try:
        return data.dataset_from_source(source, mode, spec, video_dir=video_dir, **kwargs)
    except ValueError as exc:
        if str(exc).startswith(("No such data", source)):
            raise app.UsageError(f"{exc} (--video_dir for a CSV)") from None
        if "augment_on" in str(exc):
            raise app.UsageError(f"--augment_on: {exc}") from None
        raise


def video_paths(source: str) -> list[str]:
    """The videos ``--input`` names: a file, a folder (recursively, by video
    extension), a text file of paths, or a glob (sorted; missing list entries
    kept, so that they are reported as skipped)."""
    from nonlocal_tf.data.annotations import VIDEO_EXTENSIONS

    if os.path.isdir(source):
        found = []
        for root, _, names in os.walk(source):
            found += [os.path.join(root, n) for n in names if n.lower().endswith(VIDEO_EXTENSIONS)]
        return sorted(found)
    if os.path.isfile(source) and source.lower().endswith((".txt", ".lst", ".list")):
        with open(source) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    if os.path.isfile(source):
        return [source]
    matches = sorted(glob.glob(source, recursive=True))
    if not matches:
        raise app.UsageError(f"--input {source!r} is no file, folder, list file or matching glob.")
    return matches


class Progress:
    """``[n/total] rate, ETA`` on stderr, at most twice a second."""

    def __init__(self, total: int):
        self.total, self.started, self.shown = total, time.perf_counter(), 0.0

    def update(self, done: int, final: bool = False):
        now = time.perf_counter()
        if not final and now - self.shown < 0.5:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate else 0.0
        sys.stderr.write(f"\r[{done}/{self.total}] {rate:.2f} videos/s, ETA {eta:.0f}s ")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


class UserError(Exception):
    """A mistake in the command line or its inputs, shown as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe the user's input rather than a bug here: bad
    values and files (``ValueError``: checkpoints, hashes, conversions,
    annotations, shapes; ``OSError``: missing or unwritable paths), videos
    or sources that cannot be read, and downloads that failed."""
    from nonlocal_tf.data.decode import VideoDecodeError
    from nonlocal_tf.files import FolderInUseError
    from nonlocal_tf.weights.download import DownloadError

    return (UserError, ValueError, OSError, DownloadError, VideoDecodeError, FolderInUseError)


HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")


def run(main: Callable[[list[str]], int | None]) -> None:
    """``app.run(main)``, with usage and user errors reported as one line,
    ``zoo.<command>: error: ...``, and exit status 1; ``--help`` prints the
    command's description and its own flags (those this module defines for
    it included) and exits 0 before anything runs. Ctrl-C and SIGTERM unwind
    the command (what it started is closed on the way out), then one line,
    ``zoo.<command>: stopped (SIGTERM)``, and exit status 128 + the signal."""
    command_module = sys.modules["__main__"]
    # TensorFlow's C++ log lines (errors included: a healthy run prints CUDA and
    # graph-optimizer ones) off, unless the user's environment says otherwise.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _adopt_shared_flags()
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
        print(help_text(command_module, full="--helpfull" in sys.argv[1:]))
        sys.exit(0)

    def guarded(argv):
        _plain_logs()
        _stop_on_sigterm()
        command = os.path.basename(sys.argv[0]).removesuffix(".py")
        try:
            return main(argv)
        except (app.UsageError, *_user_errors()) as exc:
            if os.environ.get("NONLOCAL_TF_TRACEBACK"):
                raise
            message = " ".join(str(exc).split()) or type(exc).__name__
            hint = " (--help lists the flags)" if isinstance(exc, app.UsageError) else ""
            print(f"zoo.{command}: error: {message}{hint}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`Stopped`): unwound, then one line
            if os.environ.get("NONLOCAL_TF_TRACEBACK"):
                raise
            signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
            print(f"zoo.{command}: stopped ({signal.Signals(signum).name})", file=sys.stderr)
            return 128 + signum

    app.run(guarded)


class Stopped(KeyboardInterrupt):
    """SIGTERM, a scheduler's normal stop, raised in the main thread so that a
    command unwinds as it does for Ctrl-C: what it started is closed on the
    way out (Grain's decoding workers, which the default action left running
    under pid 1, folder locks)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


def _stop_on_sigterm() -> None:
    """SIGTERM raises `Stopped`; a second one ends the process at once."""

    def stop(signum, frame):
        signal.signal(signum, signal.SIG_DFL)
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, stop)


def _plain_logs() -> None:
    """The library's log lines as plain messages (absl prefixes each with a
    level, a date, a thread id and a source line)."""
    import logging

    from absl import logging as absl_logging

    absl_logging.get_absl_handler().setFormatter(logging.Formatter("%(message)s"))


def _adopt_shared_flags() -> None:
    """The flags this module defined for the running command count as the
    command's own (absl lists a module's own flags under ``--help`` and the
    rest only under ``--helpfull``)."""
    main = sys.argv[0]
    for flag in FLAGS.get_flags_for_module(__name__):
        FLAGS.register_key_flag_for_module(main, flag)


def help_text(module, full: bool = False) -> str:
    """The command's docstring and its flags (with ``full``, absl's too)."""
    doc = (module.__doc__ or "").strip()
    flags_help = FLAGS.main_module_help() if not full else FLAGS.get_help()
    return f"{doc}\n\nFlags:\n{flags_help}" if doc else flags_help


def output_dir(path: str, flag: str = "--output_dir") -> str:
    """``path`` created and writable, or a `UserError` naming ``flag``."""
    from nonlocal_tf import files

    try:
        return files.check_writable_dir(path, f"{flag} folder")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def hold_output_dir(path: str, hold: bool = True):
    """A context that holds ``path``'s lock (`nonlocal_tf.files.FolderLock`) for
    a command that resumes into it: a second run writing there is refused
    with one line naming the holder. ``hold=False``: no lock (the processes of
    a multi-process run other than process 0, which holds it for them)."""
    import contextlib

    from nonlocal_tf import files

    return files.FolderLock(path) if hold else contextlib.nullcontext()


def output_file(path: str, flag: str = "--output") -> str:
    """``path`` can be written (its folder created), or a `UserError` naming ``flag``."""
    from nonlocal_tf import files

    try:
        return files.check_writable_file(path, f"{flag} file")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def int_pair(values: list[str], flag: str) -> tuple[int, int]:
    """Two integers from an absl list flag, e.g. ``--train_scale=256,320``."""
    try:
        pair = tuple(int(v) for v in values)
    except ValueError:
        pair = ()
    if len(pair) != 2:
        raise app.UsageError(f"{flag} takes two integers, e.g. {flag}=256,320. Received: {values}")
    return pair
