"""`make demo`: the smallest real run of a non-local model on a generated video."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from nonlocal_tf import NonLocalBlock  # noqa: E402


def moving_square_video(frames: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    """RGB uint8 video (T, H, W, 3): a bright square crossing a noisy background."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 60, size=(frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        x0 = int(t * (size - 8) / max(frames - 1, 1))
        video[t, 12:20, x0 : x0 + 8] = (250, 200, 40)
    return video


def main() -> None:
    video = moving_square_video()
    inputs = keras.Input((None, None, None, 3))
    x = keras.layers.Rescaling(1 / 57.375, offset=-114.75 / 57.375)(inputs)
    x = keras.layers.Conv3D(16, (1, 3, 3), strides=(1, 2, 2), padding="same", activation="relu")(x)
    block = NonLocalBlock(name="nonlocal")
    x = block(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    probs = model.predict(video[None].astype("float32"), verbose=0)
    weights = block.attention_weights(
        model.layers[2](model.layers[1](video[None].astype("float32"))), [(0, 8, 1)]
    )
    print(f"model: {model.count_params()} parameters, probs {np.round(probs[0], 3)}")
    print(
        f"attention of query (t=0, y=8, x=1) over {tuple(weights.shape[2:])} keys sums to "
        f"{float(np.sum(keras.ops.convert_to_numpy(weights))):.3f}"
    )


if __name__ == "__main__":
    main()
