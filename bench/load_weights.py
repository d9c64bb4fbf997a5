"""Seconds and peak memory of loading pretrained weights into a model, each case
in a fresh process: a catalogue entry in the official Caffe2 format (first load:
conversion; second: the cached blobs) and a preset, with the checkpoint's head
and with a new one (``classes=10``).

    python bench/load_weights.py --model=i3d_nl10_r101_8x8

The files are made once under ``--workdir`` from a randomly initialised model
of ``--model`` (a Caffe2 ``.pkl`` of its official-named blobs, and a preset);
the entry is a copy of ``i3d_nl5_r50_8x8.k400`` pointing there (``file://``).
Peak memory: the process's VmHWM (its resident-set peak), imports included.
"""

from __future__ import annotations

import os
import pickle
import sys
import time

from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import _cases  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "i3d_nl10_r101_8x8", "Named variant whose weights are loaded.")
flags.DEFINE_string("workdir", "/tmp/nonlocal_tf_load_bench", "Checkpoint, preset and cache.")
flags.DEFINE_enum("source", "entry", ["entry", "preset"], "What is loaded (one case).")
flags.DEFINE_integer("classes", 400, "Classifier of the loaded model (400: the checkpoint's).")
flags.DEFINE_bool("cached", False, "Entry: the conversion is cached already (second load).")

ENTRY = "bench_load.k400"


def _files() -> tuple[str, str]:
    """The Caffe2 checkpoint and the preset of ``--model`` (made once)."""
    checkpoint = os.path.join(FLAGS.workdir, f"{FLAGS.model}.pkl")
    preset = os.path.join(FLAGS.workdir, f"{FLAGS.model}_preset")
    if not os.path.exists(preset):
        from nonlocal_tf import models, pretrained, weights

        model = models.create_model(FLAGS.model)
        os.makedirs(FLAGS.workdir, exist_ok=True)
        with open(checkpoint + ".tmp", "wb") as f:
            pickle.dump({"blobs": weights.model_to_blobs(model)}, f, protocol=2)
        os.replace(checkpoint + ".tmp", checkpoint)
        pretrained.save_to_preset(model, preset, FLAGS.model, {"classes": 400})
    return checkpoint, preset


def _register(checkpoint: str) -> None:
    """A catalogue entry of ``--model`` whose source is ``checkpoint``."""
    import dataclasses

    from nonlocal_tf.pretrained import catalog

    entry = dataclasses.replace(
        catalog.CATALOG["i3d_nl5_r50_8x8.k400"],
        name=ENTRY,
        builder=FLAGS.model,
        url=f"file://{checkpoint}",
    )
    table = {**catalog.CATALOG, ENTRY: entry}
    catalog.CATALOG = table
    import nonlocal_tf.pretrained as pretrained

    pretrained.CATALOG = table
    for module in ("nonlocal_tf.pretrained.loader", "nonlocal_tf.pretrained.resolver"):
        if module in sys.modules and hasattr(sys.modules[module], "CATALOG"):
            sys.modules[module].CATALOG = table


def measure() -> dict:
    os.environ["NONLOCAL_TF_HOME"] = os.path.join(FLAGS.workdir, "cache")
    import keras  # noqa: F401  (imports before the clock: the same in every case)

    from nonlocal_tf import pretrained

    checkpoint, preset = _files()
    if FLAGS.source == "entry":
        _register(checkpoint)
        if FLAGS.cached:  # convert once, outside the measure
            pretrained.load_model(ENTRY)
    kwargs = {} if FLAGS.classes == 400 else {"classes": FLAGS.classes}
    before = _cases.memory_mark()
    started = time.perf_counter()
    if FLAGS.source == "entry":
        model = pretrained.load_model(ENTRY, **kwargs)
    else:
        model = pretrained.from_preset(preset, **kwargs)
    seconds = time.perf_counter() - started
    return {
        "model": FLAGS.model,
        "source": FLAGS.source + (" (cached)" if FLAGS.cached else ""),
        "classes": FLAGS.classes,
        "parameters": model.count_params(),
        "seconds": round(seconds, 2),
        "peak_mib_above_start": _cases.peak_mib(before),
        "peak_mib": _cases.peak_mib(),
    }


def cases():
    for source, cached in (("entry", False), ("entry", True), ("preset", False)):
        for classes in (400, 10):
            yield {"source": source, "cached": cached, "classes": classes}


if __name__ == "__main__":
    _cases.main(
        measure,
        cases,
        {
            "source": "source",
            "classes": "classes",
            "seconds": "seconds",
            "peak MiB (process)": "peak_mib",
            "peak MiB above start": "peak_mib_above_start",
        },
    )
