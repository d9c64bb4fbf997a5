"""Pairwise functions of the non-local block, naive and memory-efficient.

Every function takes queries ``q`` of shape ``(B, Nq, d)``, keys ``k`` of shape
``(B, Nk, d)`` and values ``v`` of shape ``(B, Nk, dv)`` and returns
``y = (1 / C(x)) * f(q, k) @ v`` of shape ``(B, Nq, dv)``. ``B`` may already
fold groups (frames, temporal groups, spatial positions) into the batch.

Kinds of ``f`` and its normalisation ``C(x)``:
- ``"softmax"``: ``softmax(scale * q k^T)`` over the keys (Gaussian and
  embedded Gaussian instantiations).
- ``"dot"``: ``q k^T / Nk`` (dot product).
- ``"concat"``: ``relu(q + k^T) / Nk`` where q is ``(B, Nq, 1)`` and k is
  ``(B, Nk, 1)``, the two halves of ``w_f^T [theta_i, phi_j]`` already projected
  (concatenation).

The pairwise matrix is always computed in float32 (the softmax especially), and
the result is cast back to the dtype of ``v``.
"""

from __future__ import annotations

import keras
from keras import ops

KINDS = ("softmax", "dot", "concat")


def _f32(x):
    return ops.cast(x, "float32")


def _num_keys(k):
    return ops.cast(ops.shape(k)[1], "float32")


def pairwise_weights(kind: str, q, k, scale: float = 1.0):
    """The normalised pairwise matrix ``(B, Nq, Nk)`` in float32."""
    if kind == "softmax":
        logits = ops.einsum("bqd,bkd->bqk", _f32(q), _f32(k))  # (B, Nq, Nk)
        if scale != 1.0:
            logits = logits * scale
        return ops.softmax(logits, axis=-1)
    if kind == "dot":
        return ops.einsum("bqd,bkd->bqk", _f32(q), _f32(k)) / _num_keys(k)
    if kind == "concat":
        # (B, Nq, 1) + (B, 1, Nk) -> (B, Nq, Nk)
        return ops.relu(_f32(q) + ops.transpose(_f32(k), (0, 2, 1))) / _num_keys(k)
    raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind}")


def naive(kind: str, q, k, v, scale: float = 1.0):
    """Materialises the whole ``(B, Nq, Nk)`` matrix: the reference path."""
    w = pairwise_weights(kind, q, k, scale)
    y = ops.einsum("bqk,bkc->bqc", w, _f32(v))  # (B, Nq, dv)
    return ops.cast(y, v.dtype)


def reassociated_dot(q, k, v):
    """Dot product, exactly: ``q (k^T v) / Nk``; never forms the ``Nq x Nk`` matrix."""
    kv = ops.einsum("bkd,bkc->bdc", _f32(k), _f32(v))  # (B, d, dv)
    y = ops.einsum("bqd,bdc->bqc", _f32(q), kv) / _num_keys(k)  # (B, Nq, dv)
    return ops.cast(y, v.dtype)


def chunked(kind: str, q, k, v, scale: float = 1.0, chunk_size: int = 1024):
    """Exact result computed over blocks of ``chunk_size`` queries.

    Each block sees all keys, so the softmax is exact. With a static query count
    the blocks are a Python loop whose bodies are rematerialised: the backward
    pass recomputes one block's ``chunk_size x Nk`` matrix at a time instead of
    keeping all of them, so peak memory is O(chunk_size * Nk) for training too.
    With a dynamic query count (a TensorFlow graph with a `None` dimension, such
    as an exported SavedModel) the blocks run through `keras.ops.map`, which is
    memory-efficient for inference.
    """

    def block(qc, k_, v_):
        return naive(kind, qc, k_, v_, scale)

    nq = q.shape[1]
    if nq is not None:
        if nq <= chunk_size:
            return block(q, k, v)
        block_remat = keras.remat(block)
        outputs = [
            block_remat(q[:, start : start + chunk_size], k, v)
            for start in range(0, nq, chunk_size)
        ]
        return ops.concatenate(outputs, axis=1)
    return _chunked_dynamic(block, q, k, v, chunk_size)


def _chunked_dynamic(block, q, k, v, chunk_size: int):
    shape = ops.shape(q)
    batch, nq, depth = shape[0], shape[1], shape[2]
    num_chunks = (nq + chunk_size - 1) // chunk_size
    pad = num_chunks * chunk_size - nq
    q = ops.concatenate([q, ops.zeros((batch, pad, depth), dtype=q.dtype)], axis=1)
    q = ops.reshape(q, (batch, num_chunks, chunk_size, depth))
    q = ops.transpose(q, (1, 0, 2, 3))  # (num_chunks, B, chunk, d)
    y = ops.map(lambda qc: block(qc, k, v), q)  # (num_chunks, B, chunk, dv)
    y = ops.transpose(y, (1, 0, 2, 3))
    y = ops.reshape(y, (batch, num_chunks * chunk_size, ops.shape(y)[-1]))
    return y[:, :nq]


def fused_softmax(q, k, v, scale: float):
    """`keras.ops.dot_product_attention` with one head: a flash kernel where the
    backend has one (JAX and PyTorch on GPU, float16/bfloat16, head size <= 256)."""
    depth, value_depth = q.shape[-1], v.shape[-1]
    # Fused kernels want one head size: zero-padding the narrower side is exact
    # (zeros add nothing to q.k, and padded value channels are sliced off).
    if value_depth < depth:
        v = ops.pad(v, ((0, 0), (0, 0), (0, depth - value_depth)))
    elif depth < value_depth:
        q = ops.pad(q, ((0, 0), (0, 0), (0, value_depth - depth)))
        k = ops.pad(k, ((0, 0), (0, 0), (0, value_depth - depth)))
    y = ops.dot_product_attention(
        q[:, :, None, :], k[:, :, None, :], v[:, :, None, :], scale=scale
    )  # (B, Nq, 1, max(d, dv))
    return y[:, :, 0, :value_depth]


def fused_available(q, depth: int, value_depth: int) -> bool:
    """Whether `fused_softmax` would run a memory-efficient kernel for ``q``."""
    if max(depth, value_depth) > 256:
        return False
    if keras.backend.standardize_dtype(q.dtype) not in ("float16", "bfloat16"):
        return False
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    if backend == "torch":
        return getattr(getattr(q, "device", None), "type", None) == "cuda"
    return False
