"""`make demo`: the main job on embedded, generated data, in a few minutes on 2 CPU cores.

1. Generates the "reappear" video dataset (`nonlocal_tf.data.synthetic`): the
   label says whether the square of the first frame reappears, same colour, on
   the other side of the last frame, a relation across the whole clip.
2. Trains a small C2D ResNet-50 and the same network with 5 non-local blocks,
   with the same recipe and budget, and prints both held-out accuracies.
3. Exports the non-local model as a SavedModel, reloads it, classifies a
   held-out video with it, and checks it against the Keras model.
4. Saves where one query position attends across the frames (the paper's
   Fig. 1) as a PNG.

Progress: Keras's progress bar every few steps, and after each epoch the time
elapsed and an estimate of the time left.

    python -m zoo.demo [--epochs=3] [--train_size=2976] [--output_dir=demo_output]
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags, logging

from zoo import _cli

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 3, "Training epochs of each model.", lower_bound=1)
flags.DEFINE_integer(
    "train_size",
    2976,
    "Generated training clips (a multiple of the batch: no retracing).",
    lower_bound=8,
)
flags.DEFINE_integer("test_size", 1000, "Generated held-out clips.", lower_bound=8)
flags.DEFINE_integer("batch_size", 32, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.004, "Peak learning rate (AdamW, cosine, warm-up).")
flags.DEFINE_integer("colors", 2, "Square colours in the data (chance stays 50 %).", lower_bound=2)
flags.DEFINE_integer("seed", 0, "Seed of data and initialisation.")
flags.DEFINE_string("output_dir", "demo_output", "Where the SavedModel, weights and PNG go.")
flags.DEFINE_float(
    "min_gain", 0.10, "Exit with 1 when the non-local model does not win by this much."
)
MASKS = ("none", "nl5")  # the two models, in training order
EXPORT_SECONDS = 20  # rough cost of what follows training (export, reload, figure) on 2 cores


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def eta_callback(started: float, epochs_before: int, total_epochs: int):
    """Prints, after each epoch, the time since ``started`` and an estimate of
    what is left: the epochs to go at the last epoch's time (the first one also
    traces the step), plus export."""
    import keras

    class Eta(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            per_epoch = time.perf_counter() - self.epoch_started
            left = (total_epochs - epochs_before - epoch - 1) * per_epoch + EXPORT_SECONDS
            elapsed = time.perf_counter() - started
            print(f"[{_minutes(elapsed)} elapsed, about {_minutes(left)} left]", flush=True)

    return Eta()


def main(argv) -> int:
    del argv
    started = time.perf_counter()
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines while exporting
    import keras
    import numpy as np
    import tensorflow as tf

    from nonlocal_tf import demo, runtime, training
    from nonlocal_tf.data.synthetic import CLASS_NAMES, reappear_dataset
    from nonlocal_tf.export import export_saved_model
    from nonlocal_tf.visualize import attention_figure

    _cli.output_dir(FLAGS.output_dir)
    keras.utils.set_random_seed(FLAGS.seed)
    data = dict(colors=FLAGS.colors)
    train_x, train_y = reappear_dataset(FLAGS.train_size, seed=FLAGS.seed, **data)
    test_x, test_y = reappear_dataset(FLAGS.test_size, seed=FLAGS.seed + 1, **data)
    print(
        f"reappear dataset: {len(train_x)} training and {len(test_x)} held-out clips of "
        f"{train_x.shape[1:]}; Keras {keras.backend.backend()} on {runtime.accelerator()}, "
        f"3D convolutions {runtime.conv_implementation()}, jit_compile={runtime.jit_compile()}"
    )

    steps = FLAGS.epochs * -(-len(train_x) // FLAGS.batch_size)
    results = {}
    for index, mask in enumerate(MASKS):
        keras.utils.set_random_seed(FLAGS.seed)
        model = demo.build(mask)
        print(f"\n== {model.name}: {model.count_params():,} parameters, {steps} steps")
        demo.compile_model(model, steps, FLAGS.learning_rate)
        training.prepare_for_fit(model, (train_x[:1], train_y[:1]))  # one trace, not two
        fit_started = time.perf_counter()
        model.fit(
            train_x,
            train_y,
            batch_size=FLAGS.batch_size,
            epochs=FLAGS.epochs,
            shuffle=True,
            verbose=0,
            callbacks=[
                training.ProgressBar(every=10),
                eta_callback(started, index * FLAGS.epochs, len(MASKS) * FLAGS.epochs),
            ],
        )
        seconds = time.perf_counter() - fit_started
        _, accuracy = model.evaluate(test_x, test_y, batch_size=100, verbose=0)
        results[mask] = (model, accuracy)
        print(
            f"{model.name}: held-out accuracy {100 * accuracy:.1f}% "
            f"(trained in {seconds:.0f}s, {1000 * seconds / steps:.0f} ms/step)"
        )

    baseline, nonlocal_ = results["none"][1], results["nl5"][1]
    print(
        f"\nC2D baseline {100 * baseline:.1f}%  |  C2D + 5 non-local blocks {100 * nonlocal_:.1f}%  "
        f"(+{100 * (nonlocal_ - baseline):.1f} points)"
    )
    model = results["nl5"][0]
    model.save_weights(os.path.join(FLAGS.output_dir, "reappear_c2d_nl5_r50.weights.h5"))

    export_dir = os.path.join(FLAGS.output_dir, "saved_model")
    export_saved_model(model, export_dir)
    reloaded = tf.saved_model.load(export_dir)
    video = test_x[:1]
    served = reloaded.serve_uint8(tf.constant(video))
    probs = served["probs"].numpy()[0]
    keras_probs = keras.ops.convert_to_numpy(model(video.astype("float32"), training=False))[0]
    print(
        f"\nSavedModel at {export_dir}: held-out video 0 is '{CLASS_NAMES[int(probs.argmax())]}' "
        f"(p={probs.max():.3f}; truth '{CLASS_NAMES[int(test_y[0])]}'); "
        f"max difference to the Keras model {np.abs(probs - keras_probs).max():.2e}"
    )

    # Fig. 1: the query is the res3 position over the first frame's square.
    clip = test_x[int(np.flatnonzero(test_y == 1)[0])]
    ys, xs = np.nonzero(clip[0].max(axis=-1) > 100)
    query = (0, int(ys.mean()) * 4 // 32, int(xs.mean()) * 4 // 32)  # res3 grid: 4 x 4 x 4
    png = os.path.join(FLAGS.output_dir, "attention.png")
    attention_figure(model, clip, "nonlocal_conv3_3", query, png)
    print(f"attention of nonlocal_conv3_3 for query (t, y, x) = {query}: {png}")
    print(f"demo finished in {_minutes(time.perf_counter() - started)}")
    if nonlocal_ - baseline < FLAGS.min_gain:
        print(
            f"the non-local model did not win by {100 * FLAGS.min_gain:.0f} points in this run",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    _cli.run(main)
