"""`make demo`: the main job on embedded, generated data, in a few minutes on 2 CPU cores.

1. Generates the "reappear" video dataset (`nonlocal_tf.data.synthetic`): the
   label says whether the square of the first frame reappears, same colour, on
   the other side of the last frame, a relation across the whole clip.
2. Trains a small C2D ResNet-50 and the same network with 5 non-local blocks,
   with the same recipe and budget, and prints both held-out accuracies.
3. Looks where the non-local model attends (the paper's Fig. 1): from the
   square of the first frame, on the held-out "reappears" clips it classifies
   correctly, the weight its finest blocks put on the square that reappears in
   the last frame, against the uniform weight and against a background query;
   draws the clearest of those clips as a PNG (matplotlib).
4. Exports the non-local model as a SavedModel, reloads it, classifies that
   clip with it, and checks it against the Keras model.

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
EXPORT_SECONDS = 25  # rough cost of what follows training (attention, export, figure) on 2 cores


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


def finest_attention(model, clips):
    """Where the non-local blocks of the finest grid attend in "reappears"
    ``clips``, keys unpooled (`nonlocal_tf.visualize`): per clip, the query on
    frame 0's square, a background query of the second time step, the weight
    each puts on the key positions of the last frame's square, and the uniform
    weight of those positions. Returns the block whose square query puts the
    most there (median over the clips) and its measures."""
    import numpy as np

    from nonlocal_tf.layers import NonLocalBlock

    blocks = [layer for layer in model.layers if isinstance(layer, NonLocalBlock)]
    finest = max(block.input.shape[2] for block in blocks)
    found = {
        block.name: square_attention(model, clips, block.name)
        for block in blocks
        if block.input.shape[2] == finest
    }
    name = max(found, key=lambda n: np.median(found[n]["square"]))
    return name, found[name]


def square_attention(model, clips, block_name: str) -> dict:
    """`finest_attention`'s measures for one block."""
    import numpy as np

    from nonlocal_tf.visualize import batch_attention_maps, grid_coverage

    maps = batch_attention_maps(model, clips, block_name, pooled_keys=False)
    grid = maps.shape[1:4]
    looks = {"query": [], "background": [], "square": [], "from_background": [], "uniform": []}
    for clip, weights in zip(clips, maps, strict=True):
        squares = clip.max(axis=-1) > 100  # (T, H, W): the squares, not the noise (< 40)
        first, last = np.zeros_like(squares), np.zeros_like(squares)
        first[0], last[-1] = squares[0], squares[-1]
        query = np.unravel_index(np.argmax(grid_coverage(first, grid)), grid)
        empty = grid_coverage(squares, grid)[1]  # a time step without the two squares
        background = (1, *np.unravel_index(np.argmin(empty), empty.shape))
        keys = grid_coverage(last, weights.shape[3:]) > 0  # where the square reappears
        looks["query"].append(tuple(int(c) for c in query))
        looks["background"].append(tuple(int(c) for c in background))
        looks["square"].append(float(weights[query][keys].sum()))
        looks["from_background"].append(float(weights[background][keys].sum()))
        looks["uniform"].append(float(keys.mean()))
    return {k: np.asarray(v) if k not in ("query", "background") else v for k, v in looks.items()}


