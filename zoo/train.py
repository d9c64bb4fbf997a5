"""Trains a video model with `keras.Model.fit` and an explicit recipe.

    python -m zoo.train --model=reappear_c2d_nl5_r50.demo --train_data=videos/ \
        --output_dir=runs/my_run                       # fine-tune a catalogue entry
    python -m zoo.train --model=i3d_nl5_r50_8x8 --weights=imagenet \
        --train_data=kinetics_train.csv --video_dir=videos/ --output_dir=runs/i3d_nl5
    python -m zoo.train --resume=runs/my_run --epochs=10   # the same run, on to epoch 10

``--model``: any model `nonlocal_tf.create_model` takes. A named variant starts
from ``--weights`` (default none; ``imagenet``: the official ImageNet ResNet,
inflated) with its official recipe; a catalogue entry, preset, run folder or
``.keras`` file is fine-tuned from its weights with the ``finetune`` recipe,
at its own clip settings (frames, rate, crop, short sides), a new head when
the data has other classes. Flags override each choice.
``--train_data`` / ``--val_data``: a folder per class, a Kinetics CSV (with
``--video_dir``) or a TFRecord glob (``*.tfrecord``, needs ``--steps_per_epoch``).

The run folder (``--output_dir``) holds ``run.json`` (the model's record with
the data's class names, and the command's flags), ``checkpoints/epoch-NNN.weights.h5``,
``backup/`` (`nonlocal_tf.training.StepBackup`: a killed run started again with
the same flags, or with ``--resume``, resumes from its newest readable backup),
TensorBoard logs in ``logs/``, ``history.csv``, ``summary.json`` and
``final.keras`` (class names included). Name the folder as ``--model`` of
``zoo.evaluate``, ``zoo.predict``, ``zoo.export`` or ``zoo.train``.
One run writes a folder at a time: a second run started on it while the first
is alive is refused (exit 1, nothing written); a killed run's lock is taken over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import tempfile
from collections.abc import Callable

from absl import app, flags

from zoo import _cli

FLAGS = flags.FLAGS
_cli.define_model_flags(required=False)  # --resume gives it
_cli.define_input_flags()
flags.DEFINE_string("train_data", None, "Folder per class, Kinetics CSV or TFRecord glob.")
flags.DEFINE_string("val_data", None, "Validation data (same forms); one centred clip per video.")
flags.DEFINE_string("video_dir", None, "Videos of a Kinetics CSV.")
flags.DEFINE_string("output_dir", None, "The run folder: checkpoints, backups, logs.")
flags.DEFINE_alias("init", "weights")
flags.DEFINE_string(
    "resume",
    None,
    "A run folder: continue it with the flags it was started with (given flags win).",
)
flags.DEFINE_string(
    "recipe",
    None,
    "official, official_frozen_bn, cosine_warmup or finetune; default: the model's "
    "(finetune from trained weights).",
)
flags.DEFINE_integer("epochs", 1, "Epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 8, "Global batch size.", lower_bound=1)
flags.DEFINE_integer(
    "steps_per_epoch", None, "Steps per epoch; default: one pass over the videos.", lower_bound=1
)
flags.DEFINE_integer(
    "backup_every",
    1000,
    "Back up the training state every this many steps (and at each epoch end). One backup of "
    "I3D-NL5 R50 took 0.5 s on an H200 host, 40 steps there.",
    lower_bound=1,
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
    "tf.distribute Mirrored / MultiWorkerMirrored (TensorFlow; workers from TF_CONFIG) or "
    "keras.distribution.DataParallel over every device of every process (JAX).",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "data_parallel with several processes (JAX): host:port of process 0. Default: "
    "KERAS_DISTRIBUTION_JOB_ADDRESSES, or what JAX reads from SLURM / Open MPI.",
)
flags.DEFINE_integer(
    "num_processes", None, "Processes of a multi-process run (JAX); default from the environment."
)
flags.DEFINE_integer(
    "process_id", None, "This process's index (JAX); default from the environment."
)
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_integer(
    "crop", None, "Training crop size; default the model's (official 224).", lower_bound=8
)
flags.DEFINE_list(
    "train_scale", None, "Range of the random short side; default the model's (official 256,320)."
)
flags.DEFINE_integer(
    "cpu_devices",
    0,
    "Split the CPU into this many logical devices (TensorFlow; to try "
    "data parallelism without accelerators). 0: leave as is.",
    lower_bound=0,
)


@dataclasses.dataclass
class Parallel:
    """How the global batch is spread: over ``replicas`` devices, fed by
    ``pipelines`` input pipelines (processes or TensorFlow workers), this one
    being number ``pipeline``."""

    scope: contextlib.AbstractContextManager
    replicas: int = 1
    pipelines: int = 1
    pipeline: int = 0
    strategy: object | None = None  # a tf.distribute strategy

    @property
    def chief(self) -> bool:
        """This process writes the checkpoints, backups and logs."""
        return self.pipeline == 0


@dataclasses.dataclass
class Data:
    train: object  # this pipeline's batches, endless (a nonlocal_tf.data.VideoDataset)
    fit_input: object  # what `fit` reads: the batches, distributed where needed
    val: object | None
    num_classes: int
    steps: int
    close: Callable[[], None]  # ends what reads the training data (Grain's workers)
    clock: object = None  # how long fit waited for fit_input, where it is a stream
    class_names: list[str] | None = None  # the data's, in label order
    # What precise BN reads batches from: the stream `fit` reads where it is one
    # (no second pipeline), else the training data (a new iterator each epoch).
    precise_input: object = None
    position: object = None  # the stream's DataPosition, which the backups record (Grain)


# ------------------------------------------------------------------- setup
def setup():
    """Process-wide settings, what ``--model`` is (`nonlocal_tf.ModelInfo`),
    the recipe and how training is spread (`Parallel`)."""
    import keras

    from nonlocal_tf import training

    if FLAGS.cpu_devices and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_devices
        )
    parallel = _parallel()  # before any computation: JAX joins the processes first
    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.mixed_precision != "none":
        keras.config.set_dtype_policy(f"mixed_{FLAGS.mixed_precision}")
    info = _cli.model_info()
    name = FLAGS.recipe or info.recipe
    if name not in training.RECIPES:
        raise app.UsageError(f"Unknown --recipe {name!r}; known: {sorted(training.RECIPES)}")
    return info, training.RECIPES[name], parallel


def _parallel() -> Parallel:
    import keras

    from nonlocal_tf.training import distribute

    backend = keras.backend.backend()
    wanted = FLAGS.distribution
    if wanted == "none":
        if FLAGS.num_processes not in (None, 1):
            raise app.UsageError("--num_processes needs --distribution=data_parallel.")
        return Parallel(contextlib.nullcontext())
    if backend == "torch":
        raise app.UsageError(
            "Keras has no distribution API for the PyTorch backend: train on several devices "
            "with KERAS_BACKEND=jax (--distribution=data_parallel) or tensorflow "
            "(--distribution=mirrored or multi_worker)."
        )
    if wanted == "data_parallel":
        if backend != "jax":
            raise app.UsageError(
                "--distribution=data_parallel is keras.distribution.DataParallel: JAX backend only."
            )
        index, count = distribute.initialize(
            FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
        )
        replicas = distribute.data_parallel()
        return Parallel(contextlib.nullcontext(), replicas, count, index)
    if backend != "tensorflow":
        raise app.UsageError(f"--distribution={wanted} is tf.distribute: TensorFlow backend only.")
    import tensorflow as tf

    if wanted == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Parallel(strategy.scope(), strategy.num_replicas_in_sync, strategy=strategy)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    workers = strategy.extended._num_workers  # noqa: SLF001  (no public count)
    return Parallel(
        strategy.scope(), strategy.num_replicas_in_sync, workers, resolver.task_id or 0, strategy
    )


# -------------------------------------------------------------------- data
def clip_spec(info):
    """The model's clips (`ModelInfo.spec`), ``--crop`` / ``--train_scale`` over them."""
    import dataclasses

    changes = {}
    if FLAGS.train_scale:
        changes["train_scale"] = _cli.int_pair(FLAGS.train_scale, "--train_scale")
        changes["val_short_side"] = changes["train_scale"][0]
    if FLAGS.crop:
        changes["crop"] = FLAGS.crop
    try:
        return dataclasses.replace(info.spec, **changes)
    except ValueError as exc:
        raise app.UsageError(f"--crop / --train_scale: {exc}") from None


