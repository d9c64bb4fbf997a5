"""The official 30-view test: 10 clips x 3 crops of 256 per video, through the
fully-convolutional head; video-level top-1/top-5 from the summed softmax of the
views, clip-level (per view) accuracy, and Charades mAP (``--multi_label``).

    python -m zoo.evaluate --model=i3d_nl5_r50_8x8 --weights=i3d_nl5_r50_8x8.k400 \
        --data=kinetics_val.csv --video_dir=val/ --output=report.json
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Named variant or catalogue entry.", required=True)
flags.DEFINE_string(
    "weights", None, "Catalogue entry, checkpoint or .weights.h5 (default: the entry's own)."
)
flags.DEFINE_string(
    "data", None, "Folder per class, Kinetics or Charades CSV, or TFRecord glob.", required=True
)
flags.DEFINE_string("video_dir", None, "Videos of a CSV.")
flags.DEFINE_integer(
    "classes", None, "Classifier size (default: the data's class count).", lower_bound=1
)
flags.DEFINE_bool("multi_label", False, "Charades: sigmoid outputs, mAP over classes.")
flags.DEFINE_integer("max_videos", None, "Evaluate at most this many videos.", lower_bound=1)
flags.DEFINE_integer(
    "width_per_group", 64, "Bottleneck width (64 official; small for tests).", lower_bound=1
)
flags.DEFINE_string("output", "evaluation.json", "JSON report.")


def average_precision(scores, labels) -> float:
    """AP of one class: mean precision at each positive, by decreasing score."""
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def evaluate(model, dataset, num_classes: int, multi_label: bool, max_videos=None) -> dict:
    """The multi-view protocol: each element of ``dataset`` is one video's
    views ``(V, T, H, W, 3)``, its label and its index; the V score vectors are
    summed. The views go through `model.predict` (compiled as the backend
    compiles; on JAX the next video is dispatched before the scores of the
    last one are read back)."""
    import keras
    import numpy as np

    video_labels, view_counts = [], []

    def videos():
        for n, (views, label, _index) in enumerate(dataset):
            if max_videos is not None and n >= max_videos:
                return
            video_labels.append(np.asarray(label))
            view_counts.append(int(views.shape[0]))
            yield (np.asarray(views),)

    stream = videos()
    first = next(stream, None)
    if first is None:
        raise ValueError("No video to evaluate: the data is empty or every video was skipped.")

    def all_videos():  # a generator, as `predict` wants
        yield first
        yield from stream

    if keras.backend.backend() == "tensorflow":
        # `predict` would run this generator inside a tf.data pipeline of its
        # own, which then iterates ``dataset``: one compiled call per video instead.
        probs = np.concatenate([model.predict_on_batch(v) for (v,) in all_videos()])
    else:
        probs = model.predict(all_videos(), verbose=0)  # (sum of V, classes)
    per_video = np.split(probs, np.cumsum(view_counts)[:-1])
    video_scores = [p.sum(axis=0) for p in per_video]
    clip_hits = []
    if not multi_label:
        for p, label in zip(per_video, video_labels, strict=True):
            clip_hits.extend(p.argmax(axis=1) == int(label))
    views = per_video[0]
    scores = np.stack(video_scores)
    report = {"videos": len(video_scores), "views_per_video": int(views.shape[0])}
    if multi_label:
        labels = np.stack(video_labels)
        aps = [average_precision(scores[:, c], labels[:, c]) for c in range(num_classes)]
        report["mAP"] = float(np.nanmean(aps))
        report["classes_with_positives"] = int(np.sum(~np.isnan(aps)))
    else:
        labels = np.array([int(v) for v in video_labels])
        top5 = np.argsort(-scores, axis=1)[:, :5]
        report["top1"] = float(np.mean(top5[:, 0] == labels))
        report["top5"] = float(np.mean([labels[i] in top5[i] for i in range(len(labels))]))
        report["clip_top1"] = float(np.mean(clip_hits))
    return report


def main(argv) -> int:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from nonlocal_tf import data
    from zoo import _cli, _models

    _cli.output_file(FLAGS.output)
    frames, rate = _models.clip_of(FLAGS.model)
    preset = data.CHARADES_32X4 if FLAGS.multi_label else data.KINETICS_8X8
    spec = dataclasses.replace(preset, clip_len=frames, rate=rate)
    if ".tfrecord" in FLAGS.data:
        if not FLAGS.classes:
            raise app.UsageError("--classes is required with TFRecord data.")
        ds = data.tfrecord_dataset(
            FLAGS.data, "test", spec, num_classes=FLAGS.classes, multi_label=FLAGS.multi_label
        )
        num_classes = FLAGS.classes
    else:
        if not os.path.exists(FLAGS.data):
            raise app.UsageError(f"No such data: {FLAGS.data!r}")
        if os.path.isdir(FLAGS.data):
            videos = data.read_directory(FLAGS.data)
        elif FLAGS.multi_label:
            videos = data.read_charades(FLAGS.data, FLAGS.video_dir)
        else:
            videos = data.read_kinetics(FLAGS.data, FLAGS.video_dir)
        num_classes = FLAGS.classes or len(videos.class_names)
        ds = data.video_dataset(videos, "test", spec)
    model = _models.build(
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
        **evaluate(model, ds, num_classes, FLAGS.multi_label, FLAGS.max_videos),
    }
    if hasattr(ds, "skips"):
        report["skipped"] = ds.skips.counts()
    with open(FLAGS.output, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    from zoo import _cli

    _cli.run(main)
