"""IntegralImages: construction (both paths) against a dense cumsum oracle, box_counts against
direct pixel counting, the container protocol (indexing, cat, to, Instances) and bad input."""
import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Instances

from mayolact.structures.integral_image import (
    IntegralImages,
    _integral_images_torch,
    as_integral_images,
    integral_images,
)


# ----------------------------------------------------------------------------- oracles
def dense_oracle(masks: torch.Tensor) -> torch.Tensor:
    """int64 (G, H+1, W+1) integral images by cumsum over the whole image."""
    G, H, W = masks.shape
    out = torch.zeros(G, H + 1, W + 1, dtype=torch.int64)
    out[:, 1:, 1:] = (masks != 0).long().cumsum(1).cumsum(2)
    return out


def count_oracle(masks: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pixels of mask index[p] in box boxes[p] (columns x1..x2-1, rows y1..y2-1), by slicing."""
    H, W = masks.shape[1:]
    out = []
    for (x1, y1, x2, y2), g in zip(boxes.tolist(), index.tolist()):
        x1, x2 = min(max(x1, 0), W), min(max(x2, 0), W)
        y1, y2 = min(max(y1, 0), H), min(max(y2, 0), H)
        out.append(int(masks[g, y1:y2, x1:x2].sum()) if x2 > x1 and y2 > y1 else 0)
    return torch.tensor(out, dtype=torch.int64)


def edge_case_masks(gen, H=13, W=17):
    """Empty, full, single pixels (corners and middle), border-touching and random masks."""
    masks = torch.zeros(9, H, W, dtype=torch.bool)
    masks[1] = True  # full image
    masks[2, 0, 0] = True  # single pixel, top-left corner
    masks[3, H - 1, W - 1] = True  # single pixel, bottom-right corner
    masks[4, H // 2, W // 3] = True  # single pixel inside
    masks[5, :, 0] = True  # left column
    masks[5, H - 1, :] = True  # and bottom row
    masks[6, 2:5, W - 3:] = True  # touching the right border
    masks[7] = torch.rand(H, W, generator=gen) < 0.3
    masks[8, 3:9, 4:12] = torch.rand(6, 8, generator=gen) < 0.7  # holes inside its extent
    return masks  # masks[0] stays empty


def random_boxes(gen, n, H, W):
    """Integer boxes partly or fully outside the image, reversed and zero-size among them."""
    xs = torch.randint(-8, W + 9, (n, 2), generator=gen)
    ys = torch.randint(-8, H + 9, (n, 2), generator=gen)
    boxes = torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1)
    boxes[: n // 8, 2] = boxes[: n // 8, 0]  # zero width
    boxes[-4:] = torch.tensor([[-50, -50, 100, 100], [W + 1, 0, W + 5, H], [0, -9, W, -1],
                               [5, 6, 2, 3]])  # all of it, right of it, above it, reversed
    return boxes


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


# ------------------------------------------------------------------------- construction
@pytest.mark.parametrize("builder", [integral_images, _integral_images_torch],
                         ids=["cpu-opencv", "torch"])
def test_construction_matches_dense_oracle(gen, builder):
    cases = [edge_case_masks(gen)]
    for _ in range(15):
        G = int(torch.randint(0, 6, (1,), generator=gen))
        H, W = (int(v) for v in torch.randint(1, 25, (2,), generator=gen))
        cases.append(torch.rand(G, H, W, generator=gen) < torch.rand(1, generator=gen))
    cases.append(torch.ones(2, 1, 1, dtype=torch.bool))  # 1 x 1 images
    cases.append(torch.zeros(0, 4, 5, dtype=torch.bool))  # no masks
    for masks in cases:
        ii = builder(masks)
        G, H, W = masks.shape
        assert len(ii) == G and ii.image_size == (H, W)
        assert ii.data.dtype == torch.int32 and ii.info.shape == (G, 10)
        assert torch.equal(ii.dense().long(), dense_oracle(masks))
        assert torch.equal(ii.areas(), masks.flatten(1).sum(1))
        for g in range(G):  # tight extents (zeros when empty), compact tables
            ys, xs = torch.nonzero(masks[g], as_tuple=True)
            ext = [0, 0, 0, 0] if ys.numel() == 0 else [
                int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            assert ii.extents[g].tolist() == ext
        ext = ii.extents
        sizes = (ext[:, 3] - ext[:, 1] + 1) * (ext[:, 2] - ext[:, 0] + 1)
        assert ii.data.numel() == int(sizes.sum())
        # The precomputed constants: stride, base (image origin), offsets.
        stride = ii.extents[:, 2] - ii.extents[:, 0] + 1
        assert torch.equal(ii.strides, stride) and torch.equal(ii.info[:, 6], ii.info[:, 7])
        assert torch.equal(ii.bases, ii.offsets - ii.extents[:, 1] * stride - ii.extents[:, 0])
        assert torch.equal(ii.info[:, 4], ii.info[:, 5])
        assert torch.equal(ii.widths, ii.extents[:, 2] - ii.extents[:, 0])


def test_cpu_and_torch_paths_build_identical_structures(gen):
    masks = edge_case_masks(gen)
    a, b = integral_images(masks), _integral_images_torch(masks)
    assert torch.equal(a.data, b.data) and torch.equal(a.info, b.info)


def test_accepts_numpy_uint8_and_bitmasks(gen):
    masks = edge_case_masks(gen)
    ref = integral_images(masks)
    for inp in (masks.numpy(), masks.numpy().astype(np.uint8) * 255, masks.to(torch.uint8),
                BitMasks(masks)):
        ii = integral_images(inp)
        assert torch.equal(ii.data, ref.data) and torch.equal(ii.info, ref.info)


@pytest.mark.parametrize("bad, msg", [
    (torch.zeros(2, 5, 5), "bool or uint8"),
    (np.zeros((2, 5, 5), dtype=np.float32), "bool or uint8"),
    (torch.zeros(5, 5, dtype=torch.bool), r"\(G, H, W\) tensor, got \(5, 5\)"),
    (torch.zeros(1, 2, 5, 5, dtype=torch.bool), r"got \(1, 2, 5, 5\)"),
    ("masks", "got str"),
])
def test_integral_images_errors(bad, msg):
    with pytest.raises(ValueError, match=msg):
        integral_images(bad)


def test_constructor_checks():
    data = torch.zeros(12, dtype=torch.int32)
    ok = IntegralImages(data, torch.tensor([0]), torch.tensor([[1, 1, 4, 3]]), (5, 6))
    assert ok.info[0].tolist() == [1, 1, 4, 3, -5, -5, 4, 4, 0, 0]  # extent, base x2, stride x2
    with pytest.raises(ValueError, match="expected data"):
        IntegralImages(data, torch.tensor([0, 1]), torch.tensor([[1, 1, 4, 3]]), (5, 6))
    with pytest.raises(ValueError, match="data must be an integer"):
        IntegralImages(data.float(), torch.tensor([0]), torch.tensor([[1, 1, 4, 3]]), (5, 6))
    with pytest.raises(ValueError, match="x2 >= x1"):
        IntegralImages(data, torch.tensor([0]), torch.tensor([[4, 1, 1, 3]]), (5, 6))
    with pytest.raises(ValueError, match="do not fit"):
        IntegralImages(data, torch.tensor([1]), torch.tensor([[1, 1, 4, 3]]), (5, 6))
    with pytest.raises(ValueError, match="must be tensors"):
        IntegralImages([0], torch.tensor([0]), torch.tensor([[0, 0, 0, 0]]), (5, 6))


# --------------------------------------------------------------------------- box counts
def test_box_counts_match_pixel_counting(gen):
    masks = edge_case_masks(gen)
    G, H, W = masks.shape
    ii = integral_images(masks)
    boxes = random_boxes(gen, 300, H, W)
    index = torch.randint(0, G, (300,), generator=gen)
    got = ii.box_counts(boxes, index)
    assert got.dtype == torch.int64 and got.shape == (300,)
    assert torch.equal(got, count_oracle(masks, boxes, index))
    # Row layout (index None): (G, K, 4) boxes, and (1, K, 4) broadcast over the masks.
    rows = torch.arange(G)[:, None].expand(G, 300)
    ref = count_oracle(masks, boxes.repeat(G, 1), rows.reshape(-1)).view(G, 300)
    assert torch.equal(ii.box_counts(boxes[None]), ref)
    assert torch.equal(ii.box_counts(boxes[None].expand(G, -1, -1)), ref)
    assert torch.equal(ii.box_counts(boxes, torch.arange(G)[:, None]), ref)  # broadcast index
    # Any integer dtype, Python-list index, more leading dims.
    assert torch.equal(ii.box_counts(boxes.int(), index.tolist()), got)
    assert torch.equal(ii.box_counts(boxes.view(20, 15, 4), index.view(20, 15)), got.view(20, 15))
    # A reversed box covers nothing, whatever the mask.
    assert torch.equal(ii.box_counts(torch.tensor([[W, H, 0, 0]]).expand(G, 4)[:, None]),
                       torch.zeros(G, 1, dtype=torch.int64))
    # ordered=True (boxes known to have x2 >= x1, y2 >= y1) skips one step, same counts.
    ordered = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]),
                         torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)
    assert torch.equal(ii.box_counts(ordered, index, ordered=True), ii.box_counts(ordered, index))
    assert torch.equal(ii.box_counts(ordered[None], ordered=True),
                       count_oracle(masks, ordered.repeat(G, 1), rows.reshape(-1)).view(G, 300))
    # Whole-image boxes give the areas.
    assert torch.equal(ii.box_counts(torch.tensor([[[-3, -3, W + 3, H + 3]]])).squeeze(1),
                       ii.areas())


def test_box_counts_without_masks_or_boxes():
    none = integral_images(torch.zeros(0, 6, 7, dtype=torch.bool))
    assert none.box_counts(torch.zeros(0, 5, 4, dtype=torch.long)).shape == (0, 5)
    assert none.box_counts(torch.zeros(1, 5, 4, dtype=torch.long)).shape == (0, 5)
    some = integral_images(torch.ones(2, 6, 7, dtype=torch.bool))
    assert some.box_counts(torch.zeros(2, 0, 4, dtype=torch.long)).shape == (2, 0)
    no_boxes = torch.zeros(0, 4, dtype=torch.long)
    assert some.box_counts(no_boxes, torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_box_counts_bad_input(gen):
    ii = integral_images(edge_case_masks(gen))
    with pytest.raises(ValueError, match="integer"):
        ii.box_counts(torch.zeros(9, 3, 4), None)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        ii.box_counts(torch.zeros(9, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="G = 9"):
        ii.box_counts(torch.zeros(4, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="G = 9"):
        ii.box_counts(torch.zeros(4, dtype=torch.long))


# ------------------------------------------------------------------- container protocol
def test_indexing_cat_and_to_preserve_results(gen):
    masks = edge_case_masks(gen)
    G, H, W = masks.shape
    ii = integral_images(masks)
    boxes = random_boxes(gen, 50, H, W)
    full = ii.box_counts(boxes[None])  # (G, 50)
    dense = ii.dense()
    sel = torch.tensor([7, 0, 3, 3])
    bool_sel = torch.rand(G, generator=gen) < 0.5
    for item, ref_rows in ((slice(2, 6), list(range(2, 6))), (sel, sel.tolist()),
                           (bool_sel, torch.nonzero(bool_sel).flatten().tolist()),
                           (4, [4]), (-1, [G - 1]), ([1, 8], [1, 8])):
        sub = ii[item]
        assert len(sub) == len(ref_rows) and sub.data is ii.data  # tables shared
        assert torch.equal(sub.box_counts(boxes[None]), full[ref_rows])
        assert torch.equal(sub.dense(), dense[ref_rows])
        assert torch.equal(sub.areas(), ii.areas()[ref_rows])
    # cat: of pieces of one structure and of structures of other images of the same size.
    other = integral_images(torch.rand(3, H, W, generator=gen) < 0.4)
    cat = IntegralImages.cat([ii[5:], other, ii[:2], ii[sel]])
    assert len(cat) == (G - 5) + 3 + 2 + 4
    expect = torch.cat([dense[5:], other.dense(), dense[:2], dense[sel]])
    assert torch.equal(cat.dense(), expect)
    assert torch.equal(cat.box_counts(boxes[None]),
                       torch.cat([full[5:], other.box_counts(boxes[None]), full[:2], full[sel]]))
    assert IntegralImages.cat([ii]) is ii
    # to: the same device gives the structure itself (its precomputed views stay); a copy of
    # the tables works the same; the dtype cannot change.
    assert ii.to(torch.device("cpu")) is ii and ii.to("cpu") is ii
    moved = ii.to("cpu", copy=True)
    assert moved is not ii and moved.data.data_ptr() != ii.data.data_ptr()
    assert torch.equal(moved.box_counts(boxes[None]), full) and moved.device.type == "cpu"
    with pytest.raises(ValueError, match="int32"):
        ii.to(torch.float32)
    assert "num_masks=9" in repr(ii)


def test_pickle_and_deepcopy_rebuild_the_views(gen):
    import copy
    import pickle

    masks = edge_case_masks(gen)
    ii = integral_images(masks)
    boxes = random_boxes(gen, 40, *masks.shape[1:])
    for other in (pickle.loads(pickle.dumps(ii)), copy.deepcopy(ii)):
        assert torch.equal(other.data, ii.data) and torch.equal(other.info, ii.info)
        assert torch.equal(other.box_counts(boxes[None]), ii.box_counts(boxes[None]))
        assert torch.equal(other.areas(keepdim=True), ii.areas()[:, None])


def test_cat_errors(gen):
    with pytest.raises(ValueError, match="nothing"):
        IntegralImages.cat([])
    a = integral_images(torch.ones(1, 4, 5, dtype=torch.bool))
    b = integral_images(torch.ones(1, 5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="sizes differ"):
        IntegralImages.cat([a, b])


def test_instances_field(gen):
    masks = edge_case_masks(gen)
    G, H, W = masks.shape
    ii = integral_images(masks)
    inst = Instances((H, W), gt_integral_images=ii, gt_classes=torch.arange(G))
    keep = torch.tensor([True, False] * 4 + [True])
    sub = inst[keep]
    assert torch.equal(sub.gt_integral_images.dense(), ii.dense()[keep])
    one = inst[3]
    assert torch.equal(one.gt_integral_images.dense(), ii.dense()[3:4])
    both = Instances.cat([inst[:4], inst[4:]])
    assert torch.equal(both.gt_integral_images.dense(), ii.dense())
    assert torch.equal(inst.to("cpu").gt_integral_images.areas(), ii.areas())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths_agree(gen):
    masks = edge_case_masks(gen)
    G, H, W = masks.shape
    ii = integral_images(masks)
    boxes = random_boxes(gen, 64, H, W)
    on_gpu = integral_images(masks.cuda())  # the torch path
    assert torch.equal(on_gpu.info.cpu(), ii.info) and torch.equal(on_gpu.data.cpu(), ii.data)
    moved = ii.to("cuda")
    assert torch.equal(moved.box_counts(boxes.cuda()[None]).cpu(), ii.box_counts(boxes[None]))


# ----------------------------------------------------------------- dense integral images
def test_as_integral_images_dense_input(gen):
    masks = edge_case_masks(gen)
    G, H, W = masks.shape
    dense = dense_oracle(masks)
    boxes = random_boxes(gen, 80, H, W)
    ref = integral_images(masks)
    for d in (dense, dense.int()):
        ii = as_integral_images(d, image_size=(H, W))
        assert ii.image_size == (H, W) and len(ii) == G
        assert torch.equal(ii.dense().long(), dense)
        assert torch.equal(ii.areas(), ref.areas())
        assert torch.equal(ii.box_counts(boxes[None]), ref.box_counts(boxes[None]))
    assert as_integral_images(ref) is ref
    assert len(as_integral_images(torch.zeros(0, 3, 4, dtype=torch.long))) == 0


def test_as_integral_images_errors(gen):
    dense = dense_oracle(edge_case_masks(gen))
    row = dense.clone()
    row[0, 0, 3] = 1
    col = dense.clone()
    col[2, 4, 0] = 1
    cases = [
        (row, None, "zero first row and column"),
        (col, None, "zero first row and column"),
        (dense.float(), None, "must be integer"),
        (dense.bool(), None, "must be integer"),
        (dense[0], None, r"\(G, H\+1, W\+1\)"),
        (dense[None], None, r"\(G, H\+1, W\+1\)"),
        (dense, (13, 18), r"are for \(13, 17\) masks, expected \(13, 18\)"),
        (integral_images(torch.zeros(1, 4, 4, dtype=torch.bool)), (4, 5), "expected"),
        ([[0]], None, "got list"),
    ]
    for x, size, msg in cases:
        with pytest.raises(ValueError, match=msg):
            as_integral_images(x, image_size=size)
