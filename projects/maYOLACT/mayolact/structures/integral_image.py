"""Compact per-instance integral images, the data structure behind exact maIoU (Alg. 1).

A mask's integral image only needs to cover the mask's own extent (the tight box of its pixels):
the number of mask pixels in any rectangle equals the number in its intersection with that extent,
and clamping the rectangle's corners to the extent turns the lookup into one on the small table.
This is exact and, for most objects, far smaller than the (H+1, W+1) table of the full image.

Every lookup constant (extent, table offset and stride, the flat index of the image origin, the
mask area) is computed once, when the structure is built (in the data loader for training), and
travels with it through indexing, ``cat`` and ``to``; :meth:`IntegralImages.box_counts` then
counts the pixels of any number of boxes in a handful of tensor operations.

Shape shorthand:
    G: number of masks (ground truths) of one image.
    H, W: image (mask) height and width.
    T: total number of table entries.
"""
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.structures import BitMasks

__all__ = ["IntegralImages", "integral_images", "as_integral_images"]

# Columns of IntegralImages.info, read as (G, 5, 2) rows: (x1, y1) and (x2, y2) of the extent,
# the base and the stride twice each (so that both broadcast along the last dim), offset and area.
_X1, _Y1, _X2, _Y2, _BASE, _BASE2, _STRIDE, _STRIDE2, _OFFSET, _AREA = range(10)
_NUM_INFO = 10


_CORNER_SIGNS = {}


def _corner_signs(device: torch.device) -> torch.Tensor:
    """int32 (2, 2) [[1, -1], [-1, 1]] on ``device`` (made once per device)."""
    signs = _CORNER_SIGNS.get(device)
    if signs is None:
        signs = torch.tensor([[1, -1], [-1, 1]], dtype=torch.int32, device=device)
        _CORNER_SIGNS[device] = signs
    return signs


