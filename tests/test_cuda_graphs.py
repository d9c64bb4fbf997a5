"""The PyTorch steps replayed as CUDA graphs (`nonlocal_tf.models.cuda_graphs`).

On a CPU the wrapper runs with a recorder that re-runs the recorded call at
each replay, writing into the recorded outputs (what a graph replay does):
what it checks is the wrapper's own work, that the warm-up leaves no trace
(weights, optimizer state, metrics), that each batch reaches the step, that
outputs are copied out, and the fall-backs. On a CUDA GPU the same checks run
with real graphs (the device run of the closing notes), against the eager step.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

pytestmark = [
    pytest.mark.all_backends,
    pytest.mark.skipif(keras.backend.backend() != "torch", reason="a PyTorch-backend feature"),
]


@pytest.fixture(autouse=True)
def _eager_models_full_precision(monkeypatch):
    """On a GPU: full float32 convolutions and products, so that the eager and
    the recorded step agree to float32 rounding (TF32 differs at 1e-3). The
    tests wrap the steps themselves: the models' own recording is off."""
    import torch

    monkeypatch.setenv("NONLOCAL_TF_CUDA_GRAPHS", "0")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class ReRunRecorder:
    """Replays a call by running it again and copying its results into the
    outputs the capture returned."""

    def __init__(self):
        self.captures = 0

    def device(self):
        import torch

        return torch.device("cpu")

    def warm_up(self, call, times):
        for _ in range(times):
            call()

    def capture(self, call):
        import torch

        self.captures += 1
        outputs = call()

        def replay():
            fresh = call()
            with torch.no_grad():
                keras.tree.map_structure(lambda o, f: o.copy_(f), outputs, fresh)

        return replay, outputs

    def abandon(self):
        pass

    def upload(self, buffer, value):
        buffer.copy_(value)


def _recorder():
    import torch

    if torch.cuda.is_available():
        from nonlocal_tf.models.cuda_graphs import CudaRecorder

        return CudaRecorder()
    return ReRunRecorder()


def _model(seed=0):
    from nonlocal_tf import models, training

    keras.utils.set_random_seed(seed)
    model = models.create_model(
        "i3d_nl5_r50_8x8",
        input_shape=(4, 32, 32, 3),
        classes=5,
        width_per_group=4,
        dropout_rate=0.0,
    )
    model.compile(
        optimizer=training.make_optimizer(training.OFFICIAL, 100, 4),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
        jit_compile=False,
    )
    return model


def _batches(count, batch=4):
    rng = np.random.default_rng(1)
    return [
        (
            rng.normal(size=(batch, 4, 32, 32, 3)).astype("float32"),
            rng.integers(0, 5, batch).astype("int32"),
        )
        for _ in range(count)
    ]


def _install(model, kind):
    from nonlocal_tf.models import cuda_graphs

    recorder = _recorder()
    if kind == "train":
        model.make_train_function(force=True)
        model.train_function = cuda_graphs.GraphedStep(
            model.train_function, cuda_graphs.train_state(model), "training", recorder
        )
    else:
        model.make_predict_function(force=True)
        model.predict_function = cuda_graphs.GraphedStep(
            model.predict_function, list, "predict", recorder
        )
    return recorder


def _assert_same_state(a, b, rtol):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-2)
    for x, y in zip(a.optimizer.variables, b.optimizer.variables, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(x), keras.ops.convert_to_numpy(y), rtol=rtol, atol=1e-6
        )


def test_graphed_training_matches_eager_steps():
    """Same losses, weights, batch-norm statistics, optimizer slots and
    iteration count as the eager step; the warm-up left no trace; a batch of
    another size gets its own graph."""
    eager, graphed = _model(), _model()
    graphed.set_weights(eager.get_weights())
    recorder = _install(graphed, "train")
    batches = _batches(4) + _batches(1, batch=2)
    rtol = 1e-4
    for x, y in batches:
        expected = eager.train_on_batch(x, y, return_dict=True)
        got = graphed.train_on_batch(x, y, return_dict=True)
        assert got["loss"] == pytest.approx(expected["loss"], rel=rtol)
        assert got["accuracy"] == pytest.approx(expected["accuracy"])
    _assert_same_state(eager, graphed, rtol)
    assert int(keras.ops.convert_to_numpy(graphed.optimizer.iterations)) == len(batches)
    assert len(graphed.train_function.recorded) == 2
    if isinstance(recorder, ReRunRecorder):
        assert recorder.captures == 2


