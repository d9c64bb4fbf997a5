"""Class names shipped with the package (`nonlocal_tf.pretrained.labels`):
each list complete, unique and in its source's label order (spot checks
against the sources' files), set on every Kinetics-400 catalogue entry, and
declared as package data."""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
import os

import pytest

from nonlocal_tf import pretrained
from nonlocal_tf.pretrained import catalog, labels

pytestmark = pytest.mark.all_backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNTS = {
    "kinetics400_caffe2": 400,
    "kinetics400_pyslowfast": 400,
    "kinetics400_mmaction2": 400,
    "charades": 157,
}

# (index, name) read in each source; an order off by one anywhere near them fails.
SPOT_CHECKS = {
    # facebookresearch/video-nonlocal-net@c253ed5 process_data/kinetics/classids.json
    # ({name: id}; names with spaces are CSV-quoted keys there).
    "kinetics400_caffe2": [
        (0, "abseiling"),
        (196, "massaging person's head"),
        (209, "passing American football (not in game)"),
        (308, "skiing (not slalom or crosscountry)"),
        (399, "zumba"),
    ],
    # PySlowFast's demo kinetics_classnames.json (VISUALIZATION_TOOLS.md), as copied in
    # salemalmarri/pytorch-video-simple-example@fb32e60 kinetics_classnames.json.
    "kinetics400_pyslowfast": [
        (115, "eating ice cream"),
        (290, "sharpening knives"),
        (374, "using remote controller (not gaming)"),
        (395, "wrestling"),
    ],
    # open-mmlab/mmaction2@4d6c934 tools/data/kinetics/label_map_k400.txt, lines 1, 200, 260, 400.
    "kinetics400_mmaction2": [
        (0, "abseiling"),
        (199, "motorcycling"),
        (259, "punching person (boxing)"),
        (399, "zumba"),
    ],
    # Charades_v1_classes.txt (piergiaj/tgm-icml19@f646673 charades/Charades_v1_classes.txt):
    # c000, c002, c078, c146, c156.
    "charades": [
        (0, "Holding some clothes"),
        (2, "Taking some clothes from somewhere"),
        (78, "Snuggling with a pillow"),
        (146, "Someone is awakening somewhere"),
        (156, "Someone is eating something"),
    ],
}

# Which label set each catalogue helper's entries use, by where their weights come from
# (PySlowFast's are Caffe2 pickles too: the format does not tell them apart).
KINETICS_SETS = {
    catalog.OFFICIAL_URL: "kinetics400_caffe2",  # _official
    catalog.PYSLOWFAST_URL: "kinetics400_pyslowfast",  # _pyslowfast
    catalog.MMACTION2_URL: "kinetics400_mmaction2",  # _mmaction2
}


def source_set(entry) -> str:
    (label_set,) = [s for url, s in KINETICS_SETS.items() if entry.url.startswith(url)]
    return label_set


def test_every_label_set_is_checked_here():
    assert set(labels.LABEL_SETS) == set(COUNTS) == set(SPOT_CHECKS)


@pytest.mark.parametrize("label_set", sorted(COUNTS))
def test_counts_and_unique_names(label_set):
    names = labels.class_names(label_set)
    assert isinstance(names, tuple) and len(names) == COUNTS[label_set]
    assert len(set(names)) == len(names)
    # Whole, clean lines: no comment leaked in, no padding, no CSV quotes left on.
    assert all(n and n == n.strip() and not n.startswith("#") and '"' not in n for n in names)


@pytest.mark.parametrize("label_set", sorted(SPOT_CHECKS))
def test_order_matches_the_source(label_set):
    names = labels.class_names(label_set)
    for index, name in SPOT_CHECKS[label_set]:
        assert names[index] == name, (label_set, index)


def test_the_three_kinetics_orders_agree():
    # The sources number the classes alike: the names sorted by code point.
    caffe2 = labels.class_names("kinetics400_caffe2")
    assert caffe2 == labels.class_names("kinetics400_pyslowfast")
    assert caffe2 == labels.class_names("kinetics400_mmaction2")
    assert list(caffe2) == sorted(caffe2)


def test_every_file_cites_its_source():
    for label_set in labels.LABEL_SETS.values():
        with open(labels.LABELS_DIR / label_set.file, encoding="utf-8") as f:
            first = f.readline()
        assert first.startswith("#")
        assert "commit" in (labels.LABELS_DIR / label_set.file).read_text(encoding="utf-8")


def test_kinetics_entries_have_their_sources_names():
    kinetics = [e for e in pretrained.CATALOG.values() if e.dataset == "Kinetics-400"]
    assert len(kinetics) == 15 + 3 + 4
    for entry in kinetics:
        label_set = source_set(entry)
        assert entry.label_set == label_set, entry.name
        assert entry.class_names == labels.class_names(label_set), entry.name
        assert len(entry.class_names) == entry.num_classes == 400
    counts = [sum(source_set(e) == s for e in kinetics) for s in KINETICS_SETS.values()]
    assert counts == [15, 3, 4]


def test_other_entries_keep_theirs():
    for entry in pretrained.CATALOG.values():
        if entry.dataset == "ImageNet-1k":
            assert entry.class_names is None and entry.label_set is None, entry.name
    assert pretrained.DEMO.class_names == ("different", "reappears")


def test_names_must_fit_the_classes():
    entry = pretrained.CATALOG["i3d_r50_8x8.k400"]
    with pytest.raises(ValueError, match="400 class names for 10 classes"):
        dataclasses.replace(entry, num_classes=10)
    with pytest.raises(ValueError, match="157 class names for 400 classes"):
        dataclasses.replace(entry, class_names=None, label_set="charades")
    given = tuple(f"c{i}" for i in range(400))  # names given win over the label set
    assert dataclasses.replace(entry, class_names=given).class_names == given


def test_unknown_label_set():
    with pytest.raises(ValueError, match="Unknown label set") as refused:
        labels.class_names("kinetics700")
    assert "kinetics400_caffe2" in str(refused.value) and "'kinetics700'" in str(refused.value)
    with pytest.raises(ValueError, match="Unknown label set"):
        dataclasses.replace(catalog.CATALOG["i3d_r50_8x8.k400"], class_names=None, label_set="x")


def test_reexported():
    assert pretrained.class_names is labels.class_names
    assert pretrained.LABEL_SETS is labels.LABEL_SETS


def test_files_are_package_data():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    data = config["options.package_data"]
    assert "MODEL_ZOO.md" in data["zoo"]  # the existing line kept
    patterns = [p.strip() for p in data["nonlocal_tf"].split(",")]
    package = os.path.join(ROOT, "nonlocal_tf")
    for label_set in labels.LABEL_SETS.values():
        path = os.path.relpath(labels.LABELS_DIR / label_set.file, package)
        assert any(fnmatch.fnmatch(path, p) for p in patterns), path
