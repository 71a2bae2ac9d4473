"""Property tests of the shared blocks: vad_repro.boxes, vad_repro.matching, vad_repro.losses.

Random boxes come from hypothesis (small example counts so the file runs in seconds); every
property is checked against an independent reference: torchvision.ops, exhaustive search, or an
algebraic identity (round trips, symmetry, invariance under flip)."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings, strategies as st

from vad_repro.boxes import (InvalidBoxError, box_area, box_cxcywh_to_xyxy, box_iou, box_iou_np,
                             box_iou_pairwise, box_is_valid, box_xyxy_to_cxcywh, check_boxes, clip_boxes,
                             crop_boxes, denormalize_boxes, generalized_box_iou,
                             generalized_box_iou_pairwise, hflip_boxes, normalize_boxes, resize_boxes)
from vad_repro.losses import (SetCriterion, weighted_sum, giou_loss, l1_box_loss, sigmoid_focal_loss,
                              softmax_focal_loss)
from vad_repro.matching import (HungarianMatcher, batched_hungarian_match, hungarian_match,
                                hungarian_match_with_background)

# derandomize: CI sees the same examples every run; database=None: nothing written into the tree
FAST = settings(max_examples=50, deadline=None, derandomize=True, database=None)


def boxes_strategy(max_n=6, min_n=0, min_side=0.0):
    "Lists of valid xyxy boxes in a 100 x 100 frame; sides >= min_side (0 allows degenerate boxes)."
    side = st.one_of(st.just(min_side), st.floats(min_side, 60.0))
    box = st.tuples(st.floats(0, 100), st.floats(0, 100), side, side)
    return st.lists(box, min_size=min_n, max_size=max_n).map(
        lambda rows: torch.tensor([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float64).reshape(-1, 4))


positive_boxes = boxes_strategy(min_side=0.5)
any_boxes = boxes_strategy()


# ---------------------------------------------------------------- boxes
@FAST
@given(any_boxes)
def test_format_round_trips(b):
    torch.testing.assert_close(box_cxcywh_to_xyxy(box_xyxy_to_cxcywh(b)), b)
    torch.testing.assert_close(denormalize_boxes(normalize_boxes(b, (180, 240)), (180, 240)), b)
    cx, cy, w, h = box_xyxy_to_cxcywh(b).unbind(-1)
    torch.testing.assert_close(w * h, box_area(b))


@FAST
@given(any_boxes, any_boxes)
def test_iou_and_giou_ranges_and_symmetry(a, b):
    iou, giou = box_iou(a, b), generalized_box_iou(a, b)
    assert iou.shape == giou.shape == (len(a), len(b))
    assert torch.isfinite(iou).all() and torch.isfinite(giou).all()
    assert ((iou >= 0) & (iou <= 1 + 1e-12)).all()
    assert ((giou >= -1 - 1e-12) & (giou <= iou + 1e-12)).all()
    torch.testing.assert_close(iou, box_iou(b, a).T)
    torch.testing.assert_close(giou, generalized_box_iou(b, a).T)


@FAST
@given(any_boxes)
def test_iou_diagonal(b):
    """A box with itself: IoU = GIoU = 1 if it has area, 0 (not NaN) if it is degenerate."""
    expected = (box_area(b) > 0).to(b.dtype)
    torch.testing.assert_close(box_iou(b, b).diagonal(), expected)
    torch.testing.assert_close(generalized_box_iou_pairwise(b, b), expected)
    torch.testing.assert_close(giou_loss(b, b), 1 - expected)


@FAST
@given(positive_boxes, positive_boxes)
def test_matches_torchvision_on_valid_boxes(a, b):
    torch.testing.assert_close(box_iou(a, b), torchvision.ops.box_iou(a, b))
    torch.testing.assert_close(generalized_box_iou(a, b), torchvision.ops.generalized_box_iou(a, b))
    np.testing.assert_allclose(box_iou_np(a.numpy(), b.numpy()), torchvision.ops.box_iou(a, b).numpy(), atol=1e-12)


@FAST
@given(any_boxes, any_boxes)
def test_pairwise_is_the_diagonal_and_numpy_agrees(a, b):
    n = min(len(a), len(b))
    torch.testing.assert_close(box_iou_pairwise(a[:n], b[:n]), box_iou(a[:n], b[:n]).diagonal())
    torch.testing.assert_close(generalized_box_iou_pairwise(a[:n], b[:n]), generalized_box_iou(a[:n], b[:n]).diagonal())
    np.testing.assert_allclose(box_iou_np(a.numpy(), b.numpy()), box_iou(a, b).numpy(), atol=1e-12)


# Sides of at least 1e-6 px: a flip translates x by W, and a side far below float resolution at
# that scale (e.g. 5e-170 px at x = 0, W = 160) is rounded away, turning IoU 1 into IoU 0.
@FAST
@given(boxes_strategy(min_side=1e-6), boxes_strategy(min_side=1e-6))
def test_flip_is_an_involution_and_keeps_iou(a, b):
    W = 160.0
    torch.testing.assert_close(hflip_boxes(hflip_boxes(a, W), W), a)
    fa, fb = hflip_boxes(a, W), hflip_boxes(b, W)
    assert box_is_valid(fa).all()
    torch.testing.assert_close(box_area(fa), box_area(a))
    torch.testing.assert_close(box_iou(fa, fb), box_iou(a, b))


@FAST
@given(any_boxes, st.integers(16, 400), st.integers(16, 400))
def test_resize_round_trip_and_normalized_invariance(b, H2, W2):
    H, W = 160, 160
    back = resize_boxes(resize_boxes(b, (H, W), (H2, W2)), (H2, W2), (H, W))
    torch.testing.assert_close(back, b)
    torch.testing.assert_close(normalize_boxes(resize_boxes(b, (H, W), (H2, W2)), (H2, W2)), normalize_boxes(b, (H, W)))


@FAST
@given(any_boxes, st.floats(0, 80), st.floats(0, 80), st.floats(1, 80), st.floats(1, 80))
def test_crop(b, top, left, height, width):
    cropped, keep = crop_boxes(b, top, left, height, width)
    assert cropped.shape == b.shape and keep.shape == (len(b),)
    assert ((cropped[:, [0, 2]] >= 0) & (cropped[:, [0, 2]] <= width)).all()
    assert ((cropped[:, [1, 3]] >= 0) & (cropped[:, [1, 3]] <= height)).all()
    # kept <=> the box overlaps the window with positive area (away from float ties at 0)
    iw = torch.minimum(b[:, 2], torch.tensor(left + width)) - torch.maximum(b[:, 0], torch.tensor(left))
    ih = torch.minimum(b[:, 3], torch.tensor(top + height)) - torch.maximum(b[:, 1], torch.tensor(top))
    clear = (iw.abs() > 1e-9) & (ih.abs() > 1e-9)
    assert (keep[clear] == ((iw > 0) & (ih > 0))[clear]).all()
    # the crop of the full frame is the clip
    full, _ = crop_boxes(b, 0, 0, 100, 100)
    torch.testing.assert_close(full, clip_boxes(b, (100, 100)))


def test_degenerate_and_impossible_boxes():
    pt = torch.tensor([[5., 5., 5., 5.]], requires_grad=True)
    line = torch.tensor([[0., 5., 9., 5.]])
    assert torch.isnan(torchvision.ops.box_iou(pt.detach(), line)).all()   # torchvision: 0/0
    assert box_iou(pt, line).item() == 0 and generalized_box_iou(pt, line).item() == 0
    (generalized_box_iou_pairwise(pt, line).sum() + box_iou(pt, line).sum()).backward()
    assert torch.isfinite(pt.grad).all()
    with pytest.raises(InvalidBoxError, match=r"train.csv row 3: 1 impossible .*row 1"):
        check_boxes(torch.tensor([[0., 0., 1., 1.], [2., 0., 1., 1.]]), where="train.csv row 3")
    with pytest.raises(InvalidBoxError):
        check_boxes(torch.tensor([[0., float("inf"), 1., 1.]]))
    with pytest.raises(ValueError):                                         # InvalidBoxError is a ValueError
        check_boxes(torch.tensor([[0., 0., 1.5, 1.]]), bounds=(1, 1))


def test_empty_box_sets():
    e, b = torch.zeros(0, 4), torch.tensor([[0., 0., 1., 1.]])
    assert box_iou(e, b).shape == (0, 1) and generalized_box_iou(b, e).shape == (1, 0)
    assert box_iou(e, e).shape == (0, 0) and box_iou_np(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 0)
    assert hflip_boxes(e).shape == (0, 4) and crop_boxes(e, 0, 0, 1, 1)[1].shape == (0,)
    assert giou_loss(e, e, "sum").item() == 0 and l1_box_loss(e, e, "sum").item() == 0


# ---------------------------------------------------------------- matching
def brute_force(cost):
    P, G = cost.shape
    if P == 0 or G == 0: return 0.0
    if P >= G: return min(cost[list(r), list(range(G))].sum().item() for r in itertools.permutations(range(P), G))
    return min(cost[list(range(P)), list(c)].sum().item() for c in itertools.permutations(range(G), P))


@FAST
@given(st.integers(0, 5), st.integers(0, 5), st.integers(0, 2**31 - 1))
def test_hungarian_equals_brute_force(P, G, seed):
    cost = torch.rand(P, G, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    pi, gi = hungarian_match(cost)
    assert pi.dtype == gi.dtype == torch.int64 and len(pi) == len(gi) == min(P, G)
    assert len(set(pi.tolist())) == len(set(gi.tolist())) == min(P, G)      # one-to-one
    assert pi.tolist() == sorted(pi.tolist())
    assert math.isclose(cost[pi, gi].sum().item(), brute_force(cost), abs_tol=1e-9)


@FAST
@given(st.lists(st.integers(0, 4), min_size=1, max_size=4), st.integers(0, 6), st.integers(0, 2**31 - 1))
def test_batched_equals_per_sample(sizes, Q, seed):
    costs = torch.rand(len(sizes), Q, sum(sizes), generator=torch.Generator().manual_seed(seed))
    batched = batched_hungarian_match(costs, sizes)
    starts = np.cumsum([0] + sizes[:-1])
    for b, (s, n) in enumerate(zip(starts, sizes)):
        pi, gi = hungarian_match(costs[b, :, s:s + n])
        assert torch.equal(batched[b][0], pi) and torch.equal(batched[b][1], gi)


@FAST
@given(st.integers(1, 5), st.integers(0, 5), st.integers(0, 2**31 - 1))
def test_background_matching_equals_padded_brute_force(P, G, seed):
    """ME-STAD's TLA: P proposals, G <= P actors padded with P - G background objects."""
    G = min(G, P)
    g = torch.Generator().manual_seed(seed)
    cost, bg = torch.rand(P, G, generator=g, dtype=torch.float64), torch.rand(P, generator=g, dtype=torch.float64)
    pi, gi = hungarian_match_with_background(cost, bg)
    assert len(pi) == G                                                      # every actor is assigned
    unmatched = torch.ones(P, dtype=torch.bool)
    unmatched[pi] = False
    padded = torch.cat([cost, bg[:, None].expand(P, P - G)], 1)
    assert math.isclose((cost[pi, gi].sum() + bg[unmatched].sum()).item(), brute_force(padded), abs_tol=1e-9)


