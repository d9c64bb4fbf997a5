"""Checkpoint key names of each source format, mapped onto the official Caffe2
blob names (``res3_1_branch2a_w``, ``nonlocal_conv4_3_bn_s``, ``pred_b``...),
which are also this library's layer names. Every converter is then one table:
the blob's layer and weight (`nonlocal_tf.weights.convert`)."""

from __future__ import annotations

import re

_BN_SUFFIX = {"weight": "s", "bias": "b", "running_mean": "rm", "running_var": "riv"}
_PARAM_SUFFIX = {"weight": "w", "bias": "b"}
SKIPPED_KEYS = ("num_batches_tracked",)


def _bn(prefix: str, attr: str) -> str | None:
    return f"{prefix}_bn_{_BN_SUFFIX[attr]}" if attr in _BN_SUFFIX else None


def _res(m) -> str:
    """``layer{L}.{i}`` (mmaction2, torchvision: L from 1) -> ``res{L+1}_{i}``."""
    return f"res{int(m[1]) + 1}_{m[2]}"


def from_pyslowfast(key: str) -> str | None:
    """PySlowFast ResNet (single pathway) state_dict key -> blob name, the
    inverse of PySlowFast's ``c2_model_loading.get_name_convert_func``.

    Returns None for keys without parameters (``num_batches_tracked``)."""
    if key.endswith(SKIPPED_KEYS):
        return None
    rules = [
        (r"^s1\.pathway0_stem\.conv\.(weight)$", lambda m: "conv1_w"),
        (r"^s1\.pathway0_stem\.bn\.(\w+)$", lambda m: _bn("res_conv1", m[1])),
        (r"^s(\d)\.pathway0_res(\d+)\.branch1\.weight$", lambda m: f"res{m[1]}_{m[2]}_branch1_w"),
        (
            r"^s(\d)\.pathway0_res(\d+)\.branch1_bn\.(\w+)$",
            lambda m: _bn(f"res{m[1]}_{m[2]}_branch1", m[3]),
        ),
        (
            r"^s(\d)\.pathway0_res(\d+)\.branch2\.([abc])\.weight$",
            lambda m: f"res{m[1]}_{m[2]}_branch2{m[3]}_w",
        ),
        (
            r"^s(\d)\.pathway0_res(\d+)\.branch2\.([abc])_bn\.(\w+)$",
            lambda m: _bn(f"res{m[1]}_{m[2]}_branch2{m[3]}", m[4]),
        ),
        (
            r"^s(\d)\.pathway0_nonlocal(\d+)\.conv_(theta|phi|g|out)\.(weight|bias)$",
            lambda m: f"nonlocal_conv{m[1]}_{m[2]}_{m[3]}_{_PARAM_SUFFIX[m[4]]}",
        ),
        (
            r"^s(\d)\.pathway0_nonlocal(\d+)\.bn\.(\w+)$",
            lambda m: _bn(f"nonlocal_conv{m[1]}_{m[2]}", m[3]),
        ),
        (r"^head\.projection\.(weight|bias)$", lambda m: f"pred_{_PARAM_SUFFIX[m[1]]}"),
    ]
    return _apply(rules, key, "PySlowFast")


