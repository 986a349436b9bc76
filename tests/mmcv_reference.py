"""Test helper: literal transcriptions of the official kernels that maYOLACT re-implements.

Written from the source of the authors' mmdetection 2.1 fork (the in-tree ``mmdet/ops``, identical
in semantics to mmcv's ops) as plain loops, so that they can serve as oracles:

* :func:`carafe_loop`: ``CARAFENAIVEForward`` (``carafe_naive_cuda_kernel.cu``);
* :func:`carafe_pack_reference`: ``CARAFEPack.forward`` (compressor, encoder, kernel normaliser,
  reassembly);
* :func:`modulated_deform_conv_loop`: ``modulated_deformable_im2col_gpu_kernel`` with
  ``dmcn_im2col_bilinear`` followed by the GEMM with the weight;
* :func:`dcn_pack_reference`: ``ModulatedDeformConvPack.forward`` (the ``conv_offset`` chunks);
* :func:`fpn_carafe_reference`: ``FPN_CARAFE.forward``.

All loops run in float64 on CPU and are meant for small inputs.
"""
import torch
import torch.nn.functional as F


def carafe_loop(x, m, k, g, s):
    """Literal transcription of ``carafe_naive_cuda_kernel``: out[n, c, ph, pw] = sum over (dy, dx)
    of x[n, c, ph // s + dy, pw // s + dx] * m[n, group, (dy + r) * k + (dx + r), ph, pw]."""
    n_, c_, h, w = x.shape
    m = m.reshape(n_, g, k * k, s * h, s * w)
    r = (k - 1) // 2
    out = torch.zeros(n_, c_, s * h, s * w, dtype=torch.float64)
    for n in range(n_):
        for c in range(c_):
            grp = c // (c_ // g)
            for ph in range(s * h):
                for pw in range(s * w):
                    acc = 0.0
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            iy, ix = ph // s + dy, pw // s + dx
                            if 0 <= iy < h and 0 <= ix < w:
                                acc += float(x[n, c, iy, ix]) * float(
                                    m[n, grp, (dy + r) * k + (dx + r), ph, pw]
                                )
                    out[n, c, ph, pw] = acc
    return out


def carafe_pack_reference(x, params, prefix, up_kernel=5, up_group=1, scale=2, encoder_kernel=3,
                          encoder_dilation=1, channels=None):
    """``CARAFEPack.forward`` on the tensors ``params[prefix + 'channel_compressor.weight']`` etc.

    Args:
        x (Tensor): (N, C, h, w).
        params (dict): mmdet state dict.
        prefix (str): e.g. "neck.upsample_modules.0.".
        channels (list[int] or None): output channels to compute (all by default); the kernels
            always come from all of ``x``.

    Returns:
        Tensor: float64 (N, len(channels), s*h, s*w).
    """
    x = x.double()
    p = {k[len(prefix):]: v.double() for k, v in params.items() if k.startswith(prefix)}
    compressed = F.conv2d(x, p["channel_compressor.weight"], p["channel_compressor.bias"])
    mask = F.conv2d(compressed, p["content_encoder.weight"], p["content_encoder.bias"],
                    padding=int((encoder_kernel - 1) * encoder_dilation / 2),
                    dilation=encoder_dilation)
    # kernel_normalizer
    mask = F.pixel_shuffle(mask, scale)
    n, mask_c, h, w = mask.size()
    mask_channel = int(mask_c / (up_kernel * up_kernel))
    mask = F.softmax(mask.view(n, mask_channel, -1, h, w), dim=2).view(n, mask_c, h, w)
    sel = x if channels is None else x[:, list(channels)]
    if up_group != 1 and channels is not None:
        raise ValueError("carafe_pack_reference: a channel subset needs up_group 1")
    return carafe_loop(sel, mask, up_kernel, up_group, scale)


