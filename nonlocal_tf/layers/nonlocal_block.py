"""The non-local block (Wang et al., CVPR 2018) as a Keras 3 layer."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

from nonlocal_tf import runtime
from nonlocal_tf.layers import checks, pairwise, video_ops
from nonlocal_tf.layers.batch_norm import BatchNormalization

INSTANTIATIONS = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
PAIRWISE_EXTENTS = ("spacetime", "space", "time")
POOL_POSITIONS = ("before", "after")
IMPLEMENTATIONS = ("auto", "naive", "chunked", "fused", "reassociated")

_KIND = {
    "embedded_gaussian": "softmax",
    "gaussian": "softmax",
    "dot_product": "dot",
    "concatenation": "concat",
}
_DEFAULT_POOL = {3: (2,), 4: (2, 2), 5: (1, 2, 2)}
OFFICIAL_BN_EPSILON = 1.0000001e-5


def _as_tuple(value, length: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * length
    value = tuple(int(v) for v in value)
    if len(value) != length:
        raise ValueError(
            f"`{name}` must be an int or a tuple of {length} ints for this input rank. "
            f"Received: {name}={value}"
        )
    return value


@keras.saving.register_keras_serializable(package="nonlocal_tf")
class NonLocalBlock(keras.layers.Layer):
    """Non-local block: ``z_i = x_i + W_z (1/C(x)) sum_j f(x_i, x_j) g(x_j)``.

    Follows the official Caffe2 dataflow (facebookresearch/video-nonlocal-net,
    ``nonlocal_helper.py``) by default: theta on ``x``; a max-pool on ``x``
    before the phi and g 1x1 projections; the affinity scaled by
    ``inner_channels**-0.5`` and a softmax over the (pooled) keys; an output 1x1
    projection and a BatchNormalization whose gamma starts at zero, so the block
    is the identity at initialisation; no ReLU after the residual sum.

    Channels-last inputs of rank 3 ``(B, L, C)``, 4 ``(B, H, W, C)`` or 5
    ``(B, T, H, W, C)``; any of L/T/H/W may be ``None``. The 1x1(x1)
    projections are `Dense` layers on the channel axis (kernel ``(C_in, C_out)``).

    Args:
        instantiation: the pairwise function: ``"embedded_gaussian"`` (default,
            softmax of theta.phi), ``"gaussian"`` (softmax of x.x, no theta/phi),
            ``"dot_product"`` (theta.phi / N) or ``"concatenation"``
            (relu(w^T [theta, phi]) / N). N counts the (subsampled) keys.
        inner_channels: width of theta/phi/g; default ``C // 2``.
        use_scale: multiply the embedded-Gaussian affinity by
            ``inner_channels**-0.5`` before the softmax (official; mmaction2's
            I3D-NL configs turn it off). The other instantiations are never scaled.
        pool_size: max-pool subsampling of keys and values, an int or a tuple
            with one entry per non-batch, non-channel axis. Default ``(1, 2, 2)``
            on video, ``(2, 2)`` on images, ``2`` on sequences, and no pooling
            for ``pairwise="time"``. ``1`` turns subsampling off.
        pool_position: ``"before"`` pools ``x`` before the phi/g projections
            (official, PySlowFast); ``"after"`` pools their outputs (mmcv /
            mmaction2). The two are not equivalent.
        pairwise: ``"spacetime"`` (all positions), ``"space"`` (within each
            frame) or ``"time"`` (across frames at each location); rank 5 only
            for the latter two.
        temporal_group_size: if set, the block runs separately on groups of
            this many consecutive frames (the official frozen-BN models use 4
            in res3). Requires ``pairwise="spacetime"`` and rank 5.
        use_bias: biases on theta, phi and g (official: True).
        output_use_bias: bias on the output projection (official: True;
            mmcv has none when it has a BN).
        use_bn: BatchNormalization after the output projection (official BN
            models); False for the frozen-BN ("affine") models.
        bn_epsilon, bn_momentum: of that BatchNormalization (official
            1.0000001e-5 and 0.9, Keras convention).
        zero_init_output: initialise the output projection to zero; defaults
            to ``not use_bn`` so the block always starts as the identity.
        kernel_initializer: of the projections; official normal(std=0.01).
        bias_initializer: of the projections; zeros.
        implementation: ``"auto"``, ``"naive"`` (materialises the N x N'
            matrix), ``"chunked"`` (exact, over query blocks, rematerialised),
            ``"fused"`` (`keras.ops.dot_product_attention`; embedded Gaussian)
            or ``"reassociated"`` (dot product as theta (phi^T g) / N').
            ``"auto"`` picks reassociated for dot product, fused where the
            backend has a flash kernel for the shapes and dtype, chunked when
            there are more than ``chunk_size`` queries, naive otherwise.
        chunk_size: query block size of the chunked path.

    Call arguments:
        inputs: the feature map.
        training: whether the BatchNormalization uses batch statistics.

    Returns:
        A tensor of the input's shape.

    Example:
    >>> x = keras.random.normal((2, 4, 14, 14, 64))
    >>> NonLocalBlock()(x).shape
    (2, 4, 14, 14, 64)
    """

    def __init__(
        self,
        instantiation: str = "embedded_gaussian",
        inner_channels: int | None = None,
        use_scale: bool = True,
        pool_size: int | Sequence[int] | None = None,
        pool_position: str = "before",
        pairwise: str = "spacetime",
        temporal_group_size: int | None = None,
        use_bias: bool = True,
        output_use_bias: bool = True,
        use_bn: bool = True,
        bn_epsilon: float = OFFICIAL_BN_EPSILON,
        bn_momentum: float = 0.9,
        zero_init_output: bool | None = None,
        kernel_initializer=None,
        bias_initializer="zeros",
        implementation: str = "auto",
        chunk_size: int = 1024,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_choice("instantiation", instantiation, INSTANTIATIONS)
        _check_choice("pool_position", pool_position, POOL_POSITIONS)
        _check_choice("pairwise", pairwise, PAIRWISE_EXTENTS)
        _check_choice("implementation", implementation, IMPLEMENTATIONS)
        if inner_channels is not None and (
            not isinstance(inner_channels, int) or inner_channels < 1
        ):
            raise ValueError(
                f"`inner_channels` must be a positive int or None. Received: inner_channels={inner_channels}"
            )
        if temporal_group_size is not None:
            if not isinstance(temporal_group_size, int) or temporal_group_size < 1:
                raise ValueError(
                    "`temporal_group_size` must be a positive int or None. "
                    f"Received: temporal_group_size={temporal_group_size}"
                )
            if pairwise != "spacetime":
                raise ValueError(
                    "`temporal_group_size` only applies to pairwise='spacetime'. "
                    f"Received: pairwise={pairwise}"
                )
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(
                f"`chunk_size` must be a positive int. Received: chunk_size={chunk_size}"
            )
        if implementation == "reassociated" and instantiation != "dot_product":
            raise ValueError(
                "implementation='reassociated' is exact only for instantiation='dot_product'. "
                f"Received: instantiation={instantiation}"
            )
        if implementation == "fused" and _KIND[instantiation] != "softmax":
            raise ValueError(
                "implementation='fused' needs a softmax instantiation ('embedded_gaussian' or "
                f"'gaussian'). Received: instantiation={instantiation}"
            )
        self.instantiation = instantiation
        self.inner_channels = inner_channels
        self.use_scale = bool(use_scale)
        self.pool_size = (
            pool_size if pool_size is None or isinstance(pool_size, int) else tuple(pool_size)
        )
        self.pool_position = pool_position
        self.pairwise = pairwise
        self.temporal_group_size = temporal_group_size
        self.use_bias = bool(use_bias)
        self.output_use_bias = bool(output_use_bias)
        self.use_bn = bool(use_bn)
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)
        self.zero_init_output = (
            (not self.use_bn) if zero_init_output is None else bool(zero_init_output)
        )
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.01)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.implementation = implementation
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        rank = len(input_shape)
        if rank not in (3, 4, 5):
            raise ValueError(
                "NonLocalBlock expects inputs of rank 3 (B, L, C), 4 (B, H, W, C) or 5 "
                f"(B, T, H, W, C). Received: input_shape={tuple(input_shape)}"
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"The channel axis of the input must be known. Received: input_shape={tuple(input_shape)}"
            )
        if self.pairwise != "spacetime" and rank != 5:
            raise ValueError(
                f"pairwise='{self.pairwise}' needs video inputs of rank 5. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if self.temporal_group_size is not None and rank != 5:
            raise ValueError(
                "`temporal_group_size` needs video inputs of rank 5. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self._rank = rank
        self._pool = self._resolve_pool(rank)
        self._check_group_shape(input_shape)
        self._channels = int(channels)
        self._inner = self.inner_channels or max(self._channels // 2, 1)

        def dense(units, name, use_bias, kernel_initializer=None):
            return keras.layers.Dense(
                units,
                use_bias=use_bias,
                kernel_initializer=kernel_initializer or self.kernel_initializer,
                bias_initializer=self.bias_initializer,
                dtype=self.dtype_policy,
                name=name,
            )

        feature_shape = (*input_shape[:-1], self._channels)
        inner_shape = (*input_shape[:-1], self._inner)
        if self.instantiation != "gaussian":
            self.theta = dense(self._inner, "theta", self.use_bias)
            self.phi = dense(self._inner, "phi", self.use_bias)
            self.theta.build(feature_shape)
            self.phi.build(feature_shape)
        self.g = dense(self._inner, "g", self.use_bias)
        self.g.build(feature_shape)
        if self.instantiation == "concatenation":
            self.concat_project = dense(1, "concat_project", use_bias=False)
            self.concat_project.build((None, 2 * self._inner))
        out_init = "zeros" if self.zero_init_output else None
        self.out = dense(self._channels, "out", self.output_use_bias, out_init)
        self.out.build(inner_shape)
        if self.use_bn:
            self.bn = BatchNormalization(
                axis=-1,
                epsilon=self.bn_epsilon,
                momentum=self.bn_momentum,
                gamma_initializer="zeros",
                dtype=self.dtype_policy,
                name="bn",
            )
            self.bn.build(feature_shape)
        self.built = True

    def _resolve_pool(self, rank: int) -> tuple[int, ...]:
        spatial_rank = rank - 2
        if self.pool_size is None:
            pool = (1, 1, 1) if self.pairwise == "time" else _DEFAULT_POOL[rank]
        else:
            pool = _as_tuple(self.pool_size, spatial_rank, "pool_size")
        if any(p < 1 for p in pool):
            raise ValueError(
                f"`pool_size` entries must be >= 1. Received: pool_size={self.pool_size}"
            )
        if self.pairwise == "space" and pool[0] != 1:
            raise ValueError(
                "pairwise='space' compares positions within one frame, so the temporal pool "
                f"must be 1. Received: pool_size={self.pool_size}"
            )
        if self.pairwise == "time" and pool[1:] != (1, 1):
            raise ValueError(
                "pairwise='time' compares frames at one location, so the spatial pool must be 1. "
                f"Received: pool_size={self.pool_size}"
            )
        if self.temporal_group_size is not None and self.temporal_group_size % pool[0]:
            raise ValueError(
                "`temporal_group_size` must be a multiple of the temporal pool. Received: "
                f"temporal_group_size={self.temporal_group_size}, pool_size={self.pool_size}"
            )
        return pool

    def _check_group_shape(self, input_shape):
        frames = input_shape[1] if self._rank == 5 else None
        if self.temporal_group_size is not None and frames is not None:
            if frames % self.temporal_group_size:
                raise ValueError(
                    "The number of frames must be a multiple of `temporal_group_size`. Received: "
                    f"input_shape={tuple(input_shape)}, temporal_group_size={self.temporal_group_size}"
                )

    # ------------------------------------------------------------------- call
    def call(self, inputs, training=None):
        x = self._check_input(inputs)
        q, k, v = self._embed(x)
        kind = _KIND[self.instantiation]
        scale = self._scale()
        qf, kf, vf = self._group(q, False), self._group(k, True), self._group(v, True)
        y = self._pairwise(kind, qf, kf, vf, scale)
        y = self._ungroup(y, x)
        z = self.out(y)
        if self.use_bn:
            z = self.bn(z, training=training)
        return x + ops.cast(z, x.dtype)

    def _check_input(self, x):
        """``x``, refused when not float, when a grid axis is shorter than its
        key pooling (a softmax over no key: NaN) or when the frames do not
        split into temporal groups; in the graph where sizes are symbolic."""
        checks.require_float(x, self.name)
        grid = ops.shape(x)[1:-1]
        conditions = []
        for axis, (size, pool) in enumerate(zip(grid, self._pool, strict=True)):
            given = f" ({size})" if checks.is_static(size) else ""
            conditions.append(
                checks.at_least(
                    size,
                    max(pool, 1),
                    f"{self.name}: input axis {axis + 1}{given} is shorter than the key "
                    f"pooling {self._pool}: there is no key to attend to.",
                )
            )
        if self.temporal_group_size is not None:
            conditions.append(
                checks.multiple_of(
                    grid[0],
                    self.temporal_group_size,
                    f"{self.name}: the number of frames must be a multiple of "
                    f"temporal_group_size={self.temporal_group_size}.",
                )
            )
        return checks.guard(x, *conditions)

    def _embed(self, x):
        """Queries, keys and values on their (pooled) grids; concatenation
        queries/keys are the projected halves of ``w_f^T [theta_i, phi_j]``."""
        pool = self._pool if any(p > 1 for p in self._pool) else None

        def maxpool(t):
            return t if pool is None else video_ops.max_of_slices(t, pool, pool)  # floor, as Caffe2

        if self.instantiation == "gaussian":
            q, k = x, maxpool(x)
            v = self.g(maxpool(x)) if self.pool_position == "before" else maxpool(self.g(x))
            return q, k, v
        q = self.theta(x)
        if self.pool_position == "before":
            pooled = maxpool(x)
            k, v = self.phi(pooled), self.g(pooled)
        else:
            k, v = maxpool(self.phi(x)), maxpool(self.g(x))
        if self.instantiation == "concatenation":
            w = self.concat_project.kernel  # (2 * inner, 1)
            q = ops.matmul(q, ops.cast(w[: self._inner], q.dtype))  # (..., 1)
            k = ops.matmul(k, ops.cast(w[self._inner :], k.dtype))  # (..., 1)
        return q, k, v

    def _scale(self) -> float:
        if self.instantiation == "embedded_gaussian" and self.use_scale:
            return float(self._inner) ** -0.5
        return 1.0

    def _group(self, t, pooled: bool):
        """(B, *grid, c) -> (B', N, c), folding the pairwise extent into the batch.

        ``pooled`` says whether ``t`` lies on the (temporally) subsampled key grid.
        """
        shape = ops.shape(t)
        channels = t.shape[-1]
        if self._rank != 5 or (self.pairwise == "spacetime" and self.temporal_group_size is None):
            # A static N where the grid is static (with a dynamic batch, -1 would
            # leave it unknown in TF graphs, and small blocks would take the chunked path).
            grid = t.shape[1:-1]
            n = math.prod(grid) if all(d is not None for d in grid) else -1
            return ops.reshape(t, (shape[0], n, channels))  # (B, N, c)
        if self.pairwise == "space":
            return ops.reshape(t, (shape[0] * shape[1], -1, channels))  # (B*T, H*W, c)
        if self.pairwise == "time":
            t = ops.transpose(t, (0, 2, 3, 1, 4))  # (B, H, W, T, c)
            return ops.reshape(t, (shape[0] * shape[2] * shape[3], -1, channels))  # (B*H*W, T, c)
        frames_per_group = self.temporal_group_size // (self._pool[0] if pooled else 1)
        groups = shape[1] // frames_per_group
        return ops.reshape(t, (shape[0] * groups, -1, channels))  # (B*G, gs*H*W, c)

    def num_pairwise_groups(self, grid) -> int:
        """How many independent pairwise problems a static grid splits into
        (the batch folding of `_group`): frames for ``space``, locations for
        ``time``, temporal groups, else 1."""
        if len(grid) != 3:
            return 1
        t, h, w = grid
        if self.pairwise == "space":
            return t
        if self.pairwise == "time":
            return h * w
        return t // self.temporal_group_size if self.temporal_group_size else 1

    def _ungroup(self, y, x):
        """Inverse of `_group` for the query grid (that of ``x``)."""
        shape = ops.shape(x)
        depth = y.shape[-1]
        if self._rank == 5 and self.pairwise == "time":
            y = ops.reshape(y, (shape[0], shape[2], shape[3], shape[1], depth))
            return ops.transpose(y, (0, 3, 1, 2, 4))
        return ops.reshape(y, (*shape[:-1], depth))

    def _pairwise(self, kind, q, k, v, scale):
        impl = self._resolve_implementation(q, k, v)
        if impl == "naive":
            return pairwise.naive(kind, q, k, v, scale)
        if impl == "reassociated":
            return pairwise.reassociated_dot(q, k, v)
        if impl == "fused":
            return pairwise.fused_softmax(q, k, v, scale)
        return pairwise.chunked(kind, q, k, v, scale, self.chunk_size)

    def _resolve_implementation(self, q, k, v) -> str:
        if self.implementation != "auto":
            return self.implementation
        head_size = max(q.shape[-1], v.shape[-1])
        return runtime.attention_implementation(
            self.instantiation, q.shape[1], head_size, q.dtype, self.chunk_size
        )

    # --------------------------------------------------------- visualisation
    def attention_weights(self, inputs, query_positions=None):
        """The normalised pairwise weights ``f(x_i, x_j) / C(x)`` of this block.

        Args:
            inputs: a concrete input of the block (rank 3, 4 or 5).
            query_positions: ``None`` for every query position (small inputs
                only: the result is ``Nq x Nk`` per example), or a list of grid
                coordinates: ``(t, y, x)`` on video, ``(y, x)`` on images,
                ``(l,)`` on sequences.

        Returns:
            A float32 tensor ``(B, Q, *key_grid)``: for each query, its weight on
            every key position of the (pooled) key grid, zero outside the keys
            it is compared with (another frame for ``pairwise="space"``, another
            temporal group, ...). Q is the number of queries asked for, or all
            of them in row-major order.
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        q, k, _ = self._embed(inputs)
        qgrid, kgrid = tuple(q.shape[1:-1]), tuple(k.shape[1:-1])
        batch = q.shape[0]
        q = ops.reshape(q, (batch, -1, q.shape[-1]))
        kflat = ops.reshape(k, (batch, -1, k.shape[-1]))
        if query_positions is None:
            query_positions = [tuple(int(c) for c in _unravel(i, qgrid)) for i in range(q.shape[1])]
        query_positions = [tuple(int(c) for c in p) for p in query_positions]
        for p in query_positions:
            if len(p) != len(qgrid) or any(not 0 <= c < n for c, n in zip(p, qgrid, strict=False)):
                raise ValueError(
                    f"Each query position must index the grid {qgrid}. Received: query_positions={query_positions}"
                )
        flat_idx = [_ravel(p, qgrid) for p in query_positions]
        qsel = ops.take(q, flat_idx, axis=1)  # (B, Q, d)
        mask = ops.convert_to_tensor(
            [[self._attends(p, kp) for kp in _grid_positions(kgrid)] for p in query_positions],
            dtype="float32",
        )  # (Q, Nk)
        kind = _KIND[self.instantiation]
        if kind == "softmax":
            logits = ops.einsum(
                "bqd,bkd->bqk", ops.cast(qsel, "float32"), ops.cast(kflat, "float32")
            )
            logits = logits * self._scale() + (mask[None] - 1.0) * 1e9
            w = ops.softmax(logits, axis=-1) * mask[None]
        else:
            raw = pairwise.pairwise_weights(kind, qsel, kflat) * ops.cast(
                ops.shape(kflat)[1], "float32"
            )
            w = raw * mask[None] / ops.sum(mask, axis=-1)[None, :, None]
        return ops.reshape(w, (batch, len(query_positions), *kgrid))

    def _attends(self, query, key) -> float:
        if self._rank != 5:
            return 1.0
        pt = self._pool[0]
        if self.pairwise == "space":
            return float(query[0] == key[0])
        if self.pairwise == "time":
            return float(query[1:] == key[1:])
        if self.temporal_group_size is not None:
            return float(
                query[0] // self.temporal_group_size == key[0] * pt // self.temporal_group_size
            )
        return 1.0

    # --------------------------------------------------------- serialisation
    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "instantiation": self.instantiation,
                "inner_channels": self.inner_channels,
                "use_scale": self.use_scale,
                "pool_size": self.pool_size,
                "pool_position": self.pool_position,
                "pairwise": self.pairwise,
                "temporal_group_size": self.temporal_group_size,
                "use_bias": self.use_bias,
                "output_use_bias": self.output_use_bias,
                "use_bn": self.use_bn,
                "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum,
                "zero_init_output": self.zero_init_output,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "implementation": self.implementation,
                "chunk_size": self.chunk_size,
            }
        )
        return config


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")


def _unravel(index: int, grid: tuple[int, ...]) -> tuple[int, ...]:
    coords = []
    for n in reversed(grid):
        coords.append(index % n)
        index //= n
    return tuple(reversed(coords))


def _ravel(position: tuple[int, ...], grid: tuple[int, ...]) -> int:
    index = 0
    for c, n in zip(position, grid, strict=True):
        index = index * n + c
    return index


def _grid_positions(grid: tuple[int, ...]):
    total = 1
    for n in grid:
        total *= n
    return [_unravel(i, grid) for i in range(total)]
