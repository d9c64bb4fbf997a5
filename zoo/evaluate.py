"""The official 30-view test: 10 clips x 3 crops of 256 per video, through the
fully-convolutional head; video-level top-1/top-5 from the summed softmax of the
views, clip-level (per view) accuracy, and Charades mAP (``--multi_label``).
The protocol itself is `nonlocal_tf.evaluation`.

    python -m zoo.evaluate --model=i3d_nl5_r50_8x8.k400 --data=kinetics_val.csv \
        --video_dir=val/ --output=report.json
    python -m zoo.evaluate --model=runs/my_run --data=videos/val/
    python -m zoo.evaluate --model=runs/my_run --data='shards/val-*.tfrecord' \
        --augment_on=device  # the host decodes; the accelerator cuts the 3 crops

``--model``: any model `nonlocal_tf.create_model` takes (a catalogue entry, a
preset, a ``zoo.train`` run folder, a ``.keras`` file) or a SavedModel written
by ``zoo.export``. Clips are sampled and sized as the model's `ModelInfo` says
(the official Kinetics test: short side 256, 3 crops of 256; Charades: 320).
A folder per class is read in the model's class order where it has names.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
_cli.define_model_flags(saved_model=True)
_cli.define_input_flags()
flags.DEFINE_string(
    "data", None, "Folder per class, Kinetics or Charades CSV, or TFRecord glob.", required=True
)
flags.DEFINE_string("video_dir", None, "Videos of a CSV.")
flags.DEFINE_bool("multi_label", False, "Charades: sigmoid outputs, mAP over classes.")
flags.DEFINE_integer("max_videos", None, "Evaluate at most this many videos.", lower_bound=1)
flags.DEFINE_string("output", "evaluation.json", "JSON report.")


def main(argv) -> int:
    del argv
    from nonlocal_tf import evaluation, files, inference

    _cli.output_file(FLAGS.output)
    info = _cli.model_info()
    if ".tfrecord" in FLAGS.data and not (FLAGS.classes or info.num_classes):
        raise app.UsageError("--classes is required with TFRecord data.")
    names = list(info.class_names) if info.class_names else None
    ds = _cli.dataset(
        FLAGS.data,
        "test",
        info.spec,
        FLAGS.video_dir,
        multi_label=FLAGS.multi_label,
        num_classes=FLAGS.classes or info.num_classes,
        class_names=names if os.path.isdir(FLAGS.data) else None,
        augment_on=FLAGS.augment_on,
    )
    num_classes = FLAGS.classes or (len(ds.class_names) if ds.class_names else info.num_classes)
    if info.kind == "saved_model":
        model = inference.Scorer.from_saved_model(FLAGS.model)
    else:
        model = _cli.create_model(
            fully_convolutional=info.arguments.get("input_shape", (None,) * 4)[1] is None,
            include_preprocessing=True,
            input_shape=(info.frames, *(info.arguments.get("input_shape") or (None,) * 4)[1:]),
            classes=num_classes,
            classifier_activation="sigmoid" if FLAGS.multi_label else "softmax",
        )
    total = len(ds) if ds.videos is not None else None
    print(
        f"evaluating {FLAGS.model} on {FLAGS.data}: {total or 'all'} videos, "
        f"{evaluation.views_per_video(info.spec)} views each",
        flush=True,
    )
    report = {
        "model": FLAGS.model,
        "weights": FLAGS.weights,
        "data": FLAGS.data,
        **evaluation.evaluate(
            model, ds, num_classes, FLAGS.multi_label, FLAGS.max_videos, progress=True, total=total
        ),
    }
    report["skipped"] = ds.skips.counts()
    files.write_json(FLAGS.output, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    _cli.run(main)
