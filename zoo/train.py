"""Trains a video model with `keras.Model.fit` and an explicit recipe.

    python -m zoo.train --model=i3d_nl5_r50_8x8 --init=imagenet \
        --train_data=kinetics_train.csv --video_dir=videos/ --output_dir=runs/i3d_nl5

``--model`` is a named variant (`nonlocal_tf.models.VARIANTS`) or a catalogue
entry to fine-tune from (its architecture, a new head of ``--classes``).
``--train_data`` / ``--val_data``: a folder per class, a Kinetics CSV (with
``--video_dir``) or a TFRecord glob (``*.tfrecord``, needs ``--steps_per_epoch``).

Writes ``<output_dir>/checkpoints/epoch-NNN.weights.h5`` every epoch,
``backup/`` (`nonlocal_tf.training.StepBackup`: a killed run started again with
the same flags resumes from its newest readable backup, else from the newest
readable epoch checkpoint), TensorBoard logs in ``logs/`` and ``final.keras``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
_cli.define_model_flags(weights=False)
flags.DEFINE_string(
    "train_data", None, "Folder per class, Kinetics CSV or TFRecord glob.", required=True
)
flags.DEFINE_string("val_data", None, "Validation data (same forms); one centred clip per video.")
flags.DEFINE_string("video_dir", None, "Videos of a Kinetics CSV.")
flags.DEFINE_string("output_dir", None, "Checkpoints, backups and logs.", required=True)
flags.DEFINE_string(
    "init",
    "none",
    "'none', 'imagenet' (official Caffe2 R50/R101, inflated), a catalogue entry or a file.",
)
flags.DEFINE_string(
    "recipe", None, "official, official_frozen_bn, cosine_warmup or finetune; default: the model's."
)
flags.DEFINE_integer("epochs", 1, "Epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 8, "Global batch size.", lower_bound=1)
flags.DEFINE_integer(
    "steps_per_epoch", None, "Steps per epoch; default: one pass over the videos.", lower_bound=1
)
flags.DEFINE_integer(
    "backup_every", 100, "Back up the training state every this many steps.", lower_bound=1
)
flags.DEFINE_integer(
    "precise_bn_batches", None, "Batches for precise BN at each epoch end; default: the recipe's."
)
flags.DEFINE_enum(
    "mixed_precision", "none", ["none", "bfloat16", "float16"], "Mixed precision policy."
)
flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "on", "off"],
    "Compile the train step (XLA; torch.compile on PyTorch). auto: where it was measured "
    "faster (nonlocal_tf.runtime.jit_compile: JAX yes, TensorFlow on CPU and PyTorch no).",
)
flags.DEFINE_integer(
    "log_every", 50, "Steps between progress updates (each waits for the device).", lower_bound=1
)
flags.DEFINE_enum(
    "distribution",
    "none",
    ["none", "mirrored", "multi_worker", "data_parallel"],
    "tf.distribute Mirrored/MultiWorkerMirrored (TensorFlow) or keras DataParallel (JAX).",
)
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_integer("crop", 224, "Training crop size (official 224).", lower_bound=8)
flags.DEFINE_list(
    "train_scale", ["256", "320"], "Range of the random short side (official 256,320)."
)
flags.DEFINE_integer(
    "cpu_devices",
    0,
    "Split the CPU into this many logical devices (TensorFlow; to try "
    "data parallelism without accelerators). 0: leave as is.",
    lower_bound=0,
)


@dataclasses.dataclass
class Data:
    train: object  # tf.data.Dataset
    val: object | None
    num_classes: int
    steps: int


# ------------------------------------------------------------------- setup
def setup():
    """Process-wide settings, the recipe and the distribution scope (with its replica count)."""
    import keras

    from nonlocal_tf import training

    if FLAGS.cpu_devices and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
        )
    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.mixed_precision != "none":
        keras.config.set_dtype_policy(f"mixed_{FLAGS.mixed_precision}")
    name = FLAGS.recipe or _cli.recipe_of(FLAGS.model)
    if name not in training.RECIPES:
        raise app.UsageError(f"Unknown --recipe {name!r}; known: {sorted(training.RECIPES)}")
    return training.RECIPES[name], *_distribution_scope()


def _distribution_scope():
    import keras

    if FLAGS.distribution == "none":
        return contextlib.nullcontext(), 1
    backend = keras.backend.backend()
    if FLAGS.distribution == "data_parallel":
        if backend != "jax":
            raise app.UsageError(
                "--distribution=data_parallel is keras.distribution.DataParallel: JAX backend only."
            )
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return contextlib.nullcontext(), len(devices)
    if backend != "tensorflow":
        raise app.UsageError(
            f"--distribution={FLAGS.distribution} is tf.distribute: TensorFlow backend only."
        )
    import tensorflow as tf

    if FLAGS.distribution == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return strategy.scope(), strategy.num_replicas_in_sync


# -------------------------------------------------------------------- data
def load_data() -> Data:
    """The training and validation datasets, the class count and steps per epoch."""
    from nonlocal_tf import data

    frames, rate = _cli.clip_of(FLAGS.model)
    scale = _cli.int_pair(FLAGS.train_scale, "--train_scale")
    try:
        spec = data.ClipSpec(frames, rate, scale, FLAGS.crop, val_short_side=scale[0])
    except ValueError as exc:
        raise app.UsageError(f"--crop / --train_scale: {exc}") from None
    options = {"batch_size": FLAGS.batch_size, "seed": FLAGS.seed}
    train, videos = _cli.dataset(FLAGS.train_data, "train", spec, FLAGS.video_dir, **options)
    class_names = getattr(train, "class_names", None)
    num_classes = FLAGS.classes or (len(class_names) if class_names else None)
    if num_classes is None:
        raise app.UsageError("--classes is required with TFRecord data.")
    if class_names and FLAGS.classes and FLAGS.classes != len(class_names):
        raise app.UsageError(
            f"--classes={FLAGS.classes} but the training data has {len(class_names)} classes."
        )
    steps = FLAGS.steps_per_epoch or (math.ceil(len(videos) / FLAGS.batch_size) if videos else None)
    if steps is None:
        raise app.UsageError("--steps_per_epoch is required with TFRecord data.")
    val = None
    if FLAGS.val_data:
        val, _ = _cli.dataset(
            FLAGS.val_data, "val", spec, FLAGS.video_dir, class_names=class_names, **options
        )
    return Data(train, val, num_classes, steps)


# ------------------------------------------------------------------- model
def build_model(num_classes: int, recipe):
    """The model, initialised as ``--init`` says (a catalogue entry to fine-tune
    brings its own weights)."""
    from nonlocal_tf import models, pretrained, weights

    model = _cli.build(
        FLAGS.model,
        width_per_group=FLAGS.width_per_group,
        classes=num_classes,
        include_preprocessing=True,
        dropout_rate=recipe.dropout_rate,
    )
    if FLAGS.model in pretrained.CATALOG or FLAGS.init == "none":
        return model
    init = FLAGS.init
    if init == "imagenet":
        init = f"resnet{models.VARIANTS[FLAGS.model].depth}.imagenet_caffe2"
    if init in pretrained.CATALOG and pretrained.CATALOG[init].dataset == "ImageNet-1k":
        entry = pretrained.CATALOG[init]
        _inflate_from(model, weights.read_blobs(pretrained.source_path(entry), entry.format))
    elif os.path.isfile(init) and not init.endswith(".h5"):
        blobs = weights.read_blobs(init)
        if blobs.get("conv1_w") is not None and blobs["conv1_w"].ndim == 4:  # a 2D ImageNet model
            _inflate_from(model, blobs)
        else:
            weights.assign_blobs(model, blobs)
    else:
        pretrained.load_weights(model, init)
    return model


def _inflate_from(model, blobs):
    from nonlocal_tf import weights

    report = weights.inflate_from_blobs(model, blobs)
    print(f"init: {report.summary().splitlines()[0]}, {len(report.inflated)} kernels inflated")


def compile_model(model, recipe, data: Data) -> int:
    """Compiles with the recipe's optimizer and builds the training state; returns
    the number of weights with L2 decay."""
    import keras

    from nonlocal_tf import runtime, training

    decayed = training.apply_weight_decay(model, recipe.weight_decay)
    jit = {"auto": runtime.jit_compile(), "on": True, "off": False}[FLAGS.jit_compile]
    model.compile(
        optimizer=training.make_optimizer(recipe, FLAGS.epochs * data.steps, FLAGS.batch_size),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")],
        jit_compile=jit,
    )
    training.prepare_for_fit(model, data.train.element_spec)  # TensorFlow: one trace, not two
    return decayed


# --------------------------------------------------------------------- fit
def callbacks(data: Data, precise_batches: int) -> list:
    """Checkpoints, backups, logs and progress that read the device only every
    ``--log_every`` steps (`nonlocal_tf.training.callbacks`): none of them
    makes `fit` wait for each step's loss."""
    import keras

    from nonlocal_tf import data as video_data
    from nonlocal_tf import training

    out = FLAGS.output_dir
    checkpoints = os.path.join(out, "checkpoints", "epoch-{epoch:03d}.weights.h5")
    callbacks = [
        training.StopOnNaN(every=FLAGS.log_every),
        training.ProgressBar(every=FLAGS.log_every),
    ]
    if precise_batches:
        callbacks.append(training.PreciseBatchNorm(data.train, precise_batches))
    callbacks += [  # the epoch-end backup after precise BN, like the checkpoint
        training.EpochCheckpoint(checkpoints),
        training.StepBackup(
            os.path.join(out, "backup"), save_freq=FLAGS.backup_every, fallback=checkpoints
        ),
        training.EpochTensorBoard(os.path.join(out, "logs")),
        keras.callbacks.CSVLogger(os.path.join(out, "history.csv"), append=True),
    ]
    if hasattr(data.train, "skips"):
        callbacks.append(video_data.SkipReport(data.train.skips))
    return callbacks


