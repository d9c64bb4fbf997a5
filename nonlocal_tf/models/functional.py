"""The models' class: a Keras functional model that lets go of each layer's
output once the last layer reading it has run."""

from __future__ import annotations

import gc
import json

import keras

from nonlocal_tf import runtime
from nonlocal_tf.models import cuda_graphs

# Builder arguments that are never recorded: they are objects, or load weights.
UNRECORDED = ("weights", "input_tensor")


def record(model: keras.Model, builder: str, arguments: dict) -> None:
    """Sets ``model.info`` to what built it: ``builder`` (a function of
    `nonlocal_tf.models`) called with ``arguments`` (every parameter, defaults
    included; see `nonlocal_tf.models.architecture`)."""
    from nonlocal_tf.utils import to_json

    kept = {k: v for k, v in arguments.items() if k not in UNRECORDED}
    model.info = {"builder": builder, "arguments": to_json(kept)}


# The axes of a model's input after the batch's, by its rank.
_AXES = {5: ("frames", "height", "width", "3"), 4: ("height", "width", "3")}


def _shape_of(x) -> tuple | None:
    """The shape of an array or tensor (None for a dimension a graph leaves
    open); None for anything else (a dataset, a dict, an unknown rank)."""
    if isinstance(x, dict | list | tuple):
        return None
    try:
        shape = tuple(x.shape)
    except (AttributeError, TypeError, ValueError):  # no shape, or a TensorShape of unknown rank
        return None
    return tuple(None if d is None else int(d) for d in shape)


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class LeanFunctional(keras.Model):
    """`keras.Model(inputs, outputs)` (same construction, config, weights and
    outputs) whose eager call frees intermediate tensors early.

    Keras's functional call keeps every layer's output until the model's
    output is ready. Compiled (JAX, TensorFlow graphs) the compiler frees them
    anyway; run eagerly (the PyTorch backend), a 30-view test batch then holds
    every activation of the network at once (18 GB for C2D R50 at 256 on the
    GPU, where JAX peaks at 3 GB). Here each intermediate output is dropped
    after its last consumer has run, so an inference pass holds only the
    tensors still to be read (training keeps what autograd saves, as before).

    Saved ``.keras`` files name this class; files written from plain
    functional models load as before.

    ``info``: what the model is, as JSON data saved in its config (so in
    ``.keras`` files): ``builder`` and ``arguments``, recorded by the builders
    (`VideoResNet`, `ImageResNet`), and what `nonlocal_tf.create_model` or
    `zoo.train` add (class names, clip settings, recipe, license; see
    `nonlocal_tf.pretrained.ModelInfo`).
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        # A string, not a dict: Keras would track a dict attribute as state.
        self._info_json = "{}"

    @property
    def info(self) -> dict:
        """A copy of the model's record (empty for a model built by hand)."""
        return json.loads(self._info_json)

    @info.setter
    def info(self, value: dict) -> None:
        self._info_json = json.dumps(value)

    def get_config(self):
        config = super().get_config()
        if self._info_json != "{}":
            config["nonlocal_tf"] = self.info
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        info = config.pop("nonlocal_tf", None)
        model = super().from_config(config, custom_objects=custom_objects)
        if info and isinstance(model, LeanFunctional):
            model.info = info
        return model

    def __call__(self, *args, **kwargs):
        if args:
            self._check_input(args[0])
        return super().__call__(*args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_input(x)
        return super().predict(x, *args, **kwargs)

    def predict_on_batch(self, x):
        self._check_input(x)
        return super().predict_on_batch(x)

    def _check_input(self, x) -> None:
        """A one-line `ValueError` for an array whose shape cannot be the
        model's input: another rank (an image batch for a video model),
        channels first, or a size that contradicts a fixed one. Read from the
        shape alone, before Keras traces or runs anything: a rank-4 batch
        failed deep in a layer, and a failed first `predict` on JAX left the
        model's variables unusable."""
        if len(self.inputs) != 1:
            return
        declared, shape = tuple(self.inputs[0].shape), _shape_of(x)
        if shape is None:
            return
        fits = len(shape) == len(declared) and all(
            d is None or s is None or d == s for d, s in zip(declared[1:], shape[1:], strict=True)
        )
        if fits:
            return
        names = _AXES.get(len(declared), ())
        layout = ", ".join(("batch", *names))
        fixed = ", ".join(
            ["batch"]
            + [str(d) if d is not None else n for d, n in zip(declared[1:], names, strict=False)]
        )
        hint = ""
        if len(declared) == 5 and len(shape) == 4:
            hint = " (an image batch: a video model takes clips of frames)"
        elif len(shape) == len(declared) and shape[1] == declared[-1] != shape[-1]:
            hint = " (channels first: the model takes channels last)"
        here = f", here ({fixed})" if fixed != layout else ""
        raise ValueError(
            f"{self.name} takes inputs of shape ({layout}){here}. Received: shape={shape}{hint}"
        )

    def make_train_function(self, force=False):
        return self._make_step("train", super().make_train_function, force)

    def make_predict_function(self, force=False):
        return self._make_step("predict", super().make_predict_function, force)

    def _make_step(self, kind: str, make, force: bool):
        """Keras's ``{kind}_function``, made by ``make``; on PyTorch on a GPU,
        with cuDNN's timed algorithm choice and replayed as CUDA graphs, as
        `nonlocal_tf.runtime` decides."""
        attribute = f"{kind}_function"
        if getattr(self, attribute) is not None and not force:
            return getattr(self, attribute)
        make(force=force)
        if keras.backend.backend() == "torch":
            if runtime.cudnn_benchmark():
                import torch

                torch.backends.cudnn.benchmark = True
            if runtime.cuda_graphs() and not self.jit_compile:
                cuda_graphs.install(self, kind)
        return getattr(self, attribute)

    def _run_through_graph(self, inputs, operation_fn=lambda op: op, call_fn=None):
        """Keras's `Function._run_through_graph`, with use counts: a
        computed tensor leaves the table when no node left needs it."""
        from keras import tree

        by_depth = self._nodes_by_depth
        uses: dict[int, int] = {}
        for nodes in by_depth.values():
            for node in nodes:
                if node.operation and not node.is_input:
                    for x in node.input_tensors:
                        uses[id(x)] = uses.get(id(x), 0) + 1
        wanted = {id(x) for x in self.outputs}
        eager = keras.backend.backend() == "torch"
        computed = {id(x): y for x, y in zip(self.inputs, tree.flatten(inputs), strict=False)}
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(x) not in computed for x in node.input_tensors):
                    continue  # not computable from these inputs, as Keras skips it
                args, kwargs = node.arguments.fill_in(computed)
                if call_fn is not None:
                    outputs = call_fn(operation_fn(node.operation), *args, **kwargs)
                else:
                    outputs = operation_fn(self._get_operation_for_node(node))(*args, **kwargs)
                merged = len(node.input_tensors) > 1
                del args, kwargs
                for x in node.input_tensors:
                    uses[id(x)] -= 1
                    if not uses[id(x)] and id(x) not in wanted:
                        computed.pop(id(x), None)
                if merged and eager:
                    # Keras's PyTorch tree functions leave a layer's list of inputs in a
                    # reference cycle: the residual sum's two inputs would stay alive
                    # until Python's next cyclic collection (a whole block later).
                    gc.collect(1)
                for x, y in zip(node.outputs, tree.flatten(outputs), strict=False):
                    computed[id(x)] = y
        missing = [x.name for x in self.outputs if id(x) not in computed]
        if missing:
            raise ValueError(f"Outputs {missing} are not connected to the model's inputs")
        return tree.pack_sequence_as(self._outputs_struct, [computed[id(x)] for x in self.outputs])
