"""Class names of the datasets the released weights were trained on, in each
source's label order (index i of a model's output is name i).

The names ship with the package as plain text files under ``labels/``: one
name per line, after ``#`` lines that cite where the order comes from. The
three Kinetics-400 sources (video-nonlocal-net's Caffe2 lists, PySlowFast,
mmaction2) number the classes the same way, so their label sets share one
file; each keeps its own name so that an entry says whose order it follows.
Standard library only: the catalogue reads it while it is being built.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

LABELS_DIR = pathlib.Path(__file__).with_name("labels")


class LabelSet(NamedTuple):
    file: str  # under LABELS_DIR
    description: str  # what it is and where its order comes from


_KINETICS = "kinetics400.txt"

LABEL_SETS: Mapping[str, LabelSet] = MappingProxyType(
    {
        "kinetics400_caffe2": LabelSet(
            _KINETICS,
            "Kinetics-400, facebookresearch/video-nonlocal-net process_data/kinetics/classids.json",
        ),
        "kinetics400_pyslowfast": LabelSet(
            _KINETICS,
            "Kinetics-400, facebookresearch/SlowFast (the Non-local Network's label ids; "
            "its demo's kinetics_classnames.json)",
        ),
        "kinetics400_mmaction2": LabelSet(
            _KINETICS, "Kinetics-400, open-mmlab/mmaction2 tools/data/kinetics/label_map_k400.txt"
        ),
        "charades": LabelSet(
            "charades.txt", "Charades v1, Charades_v1_classes.txt (c000 ... c156, in id order)"
        ),
    }
)


def class_names(label_set: str) -> tuple[str, ...]:
    """The class names of ``label_set`` (a key of `LABEL_SETS`) in label order."""
    if label_set not in LABEL_SETS:
        raise ValueError(
            f"Unknown label set. Known label sets: {', '.join(sorted(LABEL_SETS))}. "
            f"Received: label_set={label_set!r}"
        )
    return _read(LABEL_SETS[label_set].file)


@functools.cache
def _read(file: str) -> tuple[str, ...]:
    # Cached by file: the Kinetics sets share one, and every catalogue entry asks.
    text = (LABELS_DIR / file).read_text(encoding="utf-8")
    # Names are whole lines: some hold spaces, quotes and parentheses, none starts with "#".
    return tuple(line for line in text.splitlines() if line and not line.startswith("#"))