def load_data(info, parallel: Parallel) -> Data:
    """This pipeline's share of the training data (its shard, ``--batch_size /
    pipelines`` clips per step), what `fit` reads, the validation data, the
    class names (or count) and the steps per epoch."""
    from nonlocal_tf import prefetch, training

    spec = clip_spec(info)
    if FLAGS.batch_size % parallel.pipelines:
        raise app.UsageError(
            f"--batch_size={FLAGS.batch_size} (the global batch) does not split evenly over "
            f"{parallel.pipelines} processes."
        )
    local_batch = FLAGS.batch_size // parallel.pipelines

    def dataset(source, mode, batch, num_shards, shard_index, **extra):
        return _cli.dataset(
            source,
            mode,
            spec,
            FLAGS.video_dir,
            batch_size=batch,
            seed=FLAGS.seed,
            num_shards=num_shards,
            shard_index=shard_index,
            **extra,
        )

    close = lambda: None  # noqa: E731
    shard = (parallel.pipelines, parallel.pipeline)
    precise_input, clock, position = None, None, None
    device = FLAGS.augment_on == "device"
    if device and parallel.strategy is not None:
        raise app.UsageError(
            "--augment_on=device reads through Grain; tf.distribute reads tf.data."
        )
    train = dataset(
        FLAGS.train_data, "train", local_batch, *shard, repeat=True, augment_on=FLAGS.augment_on
    )
    class_names, videos = train.class_names, train.videos
    num_classes = FLAGS.classes or (len(class_names) if class_names else info.num_classes)
    if num_classes is None:
        raise app.UsageError("--classes is required with TFRecord data.")
    if class_names and FLAGS.classes and FLAGS.classes != len(class_names):
        raise app.UsageError(
            f"--classes={FLAGS.classes} but the training data has {len(class_names)} classes."
        )
    steps = FLAGS.steps_per_epoch
    if steps is None and videos is not None:  # several pipelines: no clip twice in an epoch
        whole = math.ceil(len(videos) / FLAGS.batch_size)
        steps = whole if parallel.pipelines == 1 else max(len(videos) // FLAGS.batch_size, 1)
    if steps is None:
        raise app.UsageError("--steps_per_epoch is required with TFRecord data.")
    val = None
    if FLAGS.val_data and parallel.pipelines > 1:
        print("--val_data: skipped with several processes; evaluate with zoo.evaluate")
    elif FLAGS.val_data:
        val = dataset(  # read here, whatever serves the training data
            FLAGS.val_data,
            "val",
            FLAGS.batch_size,
            1,
            0,
            class_names=class_names,
            data_service=None,
        )
    if parallel.strategy is not None and parallel.pipelines > 1:  # TensorFlow workers
        fit_input = parallel.strategy.distribute_datasets_from_function(
            lambda context: (
                dataset(
                    FLAGS.train_data,
                    "train",
                    context.get_per_replica_batch_size(FLAGS.batch_size),
                    context.num_input_pipelines,
                    context.input_pipeline_id,
                    repeat=True,
                ).data
            )
        )
    elif train.engine == "tf_data" and not prefetch.wanted():  # tf.data prefetches itself
        fit_input = train.data
    else:  # the next batches copied to the accelerator(s) while the step runs
        stream = iter(train)
        batches = (tuple(b) for b in stream)
        if train.engine == "grain" and parallel.pipelines == 1:  # a killed run reads on
            backup = os.path.join(FLAGS.output_dir, training.BACKUP)
            position = training.DataPosition(train.data, training.newest_data_state(backup))
            batches = position.read(batches)
        clock = prefetch.InputClock()
        placed = prefetch.to_device(batches)
        fit_input = clock.wrap(training.cut_views(placed) if device else placed)
        if position is not None:
            fit_input = position.taken(fit_input)
        close = stream.close  # Grain: its worker processes end with fit
        precise_input = fit_input
    val_input = val.data if val else None
    return Data(
        train,
        fit_input,
        val_input,
        num_classes,
        steps,
        close,
        clock,
        class_names,
        precise_input or train,
        position,
    )


# ------------------------------------------------------------------- model
def build_model(data: Data, recipe):
    """The model (`nonlocal_tf.create_model`: its weights, or ``--weights``),
    a classifier for the data's classes (a new one where they differ), the
    data's class names recorded in it."""
    names = data.class_names if data.class_names and not FLAGS.classes else None
    return _cli.create_model(
        classes=data.num_classes,
        class_names=names,
        include_preprocessing=True,
        dropout_rate=recipe.dropout_rate,
    )


def compile_model(model, recipe, data: Data, parallel: Parallel) -> int:
    """`nonlocal_tf.training.compile_for_recipe`, and the training state
    built before `fit` traces its step; returns the number of decayed weights."""
    from nonlocal_tf import runtime, training

    jit = {"auto": runtime.jit_compile(), "on": True, "off": False}[FLAGS.jit_compile]
    decayed = training.compile_for_recipe(
        model, recipe, FLAGS.epochs * data.steps, FLAGS.batch_size, jit_compile=jit
    )
    if parallel.strategy is not None and parallel.pipelines > 1:  # TensorFlow workers
        from nonlocal_tf.training import multi_worker

        multi_worker.allow_fit(model, parallel.strategy, data.train.element_spec)
    else:
        training.prepare_for_fit(model, data.train.step_spec)  # TensorFlow: one trace
    return decayed


# --------------------------------------------------------------------- fit
def callbacks(data: Data, precise_batches: int, parallel: Parallel) -> list:
    """`nonlocal_tf.training.standard_callbacks` for this run. With several
    processes every one runs them (on JAX their reads of the model are
    collectives), only the chief writes and prints; the others restore from
    the chief's backups and put their logs in a temporary folder. Precise BN
    reads on from the training stream where it is one (Grain: no new workers)."""
    from nonlocal_tf import training

    return training.standard_callbacks(
        FLAGS.output_dir,
        precise_bn_data=data.precise_input,
        precise_bn_batches=precise_batches,
        log_every=FLAGS.log_every,
        backup_every=FLAGS.backup_every,
        skips=data.train.skips,
        write=parallel.chief,
        logs_dir=None if parallel.chief else tempfile.mkdtemp(prefix="nonlocal_tf_process_"),
        input_clock=data.clock,
        data_position=data.position,
    )


def fit(model, recipe, data: Data, parallel: Parallel):
    """`model.fit` with the callbacks above; the chief writes ``final.keras``
    and ``summary.json``."""
    from nonlocal_tf import files, training
    from nonlocal_tf.utils import passes_of_unknown_length

    precise = FLAGS.precise_bn_batches
    if precise is None:  # the recipe's, but no more than an epoch's worth of data
        precise = min(recipe.precise_bn_batches, data.steps)
    if precise and parallel.pipelines > 1:
        print("precise BN: skipped with several processes (each would see only its shard)")
        precise = 0
    used = callbacks(data, precise, parallel)
    try:
        # The training stream repeats (steps_per_epoch); the validation pass ends with its videos.
        with passes_of_unknown_length():
            history = model.fit(
                data.fit_input,
                epochs=FLAGS.epochs,
                steps_per_epoch=data.steps,
                validation_data=data.val,
                callbacks=used,
                shuffle=False,  # the input pipelines shuffle (Keras warns it cannot)
                verbose=0,  # training.ProgressBar reports instead
            )
    finally:
        data.close()
    timer = used[0]
    out = FLAGS.output_dir
    final = os.path.join(out, "final.keras")
    # On JAX saving is a collective: every process saves, the chief keeps it.
    with files.atomic_path(final) if parallel.chief else files.scratch_path("final.keras") as tmp:
        model.save(tmp)
    if not parallel.chief:
        return history
    summary = {
        "model": FLAGS.model,
        "recipe": recipe.name,
        "global_batch": FLAGS.batch_size,
        "processes": parallel.pipelines,
        "epochs_run": len(history.epoch),
        "first_epoch": history.epoch[0] + 1 if history.epoch else None,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        # The training steps of each epoch, input included (validation, precise BN and
        # checkpoints not): what the run sustains, from the files to the optimizer.
        "train_seconds": {e + 1: round(s, 3) for e, s in timer.seconds.items()},
        "clips_per_s": {
            e + 1: round(data.steps * FLAGS.batch_size / s, 2) for e, s in timer.seconds.items()
        },
        # The share of each epoch the step waited for input (where fit reads a stream).
        "input_wait_share": {
            e + 1: round(share, 3)
            for cb in used
            if isinstance(cb, training.InputWait)
            for e, share in cb.shares.items()
        },
    }
    files.write_json(os.path.join(out, "summary.json"), summary)
    return history


def resume_flags() -> None:
    """``--resume=<run folder>``: the flags that run was started with (its
    ``run.json``), under those given now; the folder is the output folder."""
    from nonlocal_tf.pretrained import sources

    if not FLAGS.resume:
        return
    command = sources.read_run_record(FLAGS.resume).get("command")
    if not command:
        raise app.UsageError(
            f"--resume: {FLAGS.resume} has no {sources.RUN_FILE}: not a zoo.train run folder "
            "(start it again with the same flags to resume a run made before 0.2)."
        )
    for name, value in command.items():
        if name in FLAGS and not FLAGS[name].present:
            FLAGS[name].value = value
    FLAGS.output_dir = FLAGS.resume


def command_flags() -> dict:
    """This command's own flags and their values (what ``--resume`` restores)."""
    main_module = sys.argv[0]
    own = FLAGS.get_key_flags_for_module(main_module)
    return {f.name: f.value for f in own if f.name not in ("resume", "init")}


def main(argv) -> int:
    del argv
    resume_flags()
    for name in ("model", "train_data", "output_dir"):
        if getattr(FLAGS, name) is None:
            raise app.UsageError(f"--{name} is required (or --resume=<run folder>).")
    _cli.output_dir(FLAGS.output_dir)
    info, recipe, parallel = setup()
    with _cli.hold_output_dir(FLAGS.output_dir, hold=parallel.chief):
        return train(info, recipe, parallel)


def train(info, recipe, parallel: Parallel) -> int:
    """Data, model, `fit`: the run, once the output folder is this run's."""
    from nonlocal_tf import training
    from nonlocal_tf.pretrained import sources

    data = load_data(info, parallel)
    with parallel.scope:
        model = build_model(data, recipe)
        if not FLAGS.recipe:  # what the weights made of it (an image checkpoint: official)
            recipe = training.RECIPES[model.info["recipe"]]
        # The clips it learns from (--crop / --train_scale over the model's), in its record.
        model.info = {**model.info, "spec": dataclasses.asdict(data.train.spec)}
        decayed = compile_model(model, recipe, data, parallel)
    if parallel.chief:
        record = {"model_info": model.info, "command": command_flags()}
        sources.write_run_record(FLAGS.output_dir, record)
        local = FLAGS.batch_size // parallel.pipelines
        print(
            f"{model.name}: {model.count_params():,} parameters, recipe {recipe.name}, "
            f"{decayed} decayed weights, jit_compile={model.jit_compile}\n"
            f"global batch {FLAGS.batch_size} ({local} clips per step in each of "
            f"{parallel.pipelines} process(es), {parallel.replicas} replica(s)), learning rate "
            f"{recipe.learning_rate(FLAGS.batch_size):g} ({recipe.base_lr:g} per "
            f"{recipe.reference_batch_size} clips), warm-up "
            f"{int(recipe.warmup_fraction * FLAGS.epochs * data.steps)} steps, "
            f"{data.steps} steps/epoch"
        )
    history = fit(model, recipe, data, parallel)
    if parallel.chief:
        first = history.epoch[0] + 1 if history.epoch else "-"
        print(f"done: epochs {first}..{FLAGS.epochs}, saved {FLAGS.output_dir}/final.keras")
    return 0


if __name__ == "__main__":
    _cli.run(main)
