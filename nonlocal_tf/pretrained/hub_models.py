"""This library's models as a keras-hub class, so that keras-hub's own preset
loader reads this library's presets (keras-hub has no video classifier yet,
keras-hub#1764). Importing this module imports keras-hub (the ``[presets]``
extra) and registers `NonLocalBackbone` with Keras:

    import keras_hub
    import nonlocal_tf.pretrained.hub_models  # noqa: F401  (registers the class)

    model = keras_hub.models.Backbone.from_preset("presets/reappear_c2d_nl5_r50.demo")

A preset's ``config.json`` names ``nonlocal_tf>NonLocalBackbone``; its
``config`` (a builder of `nonlocal_tf.models` and its arguments) is checked
as data exactly as `nonlocal_tf.pretrained.from_preset` checks it, before
anything is built. keras-hub then loads ``model.weights.h5`` into it.
`nonlocal_tf.create_model` reads the same presets without keras-hub, with the
weights file's hash and declared shapes checked too.
"""

from __future__ import annotations

import json

import keras
import keras_hub

from nonlocal_tf.models import architecture
from nonlocal_tf.pretrained import presets
from nonlocal_tf.utils import from_json


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class NonLocalBackbone(keras_hub.models.Backbone):
    """A model of `nonlocal_tf.models` (a video or image ResNet with its
    classifier) as a keras-hub ``Backbone``: the graph ``builder(**arguments)``
    builds, with the same layers and so the same weights file.

    Args:
        builder: a name `nonlocal_tf.models.architecture` builds (a named
            variant such as ``"i3d_nl5_r50_8x8"``, ``"VideoResNet"``, ...).
        arguments: the builder's arguments, JSON data.
        dtype: keras-hub's dtype policy argument.
    """

    def __init__(self, builder: str, arguments: dict, dtype=None, **kwargs):
        config = {
            "config": {"builder": builder, "arguments": arguments},
            "nonlocal_tf_preset": presets.PRESET_FORMAT,
        }
        presets._validate(config, "(keras-hub config)")  # data only, sane sizes
        model = architecture.build(builder, **from_json(dict(arguments)))
        kwargs.setdefault("name", model.name)
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        super().__init__(inputs=inputs, outputs=model.outputs[0], dtype=dtype, **kwargs)
        # Strings: Keras would track a dict attribute as state.
        self._builder, self._arguments = builder, json.dumps(arguments)
        self.info = getattr(model, "info", {})

    def get_config(self):
        config = super().get_config()
        config.update(builder=self._builder, arguments=json.loads(self._arguments))
        return config
