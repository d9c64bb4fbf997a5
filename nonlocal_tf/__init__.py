"""nonlocal-tf: Non-local Neural Networks (C2D / I3D / NL-I3D) for Keras 3.

    import nonlocal_tf

    model = nonlocal_tf.create_model("i3d_nl5_r50_8x8.k400")  # any source, by any name
    info = nonlocal_tf.model_info("i3d_nl5_r50_8x8.k400")  # clips, recipe, class names

Floors, each importing only those below it: `layers` -> `models` -> `weights`
(formats, conversion, downloads) -> `pretrained` (catalogue, load flow, the
front door); `data`, `training`, `export` and `evaluation` beside them; `zoo`
(the commands) on top. Importing the package imports `pretrained`, which gives
the builders' ``weights=`` its loader.
"""

from nonlocal_tf import pretrained
from nonlocal_tf.layers import NonLocalBlock
from nonlocal_tf.pretrained import ModelInfo, create_model, model_info

__version__ = "0.2.0"

__all__ = ["ModelInfo", "NonLocalBlock", "__version__", "create_model", "model_info", "pretrained"]
