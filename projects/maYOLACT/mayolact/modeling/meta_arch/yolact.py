"""YOLACT (and maYOLACT) as a Detectron2 dense detector.

Shape shorthand:
    N: images in the batch; S_h x S_w (S x S): the network input, never padded.
    L: head levels (P3..P7); Hi, Wi: size of level i; A: anchors per location.
    R: anchors of one image over all levels (sum of Hi*Wi*A), level-major, then (y, x, a).
    K: foreground classes (the classifier has K + 1 logits, background last).
    k: prototypes; Hp, Wp: prototype resolution (2x P3).

Training: the anchor matcher labels anchors per image (``label_anchors``), then the losses of
``mayolact.modeling.losses`` are computed: OHEM softmax CE, SmoothL1 boxes (both / P with
P = sum_i max(num_pos_i, 1) over this process's images, like mmdet per GPU), the prototype mask
loss with GT-box crops, and the auxiliary semantic loss.

Inference (docs/REFERENCE.md §9, "Inference"): softmax, per-level top-k by max
foreground score, decode (dw, dh clamped on both sides, boxes clipped to the input), Fast NMS (or
batched NMS), then full-image masks through ``mayolact.modeling.postprocessing.yolact_postprocess``
(never Detectron2's ROI-mask path).
"""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import batched_nms, cat
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.anchor_generator import build_anchor_generator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from mayolact.config.config import resolved_num_classes
from mayolact.modeling.losses import (
    ohem_selection,
    ohem_softmax_cross_entropy,
    positive_normalizer,
    semantic_seg_loss,
    smooth_l1_box_loss,
    yolact_mask_loss,
)
from mayolact.modeling.matchers import build_anchor_matcher
from mayolact.modeling.postprocessing import fast_nms, yolact_postprocess
from mayolact.modeling.protonet import ProtoNet, SemanticSegHead
from mayolact.modeling.yolact_head import YOLACTHead
from mayolact.structures.integral_image import integral_images
from mayolact.utils.profiling import stage

__all__ = ["YOLACT"]


def _current_storage():
    """The active EventStorage, or None outside a training loop."""
    try:
        return get_event_storage()
    except AssertionError:
        return None


