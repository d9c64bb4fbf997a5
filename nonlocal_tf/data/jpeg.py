"""The JPEG codec of the frame shards, without TensorFlow: simplejpeg
(libjpeg-turbo, built into its wheel).

Chosen by `bench/jpeg_codecs.py` (one core of an AMD EPYC, 150 frames of a
generated 340x256 video, quality 90, 4:2:0; ms per frame, best of 15;
``bench/RESULTS.md``):

    encode: simplejpeg 0.198, PyTurboJPEG 0.213, TensorFlow's op 0.222, Pillow 0.270
    decode: simplejpeg (fast DCT) 0.208, PyTurboJPEG (fast DCT) 0.220,
            TensorFlow's op (INTEGER_FAST) 0.257, Pillow 0.316

simplejpeg is the fastest at both and, with its fast DCT, decodes
to TensorFlow's ``decode_jpeg(dct_method="INTEGER_FAST")`` pixels exactly
(what the tf.data TFRecord path decodes; Pillow cannot choose its DCT and
differs by up to 7 levels). PyTurboJPEG needs the system's libturbojpeg
(and its 2.x a libjpeg-turbo 3), which pip cannot install.
"""

from __future__ import annotations

import numpy as np
import simplejpeg


def encode(frame: np.ndarray, quality: int = 90) -> bytes:
    """uint8 RGB ``(H, W, 3)`` -> baseline JPEG, 4:2:0 chroma (TensorFlow's
    ``encode_jpeg`` default), accurate DCT."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality, "RGB", "420", fastdct=False)


def decode(jpeg: bytes) -> np.ndarray:
    """JPEG -> uint8 RGB ``(H, W, 3)``: libjpeg-turbo's fast integer DCT and
    smooth chroma upsampling, as TensorFlow's ``INTEGER_FAST`` decode. A
    damaged image raises (``ValueError``), even where libjpeg could recover."""
    return simplejpeg.decode_jpeg(jpeg, "RGB", fastdct=True, fastupsample=False, strict=True)