def from_mmaction2(key: str) -> str | None:
    """mmaction2 ResNet3d / I3DHead state_dict key -> blob name.

    ``backbone.layer{L}.{i}`` is ``res{L+1}_{i}``; the non-local block's
    ``phi.0.conv`` / ``g.0.conv`` are the convolutions of its (conv, pool)
    sequences and ``conv_out.bn`` its BN."""
    if key.endswith(SKIPPED_KEYS):
        return None
    key = key.removeprefix("module.")

    def nl(m):
        return f"nonlocal_conv{int(m[1]) + 1}_{m[2]}"

    rules = [
        (r"^backbone\.conv1\.conv\.weight$", lambda m: "conv1_w"),
        (r"^backbone\.conv1\.bn\.(\w+)$", lambda m: _bn("res_conv1", m[1])),
        (
            r"^backbone\.layer(\d)\.(\d+)\.conv([123])\.conv\.weight$",
            lambda m: f"{_res(m)}_branch2{'abc'[int(m[3]) - 1]}_w",
        ),
        (
            r"^backbone\.layer(\d)\.(\d+)\.conv([123])\.bn\.(\w+)$",
            lambda m: _bn(f"{_res(m)}_branch2{'abc'[int(m[3]) - 1]}", m[4]),
        ),
        (
            r"^backbone\.layer(\d)\.(\d+)\.downsample\.conv\.weight$",
            lambda m: f"{_res(m)}_branch1_w",
        ),
        (
            r"^backbone\.layer(\d)\.(\d+)\.downsample\.bn\.(\w+)$",
            lambda m: _bn(f"{_res(m)}_branch1", m[3]),
        ),
        (
            r"^backbone\.layer(\d)\.(\d+)\.non_local_block\.(theta|phi|g)(?:\.0)?\.conv\.(weight|bias)$",
            lambda m: f"{nl(m)}_{m[3]}_{_PARAM_SUFFIX[m[4]]}",
        ),
        (
            r"^backbone\.layer(\d)\.(\d+)\.non_local_block\.conv_out\.conv\.(weight|bias)$",
            lambda m: f"{nl(m)}_out_{_PARAM_SUFFIX[m[3]]}",
        ),
        (
            r"^backbone\.layer(\d)\.(\d+)\.non_local_block\.concat_project\.conv\.weight$",
            lambda m: f"{nl(m)}_concat_project_w",
        ),
        (
            r"^backbone\.layer(\d)\.(\d+)\.non_local_block\.conv_out\.bn\.(\w+)$",
            lambda m: _bn(nl(m), m[3]),
        ),
        (r"^cls_head\.fc_cls\.(weight|bias)$", lambda m: f"pred_{_PARAM_SUFFIX[m[1]]}"),
    ]
    return _apply(rules, key, "mmaction2")


def from_torchvision(key: str) -> str | None:
    """torchvision ResNet-50/101 state_dict key -> blob name."""
    if key.endswith(SKIPPED_KEYS):
        return None
    rules = [
        (r"^conv1\.weight$", lambda m: "conv1_w"),
        (r"^bn1\.(\w+)$", lambda m: _bn("res_conv1", m[1])),
        (
            r"^layer(\d)\.(\d+)\.conv([123])\.weight$",
            lambda m: f"{_res(m)}_branch2{'abc'[int(m[3]) - 1]}_w",
        ),
        (
            r"^layer(\d)\.(\d+)\.bn([123])\.(\w+)$",
            lambda m: _bn(f"{_res(m)}_branch2{'abc'[int(m[3]) - 1]}", m[4]),
        ),
        (r"^layer(\d)\.(\d+)\.downsample\.0\.weight$", lambda m: f"{_res(m)}_branch1_w"),
        (r"^layer(\d)\.(\d+)\.downsample\.1\.(\w+)$", lambda m: _bn(f"{_res(m)}_branch1", m[3])),
        (r"^fc\.(weight|bias)$", lambda m: f"pred_{_PARAM_SUFFIX[m[1]]}"),
    ]
    return _apply(rules, key, "torchvision")


def _apply(rules, key: str, source: str) -> str:
    for pattern, make in rules:
        match = re.match(pattern, key)
        if match:
            name = make(match)
            if name is None:
                break
            return name
    raise KeyError(f"{source} key {key!r} has no counterpart in this architecture.")


def rename_state_dict(state_dict: dict, rename) -> tuple[dict, list[str]]:
    """Applies ``rename`` to every key; returns the blobs and the unknown keys."""
    blobs, unknown = {}, []
    for key, value in state_dict.items():
        try:
            name = rename(key)
        except KeyError:
            unknown.append(key)
            continue
        if name is not None:
            blobs[name] = value
    return blobs, unknown
