"""Keras layers of nonlocal-tf."""

from nonlocal_tf.layers.affine import FrozenAffine
from nonlocal_tf.layers.nonlocal_block import NonLocalBlock

__all__ = ["FrozenAffine", "NonLocalBlock"]
