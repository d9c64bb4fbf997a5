"""TFRecord shards of ``tf.train.SequenceExample``, one JPEG per frame, with
TensorFlow's ops (the tf.data path). The keys and the same records without
TensorFlow: `sequence_example`; shards written and indexed without it: `shards`.
"""

from __future__ import annotations

import os

import tensorflow as tf

from nonlocal_tf.data.sequence_example import (
    IMAGE_KEY,
    LABEL_INDEX_KEY,
    LABEL_TEXT_KEY,
    MEDIA_ID_KEY,
)


def encode_example(
    jpeg_frames: list[bytes], labels: list[int], label_texts: list[str], media_id: str
) -> bytes:
    """Serialises one video with TensorFlow's protobuf classes (the reference
    `sequence_example.encode` is tested against)."""
    context = tf.train.Features(
        feature={
            LABEL_INDEX_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=list(labels))),
            LABEL_TEXT_KEY: tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[os.fsencode(t) for t in label_texts])
            ),
            MEDIA_ID_KEY: tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[os.fsencode(media_id)])  # names as on disk
            ),
        }
    )
    frames = tf.train.FeatureList(
        feature=[
            tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])) for jpeg in jpeg_frames
        ]
    )
    example = tf.train.SequenceExample(
        context=context, feature_lists=tf.train.FeatureLists(feature_list={IMAGE_KEY: frames})
    )
    return example.SerializeToString()


def parse_example(serialized):
    """-> dict with ``frames`` (JPEG strings, (N,)), ``labels`` (int64, (k,)),
    ``media_id`` (string)."""
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64),
            LABEL_TEXT_KEY: tf.io.VarLenFeature(tf.string),
            MEDIA_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        },
        sequence_features={IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string)},
    )
    return {
        "frames": sequence[IMAGE_KEY],
        "labels": tf.sparse.to_dense(context[LABEL_INDEX_KEY]),
        "media_id": context[MEDIA_ID_KEY],
    }


def decode_jpegs(jpegs, count: int | None = None):
    """(N,) JPEG strings -> uint8 (N, H, W, 3).

    With a static ``count`` the decodes are unrolled (no loop overhead, and
    tf.data can run them in parallel); ``INTEGER_FAST`` is libjpeg's fast DCT.
    """
    if count is not None:
        frames = [
            tf.io.decode_jpeg(jpegs[i], channels=3, dct_method="INTEGER_FAST") for i in range(count)
        ]
        return tf.stack(frames)
    return tf.map_fn(
        lambda j: tf.io.decode_jpeg(j, channels=3, dct_method="INTEGER_FAST"),
        jpegs,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )
