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
    """Exact result computed over blocks of ``chunk_size`` queries, forward and
    backward, holding one ``chunk_size x Nk`` matrix at a time.

    Each block sees all keys, so the softmax is exact. The forward pass maps over
    the query blocks; a custom gradient scans them again, recomputing each
    block's pairwise matrix and accumulating the key and value gradients, so
    training memory is O(chunk_size * Nk + N * d) instead of O(Nq * Nk). Works
    with dynamic query counts (a TensorFlow graph with `None` dimensions).
    """
    nq = q.shape[1]
    if nq is not None and nq <= chunk_size:
        return naive(kind, q, k, v, scale)
    out_dtype = v.dtype

    @ops.custom_gradient
    def attend(q, k, v):
        q32, k32, v32 = _f32(q), _f32(k), _f32(v)
        num_queries = ops.shape(q)[1]
        q_blocks = _to_blocks(q32, chunk_size)  # (nb, B, chunk, d)
        num_blocks = ops.shape(q_blocks)[0]

        def forward_step(i, out_blocks):
            out = _block_forward(kind, ops.take(q_blocks, i, axis=0), k32, v32, scale)
            return ops.slice_update(out_blocks, (i, 0, 0, 0), out[None])

        empty = ops.zeros((*ops.shape(q_blocks)[:-1], v.shape[-1]), dtype="float32")
        out_blocks = sequential_fori_loop(num_blocks, forward_step, empty)
        out = _from_blocks(out_blocks, num_queries)  # (B, Nq, dv)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            do_blocks = _to_blocks(_f32(upstream), chunk_size)

            def step(i, carry):
                dk, dv, dq_blocks = carry
                blocks = [ops.take(b, i, axis=0) for b in (q_blocks, do_blocks, out_blocks)]
                dq, dk_c, dv_c = _block_backward(kind, *blocks, k32, v32, scale)
                dq_blocks = ops.slice_update(dq_blocks, (i, 0, 0, 0), dq[None])
                return dk + dk_c, dv + dv_c, dq_blocks

            init = (ops.zeros_like(k32), ops.zeros_like(v32), ops.zeros_like(q_blocks))
            dk, dv, dq_blocks = sequential_fori_loop(num_blocks, step, init)
            dq = _from_blocks(dq_blocks, num_queries)
            return ops.cast(dq, q.dtype), ops.cast(dk, k.dtype), ops.cast(dv, v.dtype)

        return ops.cast(out, out_dtype), grad

    return attend(q, k, v)


def sequential_fori_loop(upper, body, init):
    """`keras.ops.fori_loop(0, upper, body, init)` whose iterations never overlap.

    TensorFlow's while loop runs up to 10 iterations at once by default, which
    would hold 10 blocks' pairwise matrices in memory; the loop here is meant to
    hold one, so on TensorFlow it runs with ``parallel_iterations=1``.
    """
    if keras.backend.backend() != "tensorflow":
        return ops.fori_loop(0, upper, body, init)
    import tensorflow as tf

    _, result = tf.while_loop(
        lambda i, _: i < upper,
        lambda i, val: (i + 1, body(i, val)),
        (tf.constant(0), init),
        parallel_iterations=1,
    )
    return result


def _block_forward(kind, qc, k, v, scale):
    return ops.einsum("bqk,bkc->bqc", pairwise_weights(kind, qc, k, scale), v)


def _block_backward(kind, qc, doc, oc, k, v, scale):
    """Gradients of one query block: (dq_block, dk contribution, dv contribution)."""
    nk = _num_keys(k)
    dp = ops.einsum("bqc,bkc->bqk", doc, v)  # d loss / d weights, (B, chunk, Nk)
    if kind == "softmax":
        p = pairwise_weights(kind, qc, k, scale)
        rowdot = ops.sum(doc * oc, axis=-1, keepdims=True)  # (B, chunk, 1)
        ds = p * (dp - rowdot) * scale  # d loss / d (q.k)
    elif kind == "dot":
        p = pairwise_weights(kind, qc, k, scale)
        ds = dp / nk
    else:  # concat: weights = relu(q + k^T) / Nk, q (B, chunk, 1), k (B, Nk, 1)
        z = qc + ops.transpose(k, (0, 2, 1))
        p = ops.relu(z) / nk
        dz = dp * ops.cast(z > 0, "float32") / nk
        dq = ops.sum(dz, axis=-1, keepdims=True)  # (B, chunk, 1)
        dk = ops.transpose(ops.sum(dz, axis=1, keepdims=True), (0, 2, 1))  # (B, Nk, 1)
        return dq, dk, ops.einsum("bqk,bqc->bkc", p, doc)
    dq = ops.einsum("bqk,bkd->bqd", ds, k)
    dk = ops.einsum("bqk,bqd->bkd", ds, qc)
    dv = ops.einsum("bqk,bqc->bkc", p, doc)
    return dq, dk, dv


def _to_blocks(x, chunk_size: int):
    """(B, N, c) -> (num_blocks, B, chunk_size, c), zero-padded at the end.

    Padded query rows get zero upstream gradient, so they contribute nothing."""
    shape = ops.shape(x)
    batch, n, depth = shape[0], shape[1], x.shape[-1]
    num_blocks = (n + chunk_size - 1) // chunk_size
    pad = num_blocks * chunk_size - n
    x = ops.concatenate([x, ops.zeros((batch, pad, depth), dtype=x.dtype)], axis=1)
    x = ops.reshape(x, (batch, num_blocks, chunk_size, depth))
    return ops.transpose(x, (1, 0, 2, 3))


def _from_blocks(blocks, n):
    """Inverse of `_to_blocks`: (num_blocks, B, chunk_size, c) -> (B, n, c)."""
    shape = ops.shape(blocks)
    x = ops.transpose(blocks, (1, 0, 2, 3))
    x = ops.reshape(x, (shape[1], shape[0] * shape[2], blocks.shape[-1]))
    return x[:, :n]


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