def _dmcn_im2col_bilinear(img, height, width, h, w):
    """``dmcn_im2col_bilinear``: bilinear sample of one channel (nested lists) at float (h, w);
    corners outside the image count as 0."""
    h_low, w_low = int(h // 1), int(w // 1)  # floor
    h_high, w_high = h_low + 1, w_low + 1
    lh, lw = h - h_low, w - w_low
    hh, hw = 1 - lh, 1 - lw
    v1 = img[h_low][w_low] if h_low >= 0 and w_low >= 0 else 0.0
    v2 = img[h_low][w_high] if h_low >= 0 and w_high <= width - 1 else 0.0
    v3 = img[h_high][w_low] if h_high <= height - 1 and w_low >= 0 else 0.0
    v4 = img[h_high][w_high] if h_high <= height - 1 and w_high <= width - 1 else 0.0
    return hh * hw * v1 + hh * lw * v2 + lh * hw * v3 + lh * lw * v4


def modulated_deform_conv_loop(x, offset, mask, weight, bias=None, stride=1, padding=1,
                               dilation=1, deformable_groups=1):
    """mmcv's modulated deformable convolution (groups 1): im2col by the CUDA kernel's loops, then
    ``weight.view(C_out, C_in * kh * kw) @ columns``.

    Offsets are read as the kernel does: for deformable group g and kernel point (i, j) at output
    (h, w), ``offset[g * 2*kh*kw + 2*(i*kw + j)]`` is the y offset and the next channel the x
    offset; ``mask[g * kh*kw + i*kw + j]`` the modulation.

    Args:
        x (Tensor): (N, C_in, H, W).
        offset (Tensor): (N, 2 * G * kh * kw, H_out, W_out).
        mask (Tensor): (N, G * kh * kw, H_out, W_out).
        weight (Tensor): (C_out, C_in, kh, kw).

    Returns:
        Tensor: float64 (N, C_out, H_out, W_out).
    """
    n_, c_in, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    h_out = (height + 2 * padding - (dilation * (kh - 1) + 1)) // stride + 1
    w_out = (width + 2 * padding - (dilation * (kw - 1) + 1)) // stride + 1
    channel_per_group = c_in // deformable_groups
    xs, offs, ms = x.double().tolist(), offset.double().tolist(), mask.double().tolist()
    out = torch.zeros(n_, c_out, h_out, w_out, dtype=torch.float64)
    w2 = weight.double().reshape(c_out, c_in * kh * kw)
    for b in range(n_):
        col = [[0.0] * (h_out * w_out) for _ in range(c_in * kh * kw)]
        for c_im in range(c_in):
            g = c_im // channel_per_group
            for h_col in range(h_out):
                for w_col in range(w_out):
                    h_in, w_in = h_col * stride - padding, w_col * stride - padding
                    for i in range(kh):
                        for j in range(kw):
                            off_h = offs[b][g * 2 * kh * kw + 2 * (i * kw + j)][h_col][w_col]
                            off_w = offs[b][g * 2 * kh * kw + 2 * (i * kw + j) + 1][h_col][w_col]
                            m = ms[b][g * kh * kw + i * kw + j][h_col][w_col]
                            h_im = h_in + i * dilation + off_h
                            w_im = w_in + j * dilation + off_w
                            val = 0.0
                            if h_im > -1 and w_im > -1 and h_im < height and w_im < width:
                                val = _dmcn_im2col_bilinear(xs[b][c_im], height, width, h_im, w_im)
                            col[c_im * kh * kw + i * kw + j][h_col * w_out + w_col] = val * m
        res = w2 @ torch.tensor(col, dtype=torch.float64)
        if bias is not None:
            res = res + bias.double()[:, None]
        out[b] = res.view(c_out, h_out, w_out)
    return out


def dcn_pack_reference(x, params, prefix, stride=1, padding=1, dilation=1, deformable_groups=1):
    """``ModulatedDeformConvPack.forward`` on ``params[prefix + 'weight']`` and
    ``params[prefix + 'conv_offset.weight' / '.bias']``: the offset conv's output is chunked into
    (o1, o2, mask), offset = cat(o1, o2), mask = sigmoid(mask)."""
    x = x.double()
    out = F.conv2d(x, params[prefix + "conv_offset.weight"].double(),
                   params[prefix + "conv_offset.bias"].double(), stride=stride, padding=padding,
                   dilation=dilation)
    o1, o2, mask = torch.chunk(out, 3, dim=1)
    offset = torch.cat((o1, o2), dim=1)
    mask = torch.sigmoid(mask)
    bias = params.get(prefix + "bias")
    return modulated_deform_conv_loop(x, offset, mask, params[prefix + "weight"], bias, stride,
                                      padding, dilation, deformable_groups)


def _bn(x, params, prefix, eps=1e-5):
    """Eval-mode BatchNorm2d on ``params[prefix + 'weight' / 'bias' / 'running_*']``."""
    return F.batch_norm(x, params[prefix + "running_mean"].double(),
                        params[prefix + "running_var"].double(), params[prefix + "weight"].double(),
                        params[prefix + "bias"].double(), False, 0.0, eps)


def bottleneck_reference(x, params, prefix, stride, deformable_groups=None):
    """mmdet's ``Bottleneck.forward`` (style 'pytorch': the stride on the 3x3 conv), eval mode, on
    ``params`` under ``prefix`` (e.g. "backbone.layer2.0."); the 3x3 conv is a DCNv2 pack when
    ``deformable_groups`` is given."""
    x = x.double()
    out = F.relu(_bn(F.conv2d(x, params[prefix + "conv1.weight"].double()), params,
                     prefix + "bn1."))
    if deformable_groups:
        out = dcn_pack_reference(out, params, prefix + "conv2.", stride=stride,
                                 deformable_groups=deformable_groups)
    else:
        out = F.conv2d(out, params[prefix + "conv2.weight"].double(), stride=stride, padding=1)
    out = F.relu(_bn(out, params, prefix + "bn2."))
    out = _bn(F.conv2d(out, params[prefix + "conv3.weight"].double()), params, prefix + "bn3.")
    identity = x
    if prefix + "downsample.0.weight" in params:
        identity = _bn(F.conv2d(x, params[prefix + "downsample.0.weight"].double(), stride=stride),
                       params, prefix + "downsample.1.")
    return F.relu(out + identity)


def fpn_carafe_reference(inputs, params, num_outs=5, start_level=1, prefix="neck."):
    """``FPN_CARAFE.forward`` (no norm, no activation, CARAFE upsampling) on ``params``.

    Args:
        inputs (list[Tensor]): the backbone outputs C2..C5 (``in_channels`` order).

    Returns:
        list[Tensor]: float64 P3..P7.
    """
    inputs = [t.double() for t in inputs]

    def conv(t, name, stride=1):
        w = params[f"{prefix}{name}.conv.weight"].double()
        return F.conv2d(t, w, params[f"{prefix}{name}.conv.bias"].double(), stride=stride,
                        padding=w.shape[-1] // 2)

    backbone_end_level = len(inputs)
    laterals = []
    for i in range(num_outs):  # the input levels' laterals, then one per extra level
        if i <= backbone_end_level - start_level:
            src = inputs[min(i + start_level, len(inputs) - 1)]
        else:
            src = laterals[-1]
        stride = 2 if i >= backbone_end_level - start_level else 1  # extra levels: 3x3/s2
        laterals.append(conv(src, f"lateral_convs.{i}", stride))
    for i in range(len(laterals) - 1, 0, -1):
        up = carafe_pack_reference(laterals[i], params, f"{prefix}upsample_modules.{i - 1}.")
        lo = laterals[i - 1]
        laterals[i - 1] = lo + up[:, :, :lo.size(2), :lo.size(3)]
    return [conv(lat, f"fpn_convs.{i}") for i, lat in enumerate(laterals)]
