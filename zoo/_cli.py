"""What the zoo commands share: the model flags and what ``--model`` names
(a catalogue entry: its architecture and weights; or a named variant), the
data a ``--data`` flag names, and the way in and out: user mistakes become one
line on stderr and exit status 1, output paths are checked before any long
work, and absl runs ``main``.

``NONLOCAL_TF_TRACEBACK=1`` shows the full traceback instead (for bug reports).
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Callable

from absl import app, flags

FLAGS = flags.FLAGS


def define_model_flags(weights: bool = True) -> None:
    """``--model``, ``--classes``, ``--width_per_group`` and, with ``weights``, ``--weights``."""
    flags.DEFINE_string("model", None, "Named variant or catalogue entry.", required=True)
    flags.DEFINE_integer(
        "classes", None, "Classifier size; default: the entry's, or the data's.", lower_bound=1
    )
    flags.DEFINE_integer(
        "width_per_group",
        64,
        "Bottleneck width of res2 (64 official; small for tests).",
        lower_bound=1,
    )
    if weights:
        flags.DEFINE_string(
            "weights",
            None,
            "Catalogue entry, checkpoint or .weights.h5 (default: the entry's own).",
        )


def _unknown(name: str) -> app.UsageError:
    from nonlocal_tf import models, pretrained

    return app.UsageError(
        f"Unknown --model {name!r}. Named models: "
        f"{', '.join(sorted({**models.VARIANTS, **models.IMAGE_VARIANTS}))}; "
        f"catalogue entries: {', '.join(sorted(pretrained.CATALOG))}; or a preset "
        "(a folder, hf:// or kaggle:// handle)"
    )


def entry_of(name: str):
    """The catalogue entry (or preset's entry) ``name`` names, or None."""
    from nonlocal_tf import pretrained

    return pretrained.find_entry(name)


def check_model(name: str) -> None:
    """A usage error unless ``name`` is a catalogue entry, a preset or a named model."""
    from nonlocal_tf import models

    if name not in {**models.VARIANTS, **models.IMAGE_VARIANTS} and entry_of(name) is None:
        raise _unknown(name)


def clip_of(name: str) -> tuple[int, int]:
    """(frames, rate) of the clips the model ``name`` takes."""
    from nonlocal_tf import models

    if name in models.VARIANTS:
        clip = models.VARIANTS[name].clip
        return clip.frames, clip.rate
    entry = entry_of(name)
    if entry is None or entry.frames is None:
        raise _unknown(name)
    return entry.frames, entry.rate


def recipe_of(name: str) -> str:
    """The official training recipe (`nonlocal_tf.training.RECIPES`) of the model
    ``name``, or of the variant a catalogue entry (or preset) is."""
    from nonlocal_tf import models

    entry = None if name in models.VARIANTS else entry_of(name)
    builder = entry.builder if entry is not None else name
    if builder in models.VARIANTS:
        return models.VARIANTS[builder].recipe
    if entry is not None:
        return "official"
    raise _unknown(name)


def architecture(name: str, width_per_group: int = 64, **kwargs):
    """The model ``name`` stands for, without loading any weights."""
    from nonlocal_tf import models

    if name in models.IMAGE_VARIANTS:
        return models.IMAGE_VARIANTS[name](**kwargs)
    if name in models.VARIANTS:
        return models.create_model(name, width_per_group=width_per_group, **kwargs)
    entry = entry_of(name)
    if entry is None:
        raise _unknown(name)
    return entry.build(**kwargs)


def build(name: str, weights: str | None = None, width_per_group: int = 64, **kwargs):
    """`architecture`, with the entry's weights for a catalogue entry or a
    preset (a new head when ``classes`` differs), then ``weights`` loaded on
    top, if given."""
    from nonlocal_tf import models, pretrained

    model = architecture(name, width_per_group, **kwargs)
    named = name in models.VARIANTS or name in models.IMAGE_VARIANTS
    for source in (None if named else name, weights):
        if source:
            pretrained.load_weights(model, source)
    return model


def define_input_flags(service: bool = True) -> None:
    """``--input_engine``, ``--input_workers`` (what reads video files) and,
    with ``service``, ``--data_service``."""
    flags.DEFINE_enum(
        "input_engine",
        "auto",
        ["auto", "tf_data", "grain"],
        "What reads video files: tf.data threads or Grain worker processes. auto: tf.data on "
        "the TensorFlow backend, Grain on JAX and PyTorch (nonlocal_tf.runtime.input_engine). "
        "TFRecords are read by tf.data.",
    )
    flags.DEFINE_integer(
        "input_workers",
        None,
        "Grain's decoding processes (0: in this process); default: every core but one.",
        lower_bound=0,
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


def run(main: Callable[[list[str]], int | None]) -> None:
    """``app.run(main)``, with usage and user errors reported as one line,
    ``zoo.<command>: error: ...``, and exit status 1."""

    def guarded(argv):
        try:
            return main(argv)
        except (app.UsageError, *_user_errors()) as exc:
            if os.environ.get("NONLOCAL_TF_TRACEBACK"):
                raise
            command = os.path.basename(sys.argv[0]).removesuffix(".py")
            message = " ".join(str(exc).split()) or type(exc).__name__
            hint = " (--help lists the flags)" if isinstance(exc, app.UsageError) else ""
            print(f"zoo.{command}: error: {message}{hint}", file=sys.stderr)
            return 1

    app.run(guarded)


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
