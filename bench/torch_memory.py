"""Which tensors a 30-view test batch keeps alive on the Keras PyTorch backend.

Runs one predict call of a video model (fully-convolutional head, uint8 views
as the pipelines give them) under a PyTorch dispatch mode that sees every
tensor an operation makes, and reports the peak of the bytes alive at once
(tensors made during the call: not the weights, but their per-call
bfloat16 copies), with the largest live
tensors at that moment and the layer that made each. On a CPU it needs no GPU
and shows the same tensors an eager GPU call keeps (not cuDNN's workspaces nor
the caching allocator's slack, which the GPU peaks of
``bench/train_throughput.py`` include).

    KERAS_BACKEND=torch python bench/torch_memory.py --variant=c2d_r50_8x8
    KERAS_BACKEND=torch python bench/torch_memory.py --variant=i3d_nl5_r50_8x8 --views=30
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("variant", "c2d_r50_8x8", "A named variant.")
flags.DEFINE_integer("views", 30, "Views in the batch (the official test: 30).")
flags.DEFINE_integer("size", 256, "View size.")
flags.DEFINE_integer("frames", 8, "Clip length.")
flags.DEFINE_string("dtype", "mixed_bfloat16", "Keras dtype policy.")
flags.DEFINE_integer("top", 8, "Live tensors listed at the peak.")


def live_tensor_peak(model, x, top: int) -> dict:
    """Runs ``model.predict_function`` on ``x``; the peak of live bytes and
    the largest tensors alive then, each with the layer that made it."""
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode

    layer = ["(before the first layer)"]
    make_operation = type(model)._get_operation_for_node

    def named(self, node):
        operation = make_operation(self, node)

        def call(*args, **kwargs):
            layer[0] = operation.name
            return operation(*args, **kwargs)

        return call

    class Live(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.storages, self.peak, self.at_peak = {}, 0, []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.storages = {k: v for k, v in self.storages.items() if not v[0].expired()}
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    s = t.untyped_storage()
                    self.storages.setdefault(
                        s.data_ptr(),
                        (StorageWeakRef(s), s.nbytes(), layer[0], tuple(t.shape), str(t.dtype)),
                    )
            total = sum(v[1] for v in self.storages.values())
            if total > self.peak:
                self.peak = total
                self.at_peak = sorted(
                    ((v[1], v[2], v[3], v[4]) for v in self.storages.values()), reverse=True
                )
            return out

    mode = Live()
    type(model)._get_operation_for_node = named
    try:
        started = time.perf_counter()
        with mode:
            model.predict_function([(x,)])
        seconds = time.perf_counter() - started
    finally:
        type(model)._get_operation_for_node = make_operation
    return {
        "peak_mib": round(mode.peak / 2**20, 1),
        "call_s": round(seconds, 2),
        "largest_at_peak": [
            {"mib": round(b / 2**20, 1), "layer": name, "shape": shape, "dtype": dtype}
            for b, name, shape, dtype in mode.at_peak[:top]
        ],
    }


def main(argv) -> None:
    del argv
    import keras
    import numpy as np

    from nonlocal_tf import models

    if keras.backend.backend() != "torch":
        raise SystemExit("Run with KERAS_BACKEND=torch.")
    os.environ["NONLOCAL_TF_CUDA_GRAPHS"] = "0"  # the eager call: a replayed graph shows no ops
    keras.config.set_dtype_policy(FLAGS.dtype)
    shape = (FLAGS.frames, FLAGS.size, FLAGS.size, 3)
    model = models.create_model(
        FLAGS.variant,
        input_shape=shape,
        classes=400,
        fully_convolutional=True,
        include_preprocessing=True,
    )
    views = np.random.default_rng(0).integers(0, 256, (FLAGS.views, *shape)).astype("uint8")
    x = keras.ops.convert_to_tensor(views)
    model.make_predict_function()
    model.predict_function([(x[:1],)])  # built, kernels chosen
    row = {"variant": FLAGS.variant, "views": FLAGS.views, "size": FLAGS.size, "dtype": FLAGS.dtype}
    row.update(live_tensor_peak(model, x, FLAGS.top))
    print(json.dumps(row))


if __name__ == "__main__":
    app.run(main)
