"""Compact per-instance integral images, the data structure behind exact maIoU (Alg. 1).

A mask's integral image only needs to cover the mask's own extent (the tight box of its pixels):
the number of mask pixels in any rectangle equals the number in its intersection with that extent,
and clamping the rectangle's corners to the extent turns the lookup into one on the small table.
This is exact and, for most objects, far smaller than the (H+1, W+1) table of the full image.

Shape shorthand:
    G: number of masks (ground truths) of one image.
    H, W: image (mask) height and width.
"""
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["IntegralImages", "integral_images", "as_integral_images"]


class IntegralImages:
    """Integral images of G binary masks of one H x W image, each over its mask's extent.

    Mask g has non-zero pixels only inside ``extents[g] = (x1, y1, x2, y2)`` (x2, y2 exclusive).
    Its table has shape (h+1, w+1) with h = y2 - y1, w = x2 - x1, a zero first row and column, and
    ``table[r, c]`` = number of mask pixels in rows [y1, y1+r) x cols [x1, x1+c). The tables are
    stored flattened, one after another, in ``data``; ``offsets[g]`` is where table g starts.

    It behaves as an ``Instances`` field: ``len``, indexing (which shares ``data``), ``cat`` and
    ``to``.

    Attributes:
        data (Tensor): int32 (T,), all tables flattened.
        offsets (Tensor): int64 (G,), start of each table in ``data``.
        extents (Tensor): int64 (G, 4), (x1, y1, x2, y2) of each table; empty masks have h = w = 0.
        image_size (tuple[int, int]): (H, W) of the masks.
    """

    def __init__(self, data: torch.Tensor, offsets: torch.Tensor, extents: torch.Tensor,
                 image_size: Tuple[int, int]):
        if data.dim() != 1 or offsets.dim() != 1 or extents.shape != (offsets.shape[0], 4):
            raise ValueError(
                "IntegralImages: expected data (T,), offsets (G,) and extents (G, 4); got "
                f"{tuple(data.shape)}, {tuple(offsets.shape)} and {tuple(extents.shape)}"
            )
        self.data = data
        self.offsets = offsets
        self.extents = extents
        self.image_size = (int(image_size[0]), int(image_size[1]))

    # ------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return self.offsets.shape[0]

    def __getitem__(self, item) -> "IntegralImages":
        if isinstance(item, int):
            item = slice(item, item + 1) if item != -1 else slice(-1, None)
        return IntegralImages(self.data, self.offsets[item], self.extents[item], self.image_size)

    def to(self, *args, **kwargs) -> "IntegralImages":
        return IntegralImages(self.data.to(*args, **kwargs), self.offsets.to(*args, **kwargs),
                              self.extents.to(*args, **kwargs), self.image_size)

    @property
    def device(self) -> torch.device:
        return self.data.device

    @staticmethod
    def cat(items: List["IntegralImages"]) -> "IntegralImages":
        """Concatenate the masks of several structures of the same image size."""
        if len(items) == 0:
            raise ValueError("IntegralImages.cat: nothing to concatenate")
        sizes = {it.image_size for it in items}
        if len(sizes) != 1:
            raise ValueError(f"IntegralImages.cat: image sizes differ: {sorted(sizes)}")
        shift, offsets = 0, []
        for it in items:
            offsets.append(it.offsets + shift)
            shift += it.data.shape[0]
        return IntegralImages(torch.cat([it.data for it in items]), torch.cat(offsets),
                              torch.cat([it.extents for it in items]), items[0].image_size)

    def __repr__(self) -> str:
        return (f"IntegralImages(num_masks={len(self)}, image_size={self.image_size}, "
                f"stored={self.data.numel()} of {len(self) * (self.image_size[0] + 1) * (self.image_size[1] + 1)})")

    # ------------------------------------------------------------------- queries
    @property
    def widths(self) -> torch.Tensor:
        """int64 (G,): table widths minus one (extent widths)."""
        return self.extents[:, 2] - self.extents[:, 0]

    def areas(self) -> torch.Tensor:
        """int64 (G,): number of pixels of each mask, |M| (the last entry of each table)."""
        last = self.offsets + (self.extents[:, 3] - self.extents[:, 1]) * (self.widths + 1) + self.widths
        return self.data[last].long()

    def box_counts(self, boxes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Number of pixels of mask ``index[...]`` inside the integer box ``boxes[...]``.

        Box ``(x1, y1, x2, y2)`` covers pixel columns x1..x2-1 and rows y1..y2-1; corners outside
        the image are fine (only pixels that exist are counted).

        Args:
            boxes (Tensor): integer (..., 4) boxes.
            index (Tensor): int64 (...), broadcastable against ``boxes[..., 0]``; mask of each box.

        Returns:
            Tensor: int64 (...), the pixel counts.
        """
        boxes = boxes.long()
        ext = self.extents[index]  # (..., 4)
        ex1, ey1, ex2, ey2 = ext.unbind(-1)
        x1 = torch.minimum(torch.maximum(boxes[..., 0], ex1), ex2) - ex1
        y1 = torch.minimum(torch.maximum(boxes[..., 1], ey1), ey2) - ey1
        x2 = torch.minimum(torch.maximum(boxes[..., 2], ex1), ex2) - ex1
        y2 = torch.minimum(torch.maximum(boxes[..., 3], ey1), ey2) - ey1
        # A box with x2 < x1 (or y2 < y1) covers no pixel; clamp so its lookups cancel to 0.
        x2 = torch.maximum(x2, x1)
        y2 = torch.maximum(y2, y1)
        stride = (ex2 - ex1) + 1
        base = self.offsets[index]
        d = self.data
        count = (d[base + y2 * stride + x2] + d[base + y1 * stride + x1]
                 - d[base + y1 * stride + x2] - d[base + y2 * stride + x1])
        return count.long()

    def dense(self) -> torch.Tensor:
        """The full-image integral images, int32 (G, H+1, W+1), zero first row and column."""
        H, W = self.image_size
        G = len(self)
        ys = torch.arange(H + 1, device=self.device)
        xs = torch.arange(W + 1, device=self.device)
        # Count in rows [0, y) x cols [0, x) of every mask: box (0, 0, x, y).
        boxes = torch.stack(torch.broadcast_tensors(
            torch.zeros_like(xs)[None, :], torch.zeros_like(ys)[:, None], xs[None, :], ys[:, None]
        ), dim=-1)  # (H+1, W+1, 4)
        out = torch.empty((G, H + 1, W + 1), dtype=torch.int32, device=self.device)
        for g in range(G):  # one vectorised lookup per mask; dense() is for export and tests
            out[g] = self.box_counts(boxes, torch.full((H + 1, W + 1), g, device=self.device))
        return out


def _mask_extents(masks: torch.Tensor) -> torch.Tensor:
    """Tight (x1, y1, x2, y2) of the non-zero pixels of each (G, H, W) mask; zeros when empty."""
    G, H, W = masks.shape
    rows = masks.any(dim=2)  # (G, H)
    cols = masks.any(dim=1)  # (G, W)
    nonempty = rows.any(dim=1)
    ar_h = torch.arange(H, device=masks.device)
    ar_w = torch.arange(W, device=masks.device)
    y1 = torch.where(rows, ar_h, H).amin(dim=1)
    y2 = torch.where(rows, ar_h + 1, 0).amax(dim=1)
    x1 = torch.where(cols, ar_w, W).amin(dim=1)
    x2 = torch.where(cols, ar_w + 1, 0).amax(dim=1)
    ext = torch.stack([x1, y1, x2, y2], dim=1)
    return torch.where(nonempty[:, None], ext, torch.zeros_like(ext)).long()


def integral_images(masks: Union[torch.Tensor, np.ndarray]) -> IntegralImages:
    """Integral images of binary masks, each over its own extent (exact; see the module doc).

    Args:
        masks (Tensor or ndarray): bool or uint8 (G, H, W); any non-zero pixel is on the mask.

    Returns:
        IntegralImages: G tables on the masks' device. ``.dense()`` gives int32 (G, H+1, W+1).

    Raises:
        ValueError: when ``masks`` is not 3-D or not bool / integer.
    """
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if hasattr(masks, "shape") else type(masks).__name__
        raise ValueError(f"integral_images: masks must be a (G, H, W) tensor, got {shape}")
    if masks.dtype.is_floating_point or masks.dtype.is_complex:
        raise ValueError(f"integral_images: masks must be bool or uint8, got {masks.dtype}")
    G, H, W = masks.shape
    if masks.device.type == "cpu":
        # CPU (the data loader): OpenCV's boundingRect and integral, one call each per mask, on a
        # 0/1 uint8 view. Much faster than torch here (bool compares and cumsums over a non-last
        # dim are slow on one thread) and exact (int32 sums).
        import cv2  # local: only this path needs it

        m = masks.numpy()
        m = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8)
        m = np.ascontiguousarray(m)
        ext_np = np.zeros((G, 4), dtype=np.int64)
        for g in range(G):
            x, y, w, h = cv2.boundingRect(m[g])
            if w > 0 and h > 0:
                ext_np[g] = (x, y, x + w, y + h)
        sizes_np = (ext_np[:, 3] - ext_np[:, 1] + 1) * (ext_np[:, 2] - ext_np[:, 0] + 1)
        offsets_np = np.zeros(G, dtype=np.int64)
        if G > 1:
            offsets_np[1:] = np.cumsum(sizes_np)[:-1]
        data_np = np.zeros(int(sizes_np.sum()), dtype=np.int32)
        for g in range(G):
            x1, y1, x2, y2 = (int(v) for v in ext_np[g])
            if y2 == y1:
                continue
            start = int(offsets_np[g])
            table = data_np[start:start + int(sizes_np[g])].reshape(y2 - y1 + 1, x2 - x1 + 1)
            out = cv2.integral(m[g, y1:y2, x1:x2], sum=table, sdepth=cv2.CV_32S)
            if not np.shares_memory(out, table):
                table[...] = out
        return IntegralImages(torch.from_numpy(data_np), torch.from_numpy(offsets_np),
                              torch.from_numpy(ext_np), (H, W))
    masks = masks != 0
    ext = _mask_extents(masks)
    hs = (ext[:, 3] - ext[:, 1])
    ws = (ext[:, 2] - ext[:, 0])
    sizes = (hs + 1) * (ws + 1)
    offsets = torch.zeros(G, dtype=torch.long, device=masks.device)
    if G > 1:
        offsets[1:] = torch.cumsum(sizes, 0)[:-1]
    total = int(sizes.sum()) if G else 0
    data = torch.zeros(total, dtype=torch.int32, device=masks.device)
    ext_cpu = ext.cpu().tolist()
    off_cpu = offsets.cpu().tolist()
    # One cumsum per mask over its extent only (this runs once per image in the data loader).
    for g, (x1, y1, x2, y2) in enumerate(ext_cpu):
        h, w = y2 - y1, x2 - x1
        if h == 0:
            continue
        table = data[off_cpu[g]:off_cpu[g] + (h + 1) * (w + 1)].view(h + 1, w + 1)
        table[1:, 1:] = masks[g, y1:y2, x1:x2].to(torch.int32).cumsum(0).cumsum(1)
    return IntegralImages(data, offsets, ext, (H, W))


def as_integral_images(x: Union[IntegralImages, torch.Tensor],
                       image_size: Sequence[int] = None) -> IntegralImages:
    """Accept either :class:`IntegralImages` or dense int (G, H+1, W+1) integral images.

    Args:
        x: the integral images.
        image_size: optional (H, W) the masks must have; checked when given.

    Raises:
        ValueError: on a malformed dense tensor or a size mismatch.
    """
    if isinstance(x, IntegralImages):
        out = x
    elif isinstance(x, torch.Tensor):
        if x.dim() != 3 or x.shape[1] < 1 or x.shape[2] < 1:
            raise ValueError(
                f"integral images must be (G, H+1, W+1), got a tensor of shape {tuple(x.shape)}")
        if x.dtype.is_floating_point:
            raise ValueError(f"integral images must be integer, got {x.dtype}")
        G, H1, W1 = x.shape
        if G and (bool((x[:, 0, :] != 0).any()) or bool((x[:, :, 0] != 0).any())):
            raise ValueError("integral images must have a zero first row and column")
        offsets = torch.arange(G, device=x.device, dtype=torch.long) * (H1 * W1)
        ext = torch.tensor([0, 0, W1 - 1, H1 - 1], device=x.device, dtype=torch.long).repeat(G, 1)
        out = IntegralImages(x.reshape(-1).to(torch.int32), offsets, ext, (H1 - 1, W1 - 1))
    else:
        raise ValueError(f"expected IntegralImages or a (G, H+1, W+1) tensor, got {type(x).__name__}")
    if image_size is not None and tuple(out.image_size) != tuple(int(s) for s in image_size):
        raise ValueError(f"integral images are for {out.image_size} masks, expected {tuple(image_size)}")
    return out