class IntegralImages:
    """Integral images of G binary masks of one H x W image, each over its mask's extent.

    Mask g has non-zero pixels only inside ``extents[g] = (x1, y1, x2, y2)`` (x2, y2 exclusive).
    Its table has shape (h+1, w+1) with h = y2 - y1, w = x2 - x1, a zero first row and column, and
    ``table[r, c]`` = number of mask pixels in rows [y1, y1+r) x cols [x1, x1+c). The tables are
    stored flattened, one after another, in ``data``; ``offsets[g]`` is where table g starts.
    Empty masks have the extent (0, 0, 0, 0) and a 1 x 1 table holding 0.

    The per-mask lookup constants are precomputed in ``info``, int64 (G, 10), with the columns
    ``x1, y1, x2, y2`` (the extent), ``base, base`` (``offset - y1 * stride - x1``: image corner
    (x, y) of the extent is at ``data[base + y * stride + x]``), ``stride, stride`` (w + 1, the
    table row length), ``offset`` and ``area`` (|M|, the table's last entry). Read as (G, 5, 2),
    its rows are exactly the operands of :meth:`box_counts`.

    It behaves as an ``Instances`` field: ``len``, indexing (which shares ``data``), ``cat`` and
    ``to``, all of which keep ``info`` consistent without recomputing it.

    Attributes:
        data (Tensor): int32 (T,), all tables flattened.
        info (Tensor): int64 (G, 10), the lookup constants above.
        image_size (tuple[int, int]): (H, W) of the masks.
    """

    def __init__(self, data: torch.Tensor, offsets: torch.Tensor, extents: torch.Tensor,
                 image_size: Tuple[int, int]):
        """Wrap flattened tables and compute the lookup constants.

        Args:
            data (Tensor): integer (T,), the tables (stored as int32).
            offsets (Tensor): integer (G,), where each table starts in ``data``.
            extents (Tensor): integer (G, 4), the (x1, y1, x2, y2) of each table.
            image_size (tuple[int, int]): (H, W).

        Raises:
            ValueError: on wrong shapes or dtypes, or tables that do not fit in ``data``.
        """
        if not all(isinstance(t, torch.Tensor) for t in (data, offsets, extents)):
            raise ValueError("IntegralImages: data, offsets and extents must be tensors")
        if data.dim() != 1 or offsets.dim() != 1 or extents.shape != (offsets.shape[0], 4):
            raise ValueError(
                "IntegralImages: expected data (T,), offsets (G,) and extents (G, 4); got "
                f"{tuple(data.shape)}, {tuple(offsets.shape)} and {tuple(extents.shape)}"
            )
        for name, t in (("data", data), ("offsets", offsets), ("extents", extents)):
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise ValueError(f"IntegralImages: {name} must be an integer tensor, got {t.dtype}")
        offsets, extents = offsets.long(), extents.long()
        G = offsets.shape[0]
        wh = extents[:, 2:] - extents[:, :2]
        if G and bool((wh < 0).any()):
            raise ValueError("IntegralImages: extents must have x2 >= x1 and y2 >= y1")
        stride = wh[:, 0] + 1
        last = offsets + wh[:, 1] * stride + wh[:, 0]
        if G and (bool((offsets < 0).any()) or int(last.max()) >= data.shape[0]):
            raise ValueError(f"IntegralImages: the tables do not fit in data of {data.shape[0]} "
                             "entries")
        data = data.to(torch.int32)
        info = torch.empty((G, _NUM_INFO), dtype=torch.int64, device=data.device)
        info[:, :4] = extents
        info[:, _BASE:_BASE2 + 1] = (offsets - extents[:, 1] * stride - extents[:, 0])[:, None]
        info[:, _STRIDE:_STRIDE2 + 1] = stride[:, None]
        info[:, _OFFSET] = offsets
        info[:, _AREA] = data[last] if G else last
        self._set(data, info, image_size)

    def _set(self, data: torch.Tensor, info: torch.Tensor, image_size) -> None:
        self.data = data
        self.info = info
        self.image_size = (int(image_size[0]), int(image_size[1]))
        # Views of ``info`` that the hot path would otherwise make on every call, made once here
        # (in the data loader for training; ``to`` keeps them when nothing moves): the areas as
        # (G,) and (G, 1), and box_counts' operands for (G, K, 4) boxes, (G, 1, 1, 2) each.
        self._areas = info[:, _AREA]
        self._area_col = info[:, _AREA:_AREA + 1]
        self._row_operands = info.view(info.shape[0], 1, 1, 5, 2).unbind(-2)[:4]
        self._signs = _corner_signs(data.device)

    def __getstate__(self):
        return {"data": self.data, "info": self.info, "image_size": self.image_size}

    def __setstate__(self, state):
        self._set(state["data"], state["info"], state["image_size"])

    @classmethod
    def _wrap(cls, data: torch.Tensor, info: torch.Tensor, image_size) -> "IntegralImages":
        """Build from consistent ``data`` and ``info`` (no checks; views of ``info`` only)."""
        out = cls.__new__(cls)
        out._set(data, info, image_size)
        return out

    # ------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return self.info.shape[0]

    def __getitem__(self, item) -> "IntegralImages":
        """Select masks (int, slice, bool or index tensor); the tables are shared, not copied."""
        info = self.info[item]
        if info.dim() == 1:  # an integer index
            info = info[None]
        return IntegralImages._wrap(self.data, info, self.image_size)

    def to(self, *args, **kwargs) -> "IntegralImages":
        """Move to a device (the dtypes are fixed: int32 tables, int64 constants); ``self``
        when it is already there."""
        data = self.data.to(*args, **kwargs)
        if data is self.data:
            return self
        if data.dtype != torch.int32:
            raise ValueError(f"IntegralImages.to: the tables must stay int32, got {data.dtype}")
        return IntegralImages._wrap(data, self.info.to(data.device), self.image_size)

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
        if len(items) == 1:
            return items[0]
        shift, infos = 0, []
        for it in items:  # a few structures: shift each one's table positions
            info = it.info
            if shift:
                info = info.clone()
                info[:, _OFFSET] += shift
                info[:, _BASE:_BASE2 + 1] += shift
            infos.append(info)
            shift += it.data.shape[0]
        return IntegralImages._wrap(torch.cat([it.data for it in items]), torch.cat(infos),
                                    items[0].image_size)

    def __repr__(self) -> str:
        full = len(self) * (self.image_size[0] + 1) * (self.image_size[1] + 1)
        return (f"IntegralImages(num_masks={len(self)}, image_size={self.image_size}, "
                f"stored={self.data.numel()} of {full})")

    # ------------------------------------------------------------------- queries
    @property
    def extents(self) -> torch.Tensor:
        """int64 (G, 4): (x1, y1, x2, y2) of each table (a view of ``info``)."""
        return self.info[:, :4]

    @property
    def offsets(self) -> torch.Tensor:
        """int64 (G,): start of each table in ``data`` (a view of ``info``)."""
        return self.info[:, _OFFSET]

    @property
    def strides(self) -> torch.Tensor:
        """int64 (G,): table row lengths, extent width + 1 (a view of ``info``)."""
        return self.info[:, _STRIDE]

    @property
    def bases(self) -> torch.Tensor:
        """int64 (G,): ``data`` index of image corner (0, 0) in each table's coordinates, i.e.
        corner (x, y) of the extent is ``data[bases + y * strides + x]`` (a view of ``info``)."""
        return self.info[:, _BASE]

    @property
    def widths(self) -> torch.Tensor:
        """int64 (G,): table widths minus one (extent widths)."""
        return self.info[:, _STRIDE] - 1

    def areas(self, keepdim: bool = False) -> torch.Tensor:
        """int64 (G,) (or (G, 1) with ``keepdim``): the number of pixels of each mask, |M|
        (a view of ``info``)."""
        return self._area_col if keepdim else self._areas

    def box_counts(self, boxes: torch.Tensor, index: Optional[torch.Tensor] = None, *,
                   ordered: bool = False) -> torch.Tensor:
        """Number of pixels of mask ``index[...]`` inside the integer box ``boxes[...]``.

        Box ``(x1, y1, x2, y2)`` covers pixel columns x1..x2-1 and rows y1..y2-1; corners outside
        the image are fine (only pixels that exist are counted) and a box with x2 <= x1 or
        y2 <= y1 covers no pixel. Four table reads per box, all boxes at once, in a handful of
        tensor operations (the lookup constants are precomputed in ``info``).

        Args:
            boxes (Tensor): integer (..., 4) boxes.
            index (Tensor, optional): int64 (...), the mask of each box, in [-G, G) (not
                checked: the hot path), broadcastable against ``boxes[..., 0]``. None: ``boxes``
                is (G, ..., 4) (or (1, ..., 4), broadcast), its slice g for mask g.
            ordered (bool): the caller guarantees x2 >= x1 and y2 >= y1 for every box (e.g.
                rounded valid boxes), which skips one operation; reversed boxes then give
                wrong counts.

        Returns:
            Tensor: int64, the broadcast shape of ``boxes[..., 0]`` (and ``index``).

        Raises:
            ValueError: for non-integer or malformed boxes.
        """
        if not isinstance(boxes, torch.Tensor) or boxes.dim() < 1 or boxes.shape[-1] != 4:
            shape = tuple(boxes.shape) if hasattr(boxes, "shape") else type(boxes).__name__
            raise ValueError(f"box_counts: boxes must be an (..., 4) tensor, got {shape}")
        if boxes.dtype != torch.int64:
            if boxes.dtype.is_floating_point or boxes.dtype.is_complex or boxes.dtype == torch.bool:
                raise ValueError(f"box_counts: boxes must be integer (round them first), "
                                 f"got {boxes.dtype}")
            boxes = boxes.long()
        if index is None:
            if boxes.dim() < 2 or boxes.shape[0] not in (1, len(self)):
                raise ValueError(f"box_counts: without index, boxes must be (G, ..., 4) with "
                                 f"G = {len(self)} (or 1), got {tuple(boxes.shape)}")
            if boxes.dim() == 3:  # (G, K, 4), the usual case: operands made at construction
                lo, hi, base, stride = self._row_operands
            else:  # (G, 1, ..., 1, 5, 2): one row per mask, broadcast over the corners
                info = self.info.view((len(self),) + (1,) * (boxes.dim() - 1) + (5, 2))
                lo, hi, base, stride, _ = info.unbind(-2)
        else:
            if not isinstance(index, torch.Tensor):
                index = torch.as_tensor(index, device=self.info.device)
            info = self.info.view(len(self), 5, 2)[index[..., None]]  # (..., 1, 5, 2)
            lo, hi, base, stride, _ = info.unbind(-2)  # (..., 1, 2) each
        # Corners clamped to the extent (hence to the image). b: (..., [corner 1|2], [x|y]).
        b = torch.clamp(boxes.unflatten(-1, (2, 2)), lo, hi)
        if not ordered:  # corner 2 >= corner 1, so that reversed boxes cover nothing
            b = torch.maximum(b, b[..., :1, :])
        x, y = b.unbind(-1)  # (..., 2) each: [corner 1|2]
        # Flat indices (..., [x1|x2], [y1|y2]) = base + x + y * stride; four reads per box and
        # count = T[y2, x2] - T[y1, x2] - T[y2, x1] + T[y1, x1] (summed in int64).
        idx = torch.addcmul(base + x.unsqueeze(-1), y.unsqueeze(-2), stride)
        return (torch.take(self.data, idx) * self._signs).sum((-2, -1))

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
            out[g] = self[g].box_counts(boxes[None])[0]
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


