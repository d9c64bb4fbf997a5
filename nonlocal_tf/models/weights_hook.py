"""``weights=`` of the model builders.

The models sit below the weights and the pretrained catalogue (which build
models), so they cannot import them. `nonlocal_tf.pretrained` registers its
loader here when it is imported, which importing `nonlocal_tf` does; a builder
given ``weights=`` calls it (catalogue names, checkpoint files, URLs and
Keras ``.weights.h5`` files alike).
"""

from __future__ import annotations

from collections.abc import Callable

import keras

_loader: Callable[[keras.Model, str], object] | None = None


def register(loader: Callable[[keras.Model, str], object]) -> None:
    """Sets the function that ``weights=`` calls as ``loader(model, weights)``."""
    global _loader
    _loader = loader


def load(model: keras.Model, weights: str) -> None:
    if _loader is None:  # only when nonlocal_tf.models is loaded without its package
        raise RuntimeError("No weights loader: `import nonlocal_tf.pretrained` first.")
    _loader(model, weights)
