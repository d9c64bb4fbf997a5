"""The official 30-view test: 10 clips x 3 crops of 256 per video, through the
fully-convolutional head; video-level top-1/top-5 from the summed softmax of the
views, clip-level (per view) accuracy, and Charades mAP (``--multi_label``).
The protocol itself is `nonlocal_tf.evaluation`.

    python -m zoo.evaluate --model=i3d_nl5_r50_8x8 --weights=i3d_nl5_r50_8x8.k400 \
        --data=kinetics_val.csv --video_dir=val/ --output=report.json
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
_cli.define_model_flags()
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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from nonlocal_tf import data, evaluation, files

    _cli.output_file(FLAGS.output)
    frames, rate = _cli.clip_of(FLAGS.model)
    preset = data.CHARADES_32X4 if FLAGS.multi_label else data.KINETICS_8X8
    spec = dataclasses.replace(preset, clip_len=frames, rate=rate)
    if ".tfrecord" in FLAGS.data and not FLAGS.classes:
        raise app.UsageError("--classes is required with TFRecord data.")
    ds, videos = _cli.dataset(
        FLAGS.data,
        "test",
        spec,
        FLAGS.video_dir,
        multi_label=FLAGS.multi_label,
        num_classes=FLAGS.classes,
    )
    num_classes = FLAGS.classes or len(videos.class_names)
    model = _cli.build(
        FLAGS.model,
        FLAGS.weights,
        FLAGS.width_per_group,
        fully_convolutional=True,
        include_preprocessing=True,
        input_shape=(frames, None, None, 3),
        classes=num_classes,
        classifier_activation="sigmoid" if FLAGS.multi_label else "softmax",
    )
    report = {
        "model": FLAGS.model,
        "weights": FLAGS.weights,
        "data": FLAGS.data,
        **evaluation.evaluate(model, ds, num_classes, FLAGS.multi_label, FLAGS.max_videos),
    }
    if hasattr(ds, "skips"):
        report["skipped"] = ds.skips.counts()
    files.write_json(FLAGS.output, report)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    _cli.run(main)
