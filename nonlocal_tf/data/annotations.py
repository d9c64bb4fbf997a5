"""Annotation files -> lists of (video path, labels).

- Kinetics CSV: ``label,youtube_id,time_start,time_end,split[,is_cc]``; files
  named ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (the usual downloader
  layout) or ``<youtube_id>.<ext>``, in a folder or its class subfolders.
- Charades CSV: ``id,...,actions,length`` with ``actions`` like
  ``c092 11.90 21.20;c147 0.00 12.60`` (157 classes, multi-label); files
  ``<id>.<ext>``.
- A folder per class (``root/<class>/<video>``), in the manner of
  `keras.utils.image_dataset_from_directory`.

Rows whose video is missing, or whose label is not in the class list, are
skipped and recorded in the `SkipLog`.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from nonlocal_tf.data.skips import SkipLog

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".ts")
CHARADES_CLASSES = 157


@dataclasses.dataclass
class VideoList:
    """Videos with labels: ``labels[i]`` is a list of class indices (one for
    single-label datasets)."""

    paths: list[str]
    labels: list[list[int]]
    class_names: list[str]
    multi_label: bool = False
    video_ids: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def label_array(self) -> np.ndarray:
        """``(N,)`` int32 class indices, or ``(N, classes)`` float32 multi-hot
        vectors for multi-label lists: what the pipelines yield as labels."""
        if self.multi_label:
            hot = np.zeros((len(self), len(self.class_names)), np.float32)
            for i, classes in enumerate(self.labels):
                hot[i, classes] = 1.0
            return hot
        return np.array([classes[0] for classes in self.labels], np.int32)

    def check_split(self, readers: int) -> None:
        """A `ValueError` unless there are videos for each of ``readers``."""
        if len(self) == 0:
            raise ValueError("No videos to read: the list is empty.")
        if readers > len(self):
            raise ValueError(f"{len(self)} videos cannot be split between {readers} readers.")


def index_videos(video_dir: str) -> dict[str, str]:
    """Every video under ``video_dir`` by file stem (first found wins)."""
    found: dict[str, str] = {}
    for root, _, files in os.walk(video_dir):
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, os.path.join(root, name))
    return found


def read_kinetics(
    csv_path: str,
    video_dir: str,
    class_names: list[str] | None = None,
    split: str | None = None,
    skips: SkipLog | None = None,
) -> VideoList:
    """A Kinetics annotation CSV; ``class_names`` default to the sorted labels of the file."""
    skips = skips if skips is not None else SkipLog("annotations")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    required = {"label", "youtube_id", "time_start", "time_end"}
    if rows and not required.issubset(rows[0]):
        raise ValueError(
            f"{csv_path}: a Kinetics CSV needs columns {sorted(required)}; has {list(rows[0])}."
        )
    if split is not None:
        rows = [r for r in rows if r.get("split", split) == split]
    names = class_names or sorted({r["label"] for r in rows})
    lookup = {name: i for i, name in enumerate(names)}
    videos = index_videos(video_dir)
    out = VideoList([], [], list(names))
    for row in rows:
        vid = row["youtube_id"]
        stem = f"{vid}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
        path = videos.get(stem) or videos.get(vid)
        if path is None:
            skips.add(os.path.join(video_dir, stem), "missing video")
            continue
        if row["label"] not in lookup:
            skips.add(path, f"label not in the class list ({row['label']!r})")
            continue
        out.paths.append(path)
        out.labels.append([lookup[row["label"]]])
        out.video_ids.append(stem)
    return out


def parse_charades_actions(actions: str) -> list[int]:
    """``"c092 11.90 21.20;c147 0.00 12.60"`` -> ``[92, 147]`` (sorted, unique)."""
    classes = set()
    for part in (actions or "").split(";"):
        part = part.strip()
        if not part:
            continue
        code = part.split()[0]
        if not (code.startswith("c") and code[1:].isdigit()):
            raise ValueError(f"Not a Charades action: {part!r}")
        classes.add(int(code[1:]))
    return sorted(classes)


def read_charades(csv_path: str, video_dir: str, skips: SkipLog | None = None) -> VideoList:
    """A Charades annotation CSV (multi-label, 157 classes ``c000``..``c156``)."""
    skips = skips if skips is not None else SkipLog("annotations")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"id", "actions"}.issubset(rows[0]):
        raise ValueError(
            f"{csv_path}: a Charades CSV needs columns 'id' and 'actions'; has {list(rows[0])}."
        )
    videos = index_videos(video_dir)
    out = VideoList([], [], [f"c{i:03d}" for i in range(CHARADES_CLASSES)], multi_label=True)
    for row in rows:
        path = videos.get(row["id"])
        if path is None:
            skips.add(os.path.join(video_dir, row["id"]), "missing video")
            continue
        try:
            labels = parse_charades_actions(row["actions"])
        except ValueError as exc:
            skips.add(path, f"bad actions field ({exc})")
            continue
        bad = [c for c in labels if c >= CHARADES_CLASSES]
        if bad:
            skips.add(path, f"label not in the class list ({bad})")
            continue
        out.paths.append(path)
        out.labels.append(labels)
        out.video_ids.append(row["id"])
    return out


def read_directory(
    directory: str, class_names: list[str] | None = None, skips: SkipLog | None = None
) -> VideoList:
    """``directory/<class>/<video>``; classes are the sorted subfolder names."""
    skips = skips if skips is not None else SkipLog("annotations")
    if not os.path.isdir(directory):
        raise ValueError(f"No such directory: {directory!r}")
    found = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    names = class_names or found
    lookup = {name: i for i, name in enumerate(names)}
    # Kinetics downloads name their folders with spaces or with underscores.
    lookup |= {name.replace(" ", "_"): i for i, name in enumerate(names) if " " in name}
    out = VideoList([], [], list(names))
    for folder in found:
        for root, _, files in os.walk(os.path.join(directory, folder)):
            for name in sorted(files):
                path = os.path.join(root, name)
                if os.path.splitext(name)[1].lower() not in VIDEO_EXTENSIONS:
                    skips.add(path, "not a video file extension")
                    continue
                if folder not in lookup:
                    skips.add(path, f"label not in the class list ({folder!r})")
                    continue
                out.paths.append(path)
                out.labels.append([lookup[folder]])
                out.video_ids.append(os.path.relpath(path, directory))
    if not out.paths:
        raise ValueError(f"No videos found under {directory!r} (extensions {VIDEO_EXTENSIONS}).")
    return out