def _integral_images_cpu(masks: torch.Tensor) -> IntegralImages:
    """CPU path (the data loader): OpenCV, and the lookup constants in NumPy (no torch ops).

    OpenCV's boundingRect and integral, one call each per mask on a 0/1 uint8 view, are much
    faster than torch here (bool compares and cumsums over a non-last dim are slow on one
    thread) and exact (int32 sums).
    """
    import cv2  # local: only this path needs it

    G, H, W = masks.shape
    m = masks.numpy()
    m = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8)
    m = np.ascontiguousarray(m)
    info = np.zeros((G, _NUM_INFO), dtype=np.int64)
    for g in range(G):
        x, y, w, h = cv2.boundingRect(m[g])
        if w > 0 and h > 0:
            info[g, :4] = (x, y, x + w, y + h)
    stride = info[:, _X2] - info[:, _X1] + 1
    sizes = (info[:, _Y2] - info[:, _Y1] + 1) * stride
    offsets = np.zeros(G, dtype=np.int64)
    if G > 1:
        offsets[1:] = np.cumsum(sizes)[:-1]
    info[:, _OFFSET] = offsets
    info[:, _STRIDE:_STRIDE2 + 1] = stride[:, None]
    info[:, _BASE:_BASE2 + 1] = (offsets - info[:, _Y1] * stride - info[:, _X1])[:, None]
    data = np.zeros(int(sizes.sum()), dtype=np.int32)
    for g in range(G):
        x1, y1, x2, y2 = (int(v) for v in info[g, :4])
        if y2 == y1:
            continue
        start = int(offsets[g])
        table = data[start:start + int(sizes[g])].reshape(y2 - y1 + 1, x2 - x1 + 1)
        out = cv2.integral(m[g, y1:y2, x1:x2], sum=table, sdepth=cv2.CV_32S)
        if not np.shares_memory(out, table):
            table[...] = out
        info[g, _AREA] = table[-1, -1]
    return IntegralImages._wrap(torch.from_numpy(data), torch.from_numpy(info), (H, W))


