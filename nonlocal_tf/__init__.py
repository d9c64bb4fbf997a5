"""nonlocal-tf: Non-local Neural Networks (C2D / I3D / NL-I3D) for Keras 3."""

from nonlocal_tf.layers import NonLocalBlock

__version__ = "0.1.0"

__all__ = ["NonLocalBlock", "__version__"]