def print_attention(model, block: str, looks: dict, clip, video: int, clips: int) -> None:
    """The weights on the reappearing square against uniform: over the clips,
    then in the clearest one, with the model's own (pooled) keys too."""
    import numpy as np

    from nonlocal_tf.visualize import attention_maps, grid_coverage

    square, uniform = looks["square"], looks["uniform"]
    above = np.mean(square > 3 * uniform)
    print(
        f"\nwhere {block} attends (the finest non-local grid; keys unpooled) on the {clips} "
        f"held-out 'reappears' clips the model gets right:\n"
        f"  from frame 0's square, weight on the reappearing square (last frame): median "
        f"{np.median(square):.2f} (uniform {np.median(uniform):.2f}); over 3x uniform in "
        f"{100 * above:.0f}% of them\n"
        f"  from a background position of frames 2-3: median "
        f"{np.median(looks['from_background']):.2f}"
    )
    if np.median(square) < 2 * np.median(uniform):
        print(
            "  so in most clips this block does not single out the reappearing square "
            "from the first one; the clearest clip follows"
        )
    best = int(np.argmax(square))
    last = np.zeros(clip.shape[:3], bool)
    last[-1] = clip[-1].max(axis=-1) > 100
    pooled = attention_maps(model, clip, block, [looks["query"][best]], pooled_keys=True)[0]
    keys = grid_coverage(last, pooled.shape) > 0
    print(
        f"held-out video {video}, the clearest: weight on the reappearing square "
        f"{square[best]:.2f} (uniform {uniform[best]:.2f}) from frame 0's square "
        f"{looks['query'][best]}, {looks['from_background'][best]:.2f} from the background "
        f"{looks['background'][best]}; with the max-pooled keys the model computes: "
        f"{pooled[keys].sum():.2f} (uniform {keys.mean():.2f})"
    )


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
        predicted = model.predict(test_x, batch_size=100, verbose=0).argmax(axis=-1)
        results[mask] = (model, predicted)
        print(
            f"{model.name}: held-out accuracy {100 * np.mean(predicted == test_y):.1f}% "
            f"(trained in {seconds:.0f}s, {1000 * seconds / steps:.0f} ms/step)"
        )

    baseline, nonlocal_ = (np.mean(results[m][1] == test_y) for m in MASKS)
    print(
        f"\nheld-out accuracy on {len(test_y)} clips (chance 50%): C2D baseline "
        f"{100 * baseline:.1f}%  |  C2D + 5 non-local blocks {100 * nonlocal_:.1f}%  "
        f"({100 * (nonlocal_ - baseline):+.1f} points)"
    )
    model, predicted = results["nl5"]
    model.save_weights(os.path.join(FLAGS.output_dir, "reappear_c2d_nl5_r50.weights.h5"))

    # Fig. 1 on a "reappears" clip the model gets right; also the SavedModel's showcase.
    right = np.flatnonzero((predicted == test_y) & (test_y == 1))
    if not len(right):  # never seen; the figure and the export still come
        print("the non-local model classifies no held-out 'reappears' clip correctly")
        right = np.flatnonzero(test_y == 1)[:1]
    block, looks = finest_attention(model, test_x[right])
    clearest = int(np.argmax(looks["square"]))
    video = int(right[clearest])
    print_attention(model, block, looks, test_x[video], video, len(right))

    export_dir = os.path.join(FLAGS.output_dir, "saved_model")
    export_saved_model(model, export_dir)
    reloaded = tf.saved_model.load(export_dir)
    served = reloaded.serve_uint8(tf.constant(test_x[video : video + 1]))
    probs = served["probs"].numpy()[0]
    keras_probs = keras.ops.convert_to_numpy(
        model(test_x[video : video + 1].astype("float32"), training=False)
    )[0]
    print(
        f"\nSavedModel at {export_dir}: held-out video {video} is "
        f"'{CLASS_NAMES[int(probs.argmax())]}' (p={probs.max():.3f}; truth "
        f"'{CLASS_NAMES[int(test_y[video])]}'); max difference to the Keras model "
        f"{np.abs(probs - keras_probs).max():.2e}"
    )

    png = os.path.join(FLAGS.output_dir, "attention.png")
    queries = [looks["query"][clearest], looks["background"][clearest]]
    try:
        attention_figure(
            model,
            test_x[video],
            block,
            queries,
            png,
            labels=["frame 0's square", "background"],
        )
        print(f"where {block} attends in held-out video {video} (the paper's Fig. 1): {png}")
    except ImportError as error:
        print(f"no attention figure: {error}")
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