def fit(model, recipe, data: Data):
    """`model.fit` with the callbacks above; writes ``final.keras`` and ``summary.json``."""
    import keras

    from nonlocal_tf import files

    precise = FLAGS.precise_bn_batches
    precise = recipe.precise_bn_batches if precise is None else precise
    train_input = data.train.repeat()
    if keras.backend.backend() == "jax" and FLAGS.distribution == "data_parallel":
        # Keras's JAX DataParallel stalled in its cross-device all-reduce on CPU
        # when it pulled from a tf.data pipeline itself; NumPy batches do not.
        train_input = (tuple(element) for element in train_input.as_numpy_iterator())
    history = model.fit(
        train_input,
        epochs=FLAGS.epochs,
        steps_per_epoch=data.steps,
        validation_data=data.val,
        callbacks=callbacks(data, precise),
        verbose=0,  # training.ProgressBar reports instead
    )
    out = FLAGS.output_dir
    with files.atomic_path(os.path.join(out, "final.keras")) as tmp:
        model.save(tmp)
    summary = {
        "model": FLAGS.model,
        "recipe": recipe.name,
        "epochs_run": len(history.epoch),
        "first_epoch": history.epoch[0] + 1 if history.epoch else None,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    files.write_json(os.path.join(out, "summary.json"), summary)
    return history


def main(argv) -> int:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _cli.output_dir(FLAGS.output_dir)
    recipe, scope, replicas = setup()
    data = load_data()
    with scope:
        model = build_model(data.num_classes, recipe)
        decayed = compile_model(model, recipe, data)
    print(
        f"{model.name}: {model.count_params():,} parameters, recipe {recipe.name}, {decayed} decayed weights, "
        f"{replicas} replica(s), {data.steps} steps/epoch, jit_compile={model.jit_compile}"
    )
    history = fit(model, recipe, data)
    first = history.epoch[0] + 1 if history.epoch else "-"
    print(f"done: epochs {first}..{FLAGS.epochs}, saved {FLAGS.output_dir}/final.keras")
    return 0


if __name__ == "__main__":
    _cli.run(main)