def test_shapes_beyond_the_limit_run_eagerly(monkeypatch):
    """Past MAX_GRAPHS batch shapes the step runs eagerly, with one warning,
    and gives the eager outputs."""
    from nonlocal_tf.models import cuda_graphs

    monkeypatch.setattr(cuda_graphs, "MAX_GRAPHS", 1)
    model = _model()
    x = np.concatenate([b[0] for b in _batches(2)])
    expected = model.predict(x, batch_size=3, verbose=0)  # batches of 3, 3, 2
    _install(model, "predict")
    with pytest.warns(UserWarning, match="further shapes run eagerly"):
        got = model.predict(x, batch_size=3, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert len(model.predict_function.recorded) == 1


def test_graphed_fit_matches_eager_fit():
    """`fit` over an epoch with a last, smaller batch: the same history and
    weights (metrics accumulate across the replayed steps)."""
    x = np.concatenate([b[0] for b in _batches(3)])[:10]
    y = np.concatenate([b[1] for b in _batches(3)])[:10]
    eager, graphed = _model(), _model()
    graphed.set_weights(eager.get_weights())
    _install(graphed, "train")
    h_eager = eager.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    h_graph = graphed.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history
    for key in h_eager:
        np.testing.assert_allclose(h_graph[key], h_eager[key], rtol=1e-4)
    _assert_same_state(eager, graphed, 1e-4)


def test_graphed_predict_keeps_each_batch():
    """`predict` over several batches returns each batch's own outputs (the
    recorded outputs are copied out before the next replay), equal to the
    eager model's."""
    model = _model()
    x = np.concatenate([b[0] for b in _batches(3)])
    expected = model.predict(x, batch_size=4, verbose=0)
    _install(model, "predict")
    got = model.predict(x, batch_size=4, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[:4], got[4:8])


def test_failed_recording_runs_eagerly_with_a_warning():
    """A step the recorder refuses runs eagerly, warned once, state intact."""
    from nonlocal_tf.models import cuda_graphs

    class Refusing(ReRunRecorder):
        def capture(self, call):
            raise RuntimeError("operation not permitted when stream is capturing")

    eager, graphed = _model(), _model()
    graphed.set_weights(eager.get_weights())
    graphed.make_train_function(force=True)
    graphed.train_function = cuda_graphs.GraphedStep(
        graphed.train_function, cuda_graphs.train_state(graphed), "training", Refusing()
    )
    (x, y), (x2, y2) = _batches(2)
    with pytest.warns(UserWarning, match="could not be recorded as a CUDA graph"):
        graphed.train_on_batch(x, y)
    graphed.train_on_batch(x2, y2)
    for a, b in ((x, y), (x2, y2)):
        eager.train_on_batch(a, b)
    _assert_same_state(eager, graphed, 1e-5)


def test_runtime_decision(monkeypatch):
    """Recording is on by default only on a GPU; the variable forces it, and
    LeanFunctional then installs it; a bad value is refused."""
    import torch

    from nonlocal_tf import runtime
    from nonlocal_tf.models import cuda_graphs

    monkeypatch.delenv("NONLOCAL_TF_CUDA_GRAPHS", raising=False)
    assert runtime.cuda_graphs() == torch.cuda.is_available()
    monkeypatch.setenv("NONLOCAL_TF_CUDA_GRAPHS", "yes")
    with pytest.raises(ValueError, match="NONLOCAL_TF_CUDA_GRAPHS"):
        runtime.cuda_graphs()
    monkeypatch.setenv("NONLOCAL_TF_CUDA_GRAPHS", "0")
    model = _model()
    model.make_train_function()
    assert not isinstance(model.train_function, cuda_graphs.GraphedStep)
    monkeypatch.setenv("NONLOCAL_TF_CUDA_GRAPHS", "1")
    monkeypatch.setattr(cuda_graphs, "CudaRecorder", ReRunRecorder)
    model = _model()
    model.make_train_function()
    model.make_predict_function()
    assert isinstance(model.train_function, cuda_graphs.GraphedStep)
    assert isinstance(model.predict_function, cuda_graphs.GraphedStep)
