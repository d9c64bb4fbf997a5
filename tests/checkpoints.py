"""Checkpoints in each source format, built by the tests with the exact names and
shapes of the real files (random, well-scaled values)."""

from __future__ import annotations

import os
import re

import numpy as np

BLOB_LIST = os.path.join(os.path.dirname(__file__), "data", "official_blobs_i3d_nl_r50.txt")
BN_TORCH = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}


def official_shapes() -> dict[str, tuple]:
    """The 327 blobs of the official I3D-NL5 R50 (BN) checkpoint, from the spec's list."""
    shapes = {}
    with open(BLOB_LIST) as f:
        for line in f:
            m = re.match(r"^(\w+) \(([\d, ]+)\)$", line.strip())
            if m:
                shapes[m[1]] = tuple(int(d) for d in m[2].split(",") if d.strip())
    return shapes


def random_blobs(shapes: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    blobs = {}
    for name, shape in shapes.items():
        if name.endswith("_w") and len(shape) > 1:
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0, np.sqrt(1.0 / fan_in), shape)
        elif name.endswith("_bn_s"):
            value = (
                rng.uniform(0.3, 0.8, shape)
                if "branch2c" not in name
                else rng.uniform(0.1, 0.3, shape)
            )
        elif name.endswith("_bn_riv"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        blobs[name] = value.astype(np.float32)
    return blobs


def to_affine(blobs: dict) -> dict:
    """The frozen-BN ("affine") layout: BN folded into _s/_b, no _rm/_riv, no
    non-local BN (official modify_caffe2_ftvideo.py)."""
    out = {}
    for name, value in blobs.items():
        if name.startswith("nonlocal") and "_bn_" in name:
            continue
        if name.endswith(("_bn_rm", "_bn_riv")):
            continue
        if name.endswith("_bn_s"):
            p = name[:-2]
            out[name] = value / np.sqrt(blobs[p + "_riv"] + 1e-5)
        elif name.endswith("_bn_b"):
            p = name[:-2]
            scale = blobs[p + "_s"] / np.sqrt(blobs[p + "_riv"] + 1e-5)
            out[name] = value - blobs[p + "_rm"] * scale
        else:
            out[name] = value
    return out


def to_pyslowfast(blobs: dict) -> dict:
    """PySlowFast state_dict names (slowfast/models, single pathway)."""
    import torch

    sd = {}
    for name, value in blobs.items():
        if name == "conv1_w":
            key = "s1.pathway0_stem.conv.weight"
        elif m := re.match(r"res_conv1_bn_(\w+)$", name):
            key = f"s1.pathway0_stem.bn.{BN_TORCH[m[1]]}"
        elif m := re.match(r"res(\d)_(\d+)_branch1_w$", name):
            key = f"s{m[1]}.pathway0_res{m[2]}.branch1.weight"
        elif m := re.match(r"res(\d)_(\d+)_branch1_bn_(\w+)$", name):
            key = f"s{m[1]}.pathway0_res{m[2]}.branch1_bn.{BN_TORCH[m[3]]}"
        elif m := re.match(r"res(\d)_(\d+)_branch2([abc])_w$", name):
            key = f"s{m[1]}.pathway0_res{m[2]}.branch2.{m[3]}.weight"
        elif m := re.match(r"res(\d)_(\d+)_branch2([abc])_bn_(\w+)$", name):
            key = f"s{m[1]}.pathway0_res{m[2]}.branch2.{m[3]}_bn.{BN_TORCH[m[4]]}"
        elif m := re.match(r"nonlocal_conv(\d)_(\d+)_(theta|phi|g|out)_([wb])$", name):
            key = (
                f"s{m[1]}.pathway0_nonlocal{m[2]}.conv_{m[3]}.{'weight' if m[4] == 'w' else 'bias'}"
            )
        elif m := re.match(r"nonlocal_conv(\d)_(\d+)_bn_(\w+)$", name):
            key = f"s{m[1]}.pathway0_nonlocal{m[2]}.bn.{BN_TORCH[m[3]]}"
        elif name in ("pred_w", "pred_b"):
            key = "head.projection." + ("weight" if name == "pred_w" else "bias")
        else:
            raise KeyError(name)
        sd[key] = torch.from_numpy(value)
        if key.endswith("running_var"):
            sd[key.replace("running_var", "num_batches_tracked")] = torch.tensor(1000)
    return sd


def to_mmaction2(blobs: dict, instantiation: str) -> dict:
    """mmaction2 ResNet3d + I3DHead state_dict names (mmcv NonLocal3d, sub_sample)."""
    import torch

    sd = {}
    for name, value in blobs.items():
        key = None
        if name == "conv1_w":
            key = "backbone.conv1.conv.weight"
        elif m := re.match(r"res_conv1_bn_(\w+)$", name):
            key = f"backbone.conv1.bn.{BN_TORCH[m[1]]}"
        elif m := re.match(r"res(\d)_(\d+)_branch2([abc])_w$", name):
            key = f"backbone.layer{int(m[1]) - 1}.{m[2]}.conv{'abc'.index(m[3]) + 1}.conv.weight"
        elif m := re.match(r"res(\d)_(\d+)_branch2([abc])_bn_(\w+)$", name):
            key = f"backbone.layer{int(m[1]) - 1}.{m[2]}.conv{'abc'.index(m[3]) + 1}.bn.{BN_TORCH[m[4]]}"
        elif m := re.match(r"res(\d)_(\d+)_branch1_w$", name):
            key = f"backbone.layer{int(m[1]) - 1}.{m[2]}.downsample.conv.weight"
        elif m := re.match(r"res(\d)_(\d+)_branch1_bn_(\w+)$", name):
            key = f"backbone.layer{int(m[1]) - 1}.{m[2]}.downsample.bn.{BN_TORCH[m[3]]}"
        elif m := re.match(r"nonlocal_conv(\d)_(\d+)_(theta|phi|g)_([wb])$", name):
            if instantiation == "gaussian" and m[3] != "g":
                continue
            sub = m[3] if m[3] == "theta" else f"{m[3]}.0"
            key = f"backbone.layer{int(m[1]) - 1}.{m[2]}.non_local_block.{sub}.conv.{'weight' if m[4] == 'w' else 'bias'}"
        elif m := re.match(r"nonlocal_conv(\d)_(\d+)_out_w$", name):
            key = f"backbone.layer{int(m[1]) - 1}.{m[2]}.non_local_block.conv_out.conv.weight"
        elif re.match(r"nonlocal_conv(\d)_(\d+)_out_b$", name):
            continue  # mmcv's conv_out has no bias before its BN
        elif m := re.match(r"nonlocal_conv(\d)_(\d+)_bn_(\w+)$", name):
            key = (
                f"backbone.layer{int(m[1]) - 1}.{m[2]}.non_local_block.conv_out.bn.{BN_TORCH[m[3]]}"
            )
        elif name in ("pred_w", "pred_b"):
            key = "cls_head.fc_cls." + ("weight" if name == "pred_w" else "bias")
        if key is None:
            raise KeyError(name)
        sd[key] = torch.from_numpy(value)
        if key.endswith("running_var"):
            sd[key.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    return sd


def mmaction2_blobs(blobs: dict, instantiation: str) -> dict:
    """The official-named blobs an mmaction2 checkpoint carries (for the reference)."""
    out = {}
    for name, value in blobs.items():
        if re.match(r"nonlocal_conv\d_\d+_out_b$", name):
            continue
        if instantiation == "gaussian" and re.match(r"nonlocal_conv\d_\d+_(theta|phi)_", name):
            continue
        out[name] = value
    return out


def resnet2d_shapes(depth: int = 50, classes: int = 1000) -> dict[str, tuple]:
    """Blobs of a 2D ImageNet ResNet under the official names (Caffe2 layouts)."""
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    shapes = {"conv1_w": (64, 3, 7, 7)}
    for k in "s b rm riv".split():
        shapes[f"res_conv1_bn_{k}"] = (64,)
    dim_in = 64
    for s, n, width in zip((2, 3, 4, 5), blocks, (64, 128, 256, 512), strict=True):
        for i in range(n):
            p = f"res{s}_{i}"
            convs = {
                "branch2a": (width, dim_in, 1, 1),
                "branch2b": (width, width, 3, 3),
                "branch2c": (4 * width, width, 1, 1),
            }
            if i == 0:
                convs["branch1"] = (4 * width, dim_in, 1, 1)
            for c, shape in convs.items():
                shapes[f"{p}_{c}_w"] = shape
                for k in "s b rm riv".split():
                    shapes[f"{p}_{c}_bn_{k}"] = (shape[0],)
            dim_in = 4 * width
    shapes["pred_w"], shapes["pred_b"] = (classes, 2048), (classes,)
    return shapes


def to_torchvision(blobs: dict) -> dict:
    import torch

    sd = {}
    names = {
        "branch2a": ("conv1", "bn1"),
        "branch2b": ("conv2", "bn2"),
        "branch2c": ("conv3", "bn3"),
        "branch1": ("downsample.0", "downsample.1"),
    }
    for name, value in blobs.items():
        if name == "conv1_w":
            key = "conv1.weight"
        elif m := re.match(r"res_conv1_bn_(\w+)$", name):
            key = f"bn1.{BN_TORCH[m[1]]}"
        elif m := re.match(r"res(\d)_(\d+)_(branch\w+?)_w$", name):
            key = f"layer{int(m[1]) - 1}.{m[2]}.{names[m[3]][0]}.weight"
        elif m := re.match(r"res(\d)_(\d+)_(branch\w+?)_bn_(\w+)$", name):
            key = f"layer{int(m[1]) - 1}.{m[2]}.{names[m[3]][1]}.{BN_TORCH[m[4]]}"
        elif name in ("pred_w", "pred_b"):
            key = "fc." + ("weight" if name == "pred_w" else "bias")
        else:
            raise KeyError(name)
        sd[key] = torch.from_numpy(value)
    return sd