def integral_images(masks: Union[torch.Tensor, np.ndarray, BitMasks]) -> IntegralImages:
    """Integral images of binary masks, each over its own extent (exact; see the module doc).

    Args:
        masks (Tensor, ndarray or BitMasks): bool or integer (G, H, W); any non-zero pixel is
            on the mask.

    Returns:
        IntegralImages: G tables on the masks' device, with their lookup constants.
        ``.dense()`` gives int32 (G, H+1, W+1).

    Raises:
        ValueError: when ``masks`` is not 3-D or not bool / integer.
    """
    if isinstance(masks, BitMasks):
        masks = masks.tensor
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if hasattr(masks, "shape") else type(masks).__name__
        raise ValueError(f"integral_images: masks must be a (G, H, W) tensor, got {shape}")
    if masks.dtype.is_floating_point or masks.dtype.is_complex:
        raise ValueError(f"integral_images: masks must be bool or uint8, got {masks.dtype}")
    if masks.device.type == "cpu":
        return _integral_images_cpu(masks)
    return _integral_images_torch(masks)


def _integral_images_torch(masks: torch.Tensor) -> IntegralImages:
    """Device path (any device; used off the CPU): one cumsum per mask over its extent."""
    G, H, W = masks.shape
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
    # One cumsum per mask over its extent only (this runs once per image).
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
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise ValueError(f"integral images must be integer, got {x.dtype}")
        G, H1, W1 = x.shape
        if G and (bool((x[:, 0, :] != 0).any()) or bool((x[:, :, 0] != 0).any())):
            raise ValueError("integral images must have a zero first row and column")
        offsets = torch.arange(G, device=x.device, dtype=torch.long) * (H1 * W1)
        ext = torch.tensor([0, 0, W1 - 1, H1 - 1], device=x.device, dtype=torch.long).repeat(G, 1)
        out = IntegralImages(x.reshape(-1), offsets, ext, (H1 - 1, W1 - 1))
    else:
        raise ValueError("expected IntegralImages or a (G, H+1, W+1) tensor, got "
                         f"{type(x).__name__}")
    if image_size is not None and tuple(out.image_size) != tuple(int(s) for s in image_size):
        raise ValueError(f"integral images are for {out.image_size} masks, expected "
                         f"{tuple(image_size)}")
    return out
