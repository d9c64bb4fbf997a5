"""Checkpoint formats, conversion and downloads: reading Caffe2 / PyTorch
checkpoints safely, official-named blobs to and from Keras models, ImageNet
inflation, checksummed downloads. No model is built here; the catalogue of
released weights and its load flow are `nonlocal_tf.pretrained`."""

from nonlocal_tf.weights.convert import (
    ConversionError,
    ConversionReport,
    assign_blobs,
    clean_blobs,
    inflate_from_blobs,
    inflate_kernel,
    inflate_weights,
    model_to_blobs,
)
from nonlocal_tf.weights.download import (
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    cache_dir,
    fetch,
    fetch_verified,
    safe_extract,
    sha256_of,
    verify_file,
)
from nonlocal_tf.weights.safe_pickle import (
    CheckpointError,
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_checkpoint,
)
from nonlocal_tf.weights.sources import load_weights, read_blobs

__all__ = [
    "CheckpointError",
    "CheckpointFormatError",
    "ChecksumError",
    "ConversionError",
    "ConversionReport",
    "DownloadError",
    "UnsafeArchiveError",
    "UnsafeCheckpointError",
    "assign_blobs",
    "cache_dir",
    "clean_blobs",
    "fetch",
    "fetch_verified",
    "inflate_from_blobs",
    "inflate_kernel",
    "inflate_weights",
    "load_checkpoint",
    "load_weights",
    "model_to_blobs",
    "read_blobs",
    "safe_extract",
    "sha256_of",
    "verify_file",
]
