"""Loading weights into the models."""

from __future__ import annotations

import os


def load_weights(model, weights: str) -> None:
    """Loads ``weights`` into ``model``: a local ``.weights.h5`` file."""
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No weights file at {path!r}.")
    if not path.endswith(".weights.h5"):
        raise ValueError(f"`weights` must be a .weights.h5 file. Received: weights={path!r}")
    model.load_weights(path)
