"""nonlocal-tf: Non-local Neural Networks (C2D / I3D / NL-I3D) for Keras 3.

Floors, each importing only those below it: `layers` -> `models` -> `weights`
(formats, conversion, downloads) -> `pretrained` (catalogue and load flow);
`data`, `training`, `export` and `evaluation` beside them; `zoo` (the
commands) on top. Importing the package imports `pretrained`, which gives the
builders' ``weights=`` its loader.
"""

from nonlocal_tf import pretrained
from nonlocal_tf.layers import NonLocalBlock

__version__ = "0.1.0"

__all__ = ["NonLocalBlock", "__version__", "pretrained"]
