"""An independent PyTorch (NCTHW) forward pass of the official video ResNets,
written from the Caffe2 code's description and fed directly with checkpoint
blobs (official names, Caffe2 layouts). Nothing here comes from the library.

Flavours: ``official`` (video-nonlocal-net), ``pyslowfast`` (padded pool1),
``mmaction2`` (conv1/pool1 temporal stride 2, pool1 1x3x3 padded, non-local
pooling after phi/g, no scale, no output bias, BN eps 1e-5).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def forward(
    blobs: dict,
    video: np.ndarray,
    *,
    depth=50,
    flavour="official",
    stem="resnet_video",
    nonlocal_names=(),
    instantiation="embedded_gaussian",
    eps=1.0000001e-5,
    temporal_pool=True,
    affine=False,
    group_res3=None,
) -> np.ndarray:
    """Logits of the train head (global average pool, pred) for ``video``
    (B, T, H, W, 3), already normalised."""
    t = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in blobs.items()}
    x = torch.from_numpy(video).permute(0, 4, 1, 2, 3).float()  # NCTHW

    def bn(x, p):
        if affine:
            return x * t[f"{p}_s"].view(1, -1, 1, 1, 1) + t[f"{p}_b"].view(1, -1, 1, 1, 1)
        return F.batch_norm(
            x, t[f"{p}_rm"], t[f"{p}_riv"], t[f"{p}_s"], t[f"{p}_b"], False, 0.0, eps
        )

    w = t["conv1_w"]
    kt = w.shape[2]
    conv1_stride_t = 2 if (stem == "resnet_video_org" or flavour == "mmaction2") else 1
    x = F.conv3d(x, w, stride=(conv1_stride_t, 2, 2), padding=(kt // 2, 3, 3))
    x = F.relu(bn(x, "res_conv1_bn"))
    if flavour == "mmaction2":
        x = F.max_pool3d(x, (1, 3, 3), stride=(2, 2, 2), padding=(0, 1, 1))
    elif stem == "resnet_video_org":
        x = F.max_pool3d(x, (2, 3, 3), stride=(2, 2, 2))
    else:
        x = F.max_pool3d(
            x, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1) if flavour == "pyslowfast" else 0
        )
    for s, n in zip((2, 3, 4, 5), BLOCKS[depth], strict=True):
        for i in range(n):
            p = f"res{s}_{i}"
            stride = 2 if (s > 2 and i == 0) else 1
            short = x
            if f"{p}_branch1_w" in t:
                short = bn(
                    F.conv3d(x, t[f"{p}_branch1_w"], stride=(1, stride, stride)), f"{p}_branch1_bn"
                )
            wa = t[f"{p}_branch2a_w"]
            y = F.relu(bn(F.conv3d(x, wa, padding=(wa.shape[2] // 2, 0, 0)), f"{p}_branch2a_bn"))
            y = F.relu(
                bn(
                    F.conv3d(
                        y, t[f"{p}_branch2b_w"], stride=(1, stride, stride), padding=(0, 1, 1)
                    ),
                    f"{p}_branch2b_bn",
                )
            )
            y = bn(F.conv3d(y, t[f"{p}_branch2c_w"]), f"{p}_branch2c_bn")
            x = F.relu(y + short)
            nl = f"nonlocal_conv{s}_{i}"
            if nl in nonlocal_names:
                group = group_res3 if s == 3 else None
                x = _nonlocal(x, t, nl, flavour, instantiation, eps, affine, group)
        if s == 2 and temporal_pool:
            x = F.max_pool3d(x, (2, 1, 1), stride=(2, 1, 1))
    x = x.mean(dim=(2, 3, 4))
    logits = x @ t["pred_w"].reshape(t["pred_w"].shape[0], -1).T + t["pred_b"]
    return logits.numpy()


def _nonlocal(x, t, p, flavour, instantiation, eps, affine, group):
    b, c, tt, h, w = x.shape
    if group:
        # (B, C, T, H, W) -> (B*G, C, T/G, H, W): each group of frames on its own
        g = tt // group
        xg = (
            x.reshape(b, c, g, group, h, w).permute(0, 2, 1, 3, 4, 5).reshape(b * g, c, group, h, w)
        )
        out = _nonlocal(xg, t, p, flavour, instantiation, eps, affine, None)
        return out.reshape(b, g, c, group, h, w).permute(0, 2, 1, 3, 4, 5).reshape(b, c, tt, h, w)

    def conv(z, name):
        bias = t.get(f"{p}_{name}_b")
        return F.conv3d(z, t[f"{p}_{name}_w"], bias)

    def pool(z):
        return F.max_pool3d(z, (1, 2, 2), stride=(1, 2, 2))

    if flavour == "mmaction2":
        theta = x if instantiation == "gaussian" else conv(x, "theta")
        phi = pool(x) if instantiation == "gaussian" else pool(conv(x, "phi"))
        g = pool(conv(x, "g"))
    else:
        pooled = pool(x)
        theta, phi, g = conv(x, "theta"), conv(pooled, "phi"), conv(pooled, "g")
    theta = theta.flatten(2)  # (B, C', N)
    phi = phi.flatten(2)  # (B, C', N')
    g = g.flatten(2)
    affinity = torch.einsum("bcn,bcm->bnm", theta, phi)
    if instantiation == "dot_product":
        weights = affinity / phi.shape[2]
    else:
        if flavour != "mmaction2" and instantiation == "embedded_gaussian":
            affinity = affinity * theta.shape[1] ** -0.5
        weights = torch.softmax(affinity, dim=2)
    y = torch.einsum("bnm,bcm->bcn", weights, g).reshape(b, -1, tt, h, w)
    out = conv(y, "out")
    if f"{p}_bn_s" in t:
        out = F.batch_norm(
            out, t[f"{p}_bn_rm"], t[f"{p}_bn_riv"], t[f"{p}_bn_s"], t[f"{p}_bn_b"], False, 0.0, eps
        )
    return x + out


def forward_2d(
    blobs: dict, image: np.ndarray, depth=50, eps=1.0000001e-5, pool_padding=1
) -> np.ndarray:
    """Logits of a 2D ResNet (stride on the 3x3) from Caffe2-named 2D blobs."""
    t = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in blobs.items()}
    x = torch.from_numpy(image).permute(0, 3, 1, 2).float()

    def bn(x, p):
        return F.batch_norm(
            x, t[f"{p}_rm"], t[f"{p}_riv"], t[f"{p}_s"], t[f"{p}_b"], False, 0.0, eps
        )

    x = F.relu(bn(F.conv2d(x, t["conv1_w"], stride=2, padding=3), "res_conv1_bn"))
    x = F.max_pool2d(x, 3, stride=2, padding=pool_padding)
    for s, n in zip((2, 3, 4, 5), BLOCKS[depth], strict=True):
        for i in range(n):
            p = f"res{s}_{i}"
            stride = 2 if (s > 2 and i == 0) else 1
            short = x
            if f"{p}_branch1_w" in t:
                short = bn(F.conv2d(x, t[f"{p}_branch1_w"], stride=stride), f"{p}_branch1_bn")
            y = F.relu(bn(F.conv2d(x, t[f"{p}_branch2a_w"]), f"{p}_branch2a_bn"))
            y = F.relu(
                bn(F.conv2d(y, t[f"{p}_branch2b_w"], stride=stride, padding=1), f"{p}_branch2b_bn")
            )
            y = bn(F.conv2d(y, t[f"{p}_branch2c_w"]), f"{p}_branch2c_bn")
            x = F.relu(y + short)
    x = x.mean(dim=(2, 3))
    return (x @ t["pred_w"].T + t["pred_b"]).numpy()