@pytest.mark.parametrize("class_cost", ["softmax", "sigmoid", "focal", "bce"])
def test_matcher_index_labels_equal_one_hot_and_empty_targets(class_cost):
    torch.manual_seed(0)
    B, Q, C = 3, 6, 4
    C_out = C + 1 if class_cost == "softmax" else C
    xy = torch.rand(B, Q, 2) * 0.5
    outputs = {"pred_logits": torch.randn(B, Q, C_out), "pred_boxes": torch.cat([xy, xy + 0.05 + torch.rand(B, Q, 2) * 0.4], -1)}
    labels = [torch.tensor([1, 3]), torch.zeros(0, dtype=torch.long), torch.tensor([0, 0, 2])]
    boxes = [outputs["pred_boxes"][b, :len(l)].flip(0) + 0.01 for b, l in enumerate(labels)]
    matcher = HungarianMatcher(class_cost=class_cost)
    by_index = matcher(outputs, [{"labels": l, "boxes": x} for l, x in zip(labels, boxes)])
    by_onehot = matcher(outputs, [{"labels": F.one_hot(l, C).float(), "boxes": x} for l, x in zip(labels, boxes)])
    for (p1, g1), (p2, g2), l in zip(by_index, by_onehot, labels):
        assert torch.equal(p1, p2) and torch.equal(g1, g2) and len(p1) == len(l)
    none = matcher(outputs, [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * B)
    assert all(len(p) == 0 and len(g) == 0 for p, g in none)


# ---------------------------------------------------------------- losses
@FAST
@given(st.integers(0, 2**31 - 1), st.sampled_from([None, 0.25, 0.6]), st.sampled_from([0.0, 1.0, 2.0]))
def test_sigmoid_focal_matches_torchvision(seed, alpha, gamma):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 7, generator=g, dtype=torch.float64) * 4
    targets = (torch.rand(5, 7, generator=g) > 0.6).double()
    ref = torchvision.ops.sigmoid_focal_loss(logits, targets, -1 if alpha is None else alpha, gamma, "sum")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha, gamma, "sum"), ref)
    if alpha is None and gamma == 0:
        torch.testing.assert_close(sigmoid_focal_loss(logits, targets, None, 0.0),
                                   F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))