@META_ARCH_REGISTRY.register()
class YOLACT(DenseDetector):
    """YOLACT with a pluggable anchor matcher (fixed IoU, ATSS, ATSS with maIoU).

    Inputs follow Detectron2's model contract. Training dicts need ``image`` (C, S, S) and
    ``instances`` with ``gt_boxes``, ``gt_classes`` and ``gt_masks`` (BitMasks (G, S, S)), and
    optionally ``gt_integral_images``. Test dicts need ``image`` and optionally ``height`` and
    ``width``, the output size (default: the input size). Outputs: ``[{"instances": Instances}]``
    with ``pred_boxes``, ``scores``, ``pred_classes`` and ``pred_masks`` bool (n, height, width).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        head_in_features: List[str],
        anchor_generator: nn.Module,
        box2box_transform: Box2BoxTransform,
        anchor_matcher,
        protonet: nn.Module,
        proto_in_feature: str,
        semseg_head: Optional[nn.Module],
        num_classes: int,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        cls_loss_weight: float = 1.0,
        box_loss_weight: float = 1.5,
        smooth_l1_beta: float = 1.0,
        mask_loss_weight: float = 8.0,
        semseg_loss_weight: float = 1.0,
        neg_pos_ratio: float = 3,
        max_masks_train: int = 100,
        test_topk_candidates: int = 1000,
        test_score_thresh: float = 0.05,
        nms_type: str = "fast",
        test_nms_thresh: float = 0.5,
        nms_topk_per_class: int = 200,
        max_detections_per_image: int = 100,
        mask_threshold: float = 0.5,
        input_format: str = "RGB",
        vis_period: int = 0,
    ):
        """
        Args:
            backbone: a Detectron2 Backbone with ``size_divisibility`` 0 (no padding).
            head: the box head (:class:`YOLACTHead`), called on the ``head_in_features`` maps.
            head_in_features: backbone outputs the head runs on, e.g. ["p3", ..., "p7"].
            anchor_generator: gives per-level anchors in the head's (y, x, a) order.
            box2box_transform: the box coder, weights (10, 10, 5, 5).
            anchor_matcher: an :class:`mayolact.modeling.matchers.AnchorMatcher` (the call contract
                of ``ANCHOR_MATCHER_REGISTRY``); the GT masks are passed when its ``needs_masks``.
            protonet: prototypes from ``proto_in_feature``.
            proto_in_feature: backbone output of the protonet and the semantic head ("p3").
            semseg_head: training-only semantic head, or None.
            num_classes: K.
            pixel_mean, pixel_std: input normalisation (RGB for torchvision weights).
            cls_loss_weight, box_loss_weight, smooth_l1_beta, mask_loss_weight,
                semseg_loss_weight, neg_pos_ratio, max_masks_train: see ``MODEL.YOLACT``.
            test_topk_candidates, test_score_thresh, nms_type, test_nms_thresh,
                nms_topk_per_class, max_detections_per_image, mask_threshold: inference options.
            input_format: "RGB" or "BGR", for visualisation.
            vis_period: visualise training every this many iterations (0: never).
        """
        super().__init__(
            backbone, head, head_in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        if len(self.pixel_mean) != len(self.pixel_std):
            raise ValueError(
                "YOLACT: pixel_mean and pixel_std differ in length: "
                f"{len(pixel_mean)} vs {len(pixel_std)}")
        if nms_type not in ("fast", "standard"):
            raise ValueError(f"YOLACT: nms_type must be 'fast' or 'standard', got {nms_type!r}")
        self.anchor_generator = anchor_generator
        self.box2box_transform = box2box_transform
        self.anchor_matcher = anchor_matcher
        self.protonet = protonet
        self.proto_in_feature = proto_in_feature
        self.semseg_head = semseg_head
        self.num_classes = num_classes
        self.num_prototypes = protonet.num_prototypes

        self.cls_loss_weight = cls_loss_weight
        self.box_loss_weight = box_loss_weight
        self.smooth_l1_beta = smooth_l1_beta
        self.mask_loss_weight = mask_loss_weight
        self.semseg_loss_weight = semseg_loss_weight
        self.neg_pos_ratio = neg_pos_ratio
        self.max_masks_train = max_masks_train

        self.test_topk_candidates = test_topk_candidates
        self.test_score_thresh = test_score_thresh
        self.nms_type = nms_type
        self.test_nms_thresh = test_nms_thresh
        self.nms_topk_per_class = nms_topk_per_class
        self.max_detections_per_image = max_detections_per_image
        self.mask_threshold = mask_threshold
        self.input_format = input_format
        self.vis_period = vis_period
        # A mayolact.utils.profiling.StageTimer to time the inference stages (None: not timed).
        self.stage_timer = None

    @classmethod
    def from_config(cls, cfg):
        resolved_num_classes(cfg)  # 0 ("the training set's") must be resolved by load_config
        y = cfg.MODEL.YOLACT
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in list(y.IN_FEATURES) + [y.PROTO_IN_FEATURE] if f not in shapes]
        if missing:
            raise ValueError(
                f"YOLACT: backbone outputs {sorted(shapes)} lack {missing} "
                "(MODEL.YOLACT.IN_FEATURES / PROTO_IN_FEATURE)")
        feature_shapes = [shapes[f] for f in y.IN_FEATURES]
        return {
            "backbone": backbone,
            "head": YOLACTHead(cfg, feature_shapes),
            "head_in_features": list(y.IN_FEATURES),
            "anchor_generator": build_anchor_generator(cfg, feature_shapes),
            "box2box_transform": Box2BoxTransform(
                weights=tuple(y.BBOX_REG_WEIGHTS), scale_clamp=float(y.SCALE_CLAMP)),
            "anchor_matcher": build_anchor_matcher(cfg),
            "protonet": ProtoNet(cfg, shapes[y.PROTO_IN_FEATURE]),
            "proto_in_feature": y.PROTO_IN_FEATURE,
            "semseg_head": (
                SemanticSegHead(cfg, shapes[y.PROTO_IN_FEATURE]) if y.SEMSEG_HEAD else None),
            "num_classes": y.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "cls_loss_weight": y.CLS_LOSS_WEIGHT,
            "box_loss_weight": y.BOX_LOSS_WEIGHT,
            "smooth_l1_beta": y.SMOOTH_L1_BETA,
            "mask_loss_weight": y.MASK_LOSS_WEIGHT,
            "semseg_loss_weight": y.SEMSEG_LOSS_WEIGHT,
            "neg_pos_ratio": y.NEG_POS_RATIO,
            "max_masks_train": y.MAX_MASKS_TRAIN,
            "test_topk_candidates": y.TOPK_CANDIDATES_PER_LEVEL,
            "test_score_thresh": y.SCORE_THRESH_TEST,
            "nms_type": y.NMS_TYPE,
            "test_nms_thresh": y.NMS_THRESH_TEST,
            "nms_topk_per_class": y.NMS_TOPK_PER_CLASS,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_threshold": y.MASK_THRESHOLD,
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
        }

    # ------------------------------------------------------------------ input
    def preprocess_image(self, batched_inputs: List[Dict[str, Tensor]]) -> ImageList:
        """Normalise and batch the images WITHOUT padding (all must share one size).

        Raises:
            ValueError: an image is not (C, H, W) with C = len(pixel_mean), or sizes differ.
        """
        if len(batched_inputs) == 0:
            raise ValueError("YOLACT: empty batch")
        channels = self.pixel_mean.shape[0]
        images = []
        for i, x in enumerate(batched_inputs):
            if "image" not in x:
                raise ValueError(f"YOLACT: input {i} has no 'image'")
            img = x["image"]
            if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] != channels:
                shape = tuple(img.shape) if hasattr(img, "shape") else type(img).__name__
                raise ValueError(
                    f"YOLACT: image {i} must be a ({channels}, H, W) tensor, got {shape}")
            images.append(img)
        sizes = {tuple(img.shape[-2:]) for img in images}
        if len(sizes) != 1:
            raise ValueError(
                "YOLACT: all images of a batch must have the same S x S size (no padding), "
                f"got {sorted(sizes)}")
        images = [(self._move_to_current_device(img).float() - self.pixel_mean) / self.pixel_std
                  for img in images]
        return ImageList.from_tensors(images, 0, padding_constraints=None)

    # ---------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        """
        Args:
            batched_inputs (list[dict]): see the class docstring.

        Returns:
            dict[str, Tensor] of losses in training; list[dict] with "instances" at test time.
        """
        images, head_features, predictions, proto_features, prototypes = self._run_network(
            batched_inputs)

        if self.training:
            gt_instances = self._gt_instances(batched_inputs)
            semseg_logits = None
            if self.semseg_head is not None:
                semseg_logits = self.semseg_head(proto_features)
            losses = self.forward_training(
                images, head_features, predictions, gt_instances,
                prototypes=prototypes, semseg_logits=semseg_logits,
            )
            storage = _current_storage()
            if self.vis_period > 0 and storage is not None and storage.iter % self.vis_period == 0:
                with torch.no_grad():
                    results = self.forward_inference(
                        images, head_features, [[p.detach() for p in ps] for ps in predictions],
                        prototypes.detach(),
                    )
                for r in results:
                    r.remove("pred_coeffs")
                self.visualize_training(batched_inputs, results)
            return losses

        results = self.forward_inference(images, head_features, predictions, prototypes)
        processed = []
        for i, (r, x) in enumerate(zip(results, batched_inputs)):
            height = x.get("height", images.image_sizes[i][0])
            width = x.get("width", images.image_sizes[i][1])
            with stage(self.stage_timer, "masks"):
                processed.append({"instances": yolact_postprocess(
                    r, prototypes[i], height, width, mask_threshold=self.mask_threshold)})
        return processed

    def _run_network(self, batched_inputs: List[Dict[str, Tensor]]):
        """Backbone, head and protonet on a batch: (images, head features, predictions, protonet
        input, prototypes), as :meth:`forward` and :meth:`per_anchor_losses` use them."""
        with stage(self.stage_timer, "pre-process"):
            images = self.preprocess_image(batched_inputs)
        with stage(self.stage_timer, "backbone + FPN"):
            features = self.backbone(images.tensor)
        with stage(self.stage_timer, "head + protonet"):
            head_features = [features[f] for f in self.head_in_features]
            predictions = self.head(head_features)
            proto_features = features[self.proto_in_feature]
            prototypes = self.protonet(proto_features)
        return images, head_features, predictions, proto_features, prototypes

    def _gt_instances(self, batched_inputs: List[Dict[str, Tensor]]) -> List[Instances]:
        missing = [i for i, x in enumerate(batched_inputs) if "instances" not in x]
        if missing:
            raise ValueError(f"YOLACT: training inputs {missing} have no 'instances'")
        return [x["instances"].to(self.device) for x in batched_inputs]

    # --------------------------------------------------------------- training
    def per_anchor_losses(self, batched_inputs: List[Dict[str, Tensor]],
                          anchor_matcher=None) -> Dict[str, Tensor]:
        """The training losses of every anchor of a batch, before any weighting or reduction.

        The training forward itself (network, anchors, :meth:`label_anchors` and the loss
        functions of :meth:`losses`, with ``reduction="none"``), in the model's current mode; for
        analysis, e.g. the paper's Figure 2 (:mod:`mayolact.analysis.losses`). The training losses
        are these values reduced: ``loss_cls = cls_loss_weight * sum(loss_cls[cls_selected]) / P``,
        ``loss_box_reg = box_loss_weight * sum(loss_box_reg) / P`` and, when no image has more
        than ``max_masks_train`` positives, ``loss_mask = mask_loss_weight * sum(loss_mask) / T``
        with T the number of positives (at least 1).

        Args:
            batched_inputs (list[dict]): N training inputs (``image`` and ``instances``).
            anchor_matcher: labels the anchors instead of the model's matcher (same call contract,
                see ``ANCHOR_MATCHER_REGISTRY``).

        Returns:
            dict[str, Tensor]: ``anchors`` (R, 4), levels concatenated; ``labels`` and
            ``matched_idxs`` (N, R) of :meth:`label_anchors`; ``loss_cls`` (N, R) softmax CE (0
            where ignored) and ``cls_selected`` (N, R) bool, the anchors OHEM keeps;
            ``loss_box_reg`` (N, R) SmoothL1 summed over the 4 deltas and ``loss_mask`` (N, R), both
            0 off the positives; ``normalizer``, P.
        """
        images, head_features, predictions, _, prototypes = self._run_network(batched_inputs)
        return self.forward_training(
            images, head_features, predictions, self._gt_instances(batched_inputs),
            prototypes=prototypes, anchor_matcher=anchor_matcher, reduction="none",
        )

    def forward_training(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
        gt_instances: List[Instances],
        prototypes: Optional[Tensor] = None,
        semseg_logits: Optional[Tensor] = None,
        anchor_matcher=None,
        reduction: str = "sum",
    ) -> Dict[str, Tensor]:
        """
        Args:
            images (ImageList): the batch, tensor (N, C, S_h, S_w).
            features (list[Tensor]): the L head input maps.
            predictions: the head's (logits, deltas, coeffs), each L tensors (N, A*D, Hi, Wi).
            gt_instances (list[Instances]): N ground truths on the model's device.
            prototypes (Tensor): (N, k, Hp, Wp).
            semseg_logits (Tensor or None): (N, K, H3, W3).
            anchor_matcher: see :meth:`label_anchors`.
            reduction (str): see :meth:`losses`.

        Returns:
            dict[str, Tensor]: loss_cls, loss_box_reg, loss_mask and (with the semantic head)
            loss_semseg; with ``reduction="none"`` see :meth:`per_anchor_losses`.
        """
        image_size = tuple(images.tensor.shape[-2:])
        for i, inst in enumerate(gt_instances):
            for field in ("gt_boxes", "gt_classes", "gt_masks"):
                if not inst.has(field):
                    raise ValueError(f"YOLACT: training instances of image {i} lack '{field}'")
            if tuple(inst.gt_masks.tensor.shape[-2:]) != image_size:
                raise ValueError(
                    f"YOLACT: gt_masks of image {i} are {tuple(inst.gt_masks.tensor.shape[-2:])}, "
                    f"the image is {image_size}")
        logits, deltas, coeffs = self._transpose_dense_predictions(
            predictions, [self.num_classes + 1, 4, self.num_prototypes])
        anchors = self.anchor_generator(features)
        gt_labels, matched_idxs = self.label_anchors(anchors, gt_instances, anchor_matcher)
        return self.losses(
            anchors, logits, deltas, coeffs, gt_labels, matched_idxs, gt_instances,
            prototypes, semseg_logits, image_size, reduction=reduction,
        )

    @torch.no_grad()
    def label_anchors(
        self, anchors: List[Boxes], gt_instances: List[Instances], anchor_matcher=None
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Assign each anchor of each image a class target and a GT.

        Args:
            anchors (list[Boxes]): L levels of anchors (Hi*Wi*A, 4), the same for all images.
            gt_instances (list[Instances]): N ground truths.
            anchor_matcher: a matcher to use instead of the model's (same call contract).

        Returns:
            gt_labels (list[Tensor]): N int64 (R,) in {-1 ignore, 0..K-1 foreground, K background}.
            matched_idxs (list[Tensor]): N int64 (R,), the GT index of each anchor (meaningful only
                for foreground anchors).
        """
        matcher = self.anchor_matcher if anchor_matcher is None else anchor_matcher
        num_anchors = sum(len(a) for a in anchors)
        gt_labels, matched_idxs = [], []
        for inst in gt_instances:
            if len(inst) == 0:
                gt_labels.append(torch.full((num_anchors,), self.num_classes, dtype=torch.int64,
                                            device=self.device))
                matched_idxs.append(
                    torch.zeros((num_anchors,), dtype=torch.int64, device=self.device))
                continue
            kwargs = {}
            if matcher.needs_masks:
                masks = inst.gt_masks.tensor
                if inst.has("gt_integral_images"):
                    ii = inst.gt_integral_images
                else:  # the mapper did not precompute them (INPUT.YOLACT.INTEGRAL_IMAGES off)
                    ii = integral_images(masks)
                kwargs = {"integral_masks": ii, "gt_masks": masks}
            matches, match_labels = matcher(anchors, inst.gt_boxes, **kwargs)
            labels = inst.gt_classes[matches].clone()
            labels[match_labels == 0] = self.num_classes
            labels[match_labels == -1] = -1
            gt_labels.append(labels)
            matched_idxs.append(matches)
        return gt_labels, matched_idxs

    def losses(
        self,
        anchors: List[Boxes],
        logits: List[Tensor],
        deltas: List[Tensor],
        coeffs: List[Tensor],
        gt_labels: List[Tensor],
        matched_idxs: List[Tensor],
        gt_instances: List[Instances],
        prototypes: Tensor,
        semseg_logits: Optional[Tensor],
        image_size: Tuple[int, int],
        reduction: str = "sum",
    ) -> Dict[str, Tensor]:
        """
        Args:
            anchors (list[Boxes]): L levels.
            logits, deltas, coeffs (list[Tensor]): L tensors (N, Hi*Wi*A, K+1 / 4 / k).
            gt_labels, matched_idxs: see :meth:`label_anchors`.
            gt_instances (list[Instances]): N ground truths.
            prototypes (Tensor): (N, k, Hp, Wp).
            semseg_logits (Tensor or None): (N, K, H3, W3).
            image_size (tuple[int, int]): (S_h, S_w).
            reduction (str): "sum": the weighted training losses; "none": every anchor's
                unweighted terms, before OHEM, the mask subset and the normaliser (see
                :meth:`per_anchor_losses`).

        Returns:
            dict[str, Tensor]: the weighted losses ("sum"), or the per-anchor terms ("none").
        """
        if reduction not in ("sum", "none"):
            raise ValueError(f"YOLACT.losses: reduction must be 'sum' or 'none', got {reduction!r}")
        num_images = len(gt_labels)
        labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = (labels >= 0) & (labels < self.num_classes)
        normalizer = positive_normalizer(labels, self.num_classes)
        if reduction == "none":
            return self._per_anchor_terms(
                anchors, logits, deltas, coeffs, labels, torch.stack(matched_idxs), gt_instances,
                prototypes, image_size, normalizer)
        num_pos = pos_mask.sum()
        storage = _current_storage()
        if storage is not None:
            storage.put_scalar("num_pos_anchors", num_pos.item() / num_images)

        loss_cls = ohem_softmax_cross_entropy(
            cat(logits, dim=1), labels, neg_pos_ratio=self.neg_pos_ratio, normalizer=normalizer
        ) * self.cls_loss_weight

        matched = torch.stack(matched_idxs)  # (N, R)
        pos_anchors, target_boxes = self._positive_targets(anchors, pos_mask, matched, gt_instances)
        loss_box = smooth_l1_box_loss(
            cat(deltas, dim=1)[pos_mask], pos_anchors, target_boxes,
            self.box2box_transform, beta=self.smooth_l1_beta, normalizer=normalizer,
            loss_weight=self.box_loss_weight,
        )

        all_coeffs = cat(coeffs, dim=1)  # (N, R, k)
        gt_masks = [x.gt_masks.tensor for x in gt_instances]
        loss_mask = yolact_mask_loss(
            prototypes,
            [all_coeffs[i][pos_mask[i]] for i in range(num_images)],
            [matched[i][pos_mask[i]] for i in range(num_images)],
            gt_masks,
            [x.gt_boxes.tensor for x in gt_instances],
            image_size,
            max_masks=self.max_masks_train,
            loss_weight=self.mask_loss_weight,
        )
        out = {"loss_cls": loss_cls, "loss_box_reg": loss_box, "loss_mask": loss_mask}
        if semseg_logits is not None:
            out["loss_semseg"] = semantic_seg_loss(
                semseg_logits, gt_masks, [x.gt_classes for x in gt_instances],
                loss_weight=self.semseg_loss_weight,
            )
        return out

    @staticmethod
    def _positive_targets(anchors: List[Boxes], pos_mask: Tensor, matched: Tensor,
                          gt_instances: List[Instances]) -> Tuple[Tensor, Tensor]:
        """The positives' anchors and matched GT boxes, (M, 4) each, in ``pos_mask`` order."""
        img_idx, anchor_idx = pos_mask.nonzero(as_tuple=True)
        gt_counts = torch.tensor([len(x) for x in gt_instances], device=pos_mask.device)
        gt_offsets = torch.cumsum(gt_counts, 0) - gt_counts
        all_gt_boxes = cat([x.gt_boxes.tensor for x in gt_instances], dim=0)
        target_boxes = all_gt_boxes[gt_offsets[img_idx] + matched[img_idx, anchor_idx]]
        return Boxes.cat(anchors).tensor[anchor_idx], target_boxes

    def _per_anchor_terms(self, anchors, logits, deltas, coeffs, labels, matched, gt_instances,
                          prototypes, image_size, normalizer) -> Dict[str, Tensor]:
        """``losses(reduction="none")``: the loss functions' per-anchor values, unweighted."""
        num_images = labels.shape[0]
        pos_mask = (labels >= 0) & (labels < self.num_classes)
        loss_cls = ohem_softmax_cross_entropy(cat(logits, dim=1), labels, reduction="none")
        pos_anchors, target_boxes = self._positive_targets(anchors, pos_mask, matched, gt_instances)
        loss_box = loss_cls.new_zeros(labels.shape)
        loss_box[pos_mask] = smooth_l1_box_loss(
            cat(deltas, dim=1)[pos_mask], pos_anchors, target_boxes, self.box2box_transform,
            beta=self.smooth_l1_beta, reduction="none")
        all_coeffs = cat(coeffs, dim=1)  # (N, R, k)
        loss_mask = loss_cls.new_zeros(labels.shape)
        loss_mask[pos_mask] = cat(yolact_mask_loss(
            prototypes,
            [all_coeffs[i][pos_mask[i]] for i in range(num_images)],
            [matched[i][pos_mask[i]] for i in range(num_images)],
            [x.gt_masks.tensor for x in gt_instances],
            [x.gt_boxes.tensor for x in gt_instances],
            image_size,
            reduction="none",
        ))
        return {
            "anchors": Boxes.cat(anchors).tensor,
            "labels": labels,
            "matched_idxs": matched,
            "loss_cls": loss_cls,
            "cls_selected": ohem_selection(loss_cls.detach(), labels, self.num_classes,
                                           self.neg_pos_ratio),
            "loss_box_reg": loss_box,
            "loss_mask": loss_mask,
            "normalizer": normalizer,
        }

    # -------------------------------------------------------------- inference
    def forward_inference(
        self,
        images: ImageList,
        features: List[Tensor],
        predictions: Tuple[List[Tensor], List[Tensor], List[Tensor]],
        prototypes: Optional[Tensor] = None,
    ) -> List[Instances]:
        """Detections in input pixels, before mask assembly.

        Returns:
            list[Instances]: N results with image_size (S_h, S_w), ``pred_boxes``, ``scores``,
            ``pred_classes`` and ``pred_coeffs`` (n, k).
        """
        with stage(self.stage_timer, "top-k + decode"):
            logits, deltas, coeffs = self._transpose_dense_predictions(
                predictions, [self.num_classes + 1, 4, self.num_prototypes])
            anchors = self.anchor_generator(features)
        return [
            self.inference_single_image(
                anchors, [x[i] for x in logits], [x[i] for x in deltas], [x[i] for x in coeffs],
                tuple(image_size),
            )
            for i, image_size in enumerate(images.image_sizes)
        ]

    def decode_boxes(self, deltas: Tensor, anchors: Tensor, image_size: Tuple[int, int]) -> Tensor:
        """Decode deltas as mmdet does at test time: dw, dh clamped to +-scale_clamp, then clip.

        Args:
            deltas (Tensor): (n, 4) encoded deltas.
            anchors (Tensor): (n, 4).
            image_size (tuple[int, int]): (S_h, S_w) to clip to.

        Returns:
            Tensor: float32 (n, 4) boxes.
        """
        deltas = deltas.float()
        _, _, ww, wh = self.box2box_transform.weights
        low = -self.box2box_transform.scale_clamp
        deltas = torch.cat([
            deltas[:, :2], deltas[:, 2:3].clamp(min=low * ww), deltas[:, 3:4].clamp(min=low * wh)
        ], dim=1)
        boxes = Boxes(self.box2box_transform.apply_deltas(deltas, anchors))
        boxes.clip(image_size)
        return boxes.tensor

    def inference_single_image(
        self,
        anchors: List[Boxes],
        logits: List[Tensor],
        deltas: List[Tensor],
        coeffs: List[Tensor],
        image_size: Tuple[int, int],
    ) -> Instances:
        """
        Args:
            anchors (list[Boxes]): L levels (Hi*Wi*A, 4).
            logits, deltas, coeffs (list[Tensor]): L tensors (Hi*Wi*A, K+1 / 4 / k) of one image.
            image_size (tuple[int, int]): (S_h, S_w).

        Returns:
            Instances: see :meth:`forward_inference`.
        """
        with stage(self.stage_timer, "top-k + decode"):
            boxes_all, scores_all, coeffs_all = [], [], []
            for anc, lg, dl, cf in zip(anchors, logits, deltas, coeffs):
                scores = lg.float().softmax(dim=-1)
                anc = anc.tensor
                if 0 < self.test_topk_candidates < scores.shape[0]:
                    keep = scores[:, :-1].max(dim=1).values.topk(self.test_topk_candidates).indices
                    scores, dl, cf, anc = scores[keep], dl[keep], cf[keep], anc[keep]
                boxes_all.append(self.decode_boxes(dl, anc, image_size))
                scores_all.append(scores[:, :-1])
                coeffs_all.append(cf.float())
            boxes, scores, coeffs_cat = cat(boxes_all), cat(scores_all), cat(coeffs_all)
        with stage(self.stage_timer, "NMS"):
            return self._nms(boxes, scores, coeffs_cat, image_size)

    def _nms(
        self, boxes: Tensor, scores: Tensor, coeffs_cat: Tensor, image_size: Tuple[int, int]
    ) -> Instances:
        """Fast NMS (or batched NMS) of one image's candidates.

        Args:
            boxes (Tensor): (n, 4) decoded boxes; scores (Tensor): (n, K); coeffs_cat: (n, k).
            image_size (tuple[int, int]): (S_h, S_w).

        Returns:
            Instances: see :meth:`forward_inference`.
        """
        if self.nms_type == "fast":
            boxes, scores, classes, coeffs_cat = fast_nms(
                boxes, scores, coeffs_cat,
                iou_threshold=self.test_nms_thresh, score_threshold=self.test_score_thresh,
                top_k=self.nms_topk_per_class, max_num=self.max_detections_per_image,
            )
        else:
            anchor_idx, classes = (scores > self.test_score_thresh).nonzero(as_tuple=True)
            cand_scores = scores[anchor_idx, classes]
            keep = batched_nms(boxes[anchor_idx], cand_scores, classes, self.test_nms_thresh)
            if self.max_detections_per_image > 0:
                keep = keep[: self.max_detections_per_image]
            boxes, scores, classes = boxes[anchor_idx[keep]], cand_scores[keep], classes[keep]
            coeffs_cat = coeffs_cat[anchor_idx[keep]]
        return Instances(
            image_size, pred_boxes=Boxes(boxes), scores=scores, pred_classes=classes,
            pred_coeffs=coeffs_cat,
        )