@FAST
@given(st.integers(0, 2**31 - 1))
def test_softmax_focal_reduces_to_cross_entropy(seed):
    g = torch.Generator().manual_seed(seed)
    logits, target = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3, torch.randint(0, 5, (6,), generator=g)
    torch.testing.assert_close(softmax_focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target, reduction="none"))
    assert (softmax_focal_loss(logits, target, gamma=2.0) <= F.cross_entropy(logits, target, reduction="none") + 1e-12).all()


@pytest.mark.parametrize("class_loss,class_cost", [("focal", "focal"), ("bce", "sigmoid"), ("ce", "softmax")])
def test_set_criterion_empty_and_perfect(class_loss, class_cost):
    torch.manual_seed(0)
    B, Q, C = 2, 4, 3
    C_out = C + 1 if class_loss == "ce" else C
    xy = torch.rand(B, Q, 2) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(B, Q, 2) * 0.4], -1)
    crit = SetCriterion(HungarianMatcher(class_cost=class_cost), class_loss=class_loss)
    logits = torch.randn(B, Q, C_out, requires_grad=True)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * B
    L = crit({"pred_logits": logits, "pred_boxes": boxes}, empty)
    assert L["loss_bbox"].item() == 0 and L["loss_giou"].item() == 0 and L["loss_class"].item() > 0
    weighted_sum(L, crit.weight_dict()).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # targets equal to two of the predicted boxes, uninformative logits: the box losses vanish
    targets = [{"boxes": boxes[b, [2, 0]], "labels": torch.tensor([0, 2])} for b in range(B)]
    L = crit({"pred_logits": torch.zeros(B, Q, C_out), "pred_boxes": boxes}, targets)
    assert L["loss_bbox"].item() < 1e-6 and L["loss_giou"].item() < 1e-6
