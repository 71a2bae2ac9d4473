"""Evaluation protocols: hand-computed APs, reliability, and a property test against a plain loop reference."""
from __future__ import annotations

import heapq
import os
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from vad_repro.evaluation import evaluate_ava, frame_map, read_ava_csv, voc_folder_map, write_ava_csv
from vad_repro.evaluation.video_map import Tube, tube_iou, video_map

LABELMAP = "".join(f'item {{\n  name: "c{i}"\n  id: {i}\n}}\n' for i in (1, 2, 3))


def _files(tmp: Path, gt: str, det: str, excluded: str | None = None):
    (tmp / "lm.pbtxt").write_text(LABELMAP)
    (tmp / "gt.csv").write_text(gt)
    (tmp / "det.csv").write_text(det)
    if excluded is not None: (tmp / "ex.csv").write_text(excluded)
    return tmp / "gt.csv", tmp / "det.csv", tmp / "lm.pbtxt", (tmp / "ex.csv" if excluded is not None else None)


# ----------------------------------------------------------------- hand-computed APs
def test_duplicates_and_class_without_gt(tmp_path):
    gt, det, lm, _ = _files(tmp_path, "v,0902,0,0,0.5,0.5,1,0\nv,0902,0.5,0.5,1,1,1,1\n",
                            "v,0902,0,0,0.5,0.5,1,0.9\nv,0902,0,0,0.5,0.5,1,0.8\nv,0902,0.5,0.5,1,1,1,0.7\n"
                            "v,0902,0.5,0.5,1,1,3,0.7\n")
    r = evaluate_ava(gt, det, lm)
    # TP, duplicate FP, TP over 2 GT: P = 1, 1/2, 2/3 at R = 1/2, 1/2, 1 -> 1/2 + 1/2 * 2/3
    assert r["per_class"]["c1"] == pytest.approx(5 / 6, abs=1e-12)
    assert math.isnan(r["per_class"]["c2"]) and math.isnan(r["per_class"]["c3"])
    assert r["mAP"] == pytest.approx(5 / 6, abs=1e-12)


def test_ties_follow_the_official_heap(tmp_path):
    """Equal scores: the official heap orders the two rows by tuple whatever their file order (the TP box,
    y1 = 0, first), then np.argsort of the equal scores decides the ranking."""
    gt = "v,0902,0,0,0.5,0.5,1,0\n"
    tp, fp = "v,0902,0,0,0.5,0.5,1,0.5\n", "v,0902,0.5,0.5,1,1,1,0.5\n"
    expected = 1.0 if np.argsort(np.array([0.5, 0.5]))[::-1][0] == 0 else 0.5
    assert evaluate_ava(*_files(tmp_path, gt, tp + fp)[:3])["mAP"] == expected
    assert evaluate_ava(*_files(tmp_path, gt, fp + tp)[:3])["mAP"] == expected
    # at the top-k boundary the earlier of two tied rows stays (a later one must score strictly higher)
    assert evaluate_ava(*_files(tmp_path, gt, tp + fp)[:3], top_k=1)["mAP"] == 1.0
    assert evaluate_ava(*_files(tmp_path, gt, fp + tp)[:3], top_k=1)["mAP"] == 0.0


def test_excluded_timestamps_and_empty_detections(tmp_path):
    gt = "v,0902,0,0,0.5,0.5,2,0\nv,0903,0,0,0.5,0.5,2,0\n"
    det = "v,0902,0,0,0.5,0.5,2,0.9\nv,0903,0.5,0.5,1,1,2,0.95\n"
    args = _files(tmp_path, gt, det, "v,0903\n")
    # without the exclusion: FP (0.95) then TP over 2 GT -> 1/2 * 1/2 = 1/4
    assert evaluate_ava(*args[:3])["per_class"]["c2"] == pytest.approx(0.25)
    r = evaluate_ava(*args)
    assert r["per_class"]["c2"] == 1.0 and r["gt_rows_excluded"] == 1 and r["det_rows_excluded"] == 1
    (tmp_path / "none.csv").write_text("")
    r = evaluate_ava(args[0], tmp_path / "none.csv", args[2])
    assert r["per_class"]["c2"] == 0.0 and r["mAP"] == 0.0


def test_top_k_keeps_the_best_rows_per_keyframe(tmp_path):
    gt = "v,0902,0,0,0.5,0.5,1,0\n"
    det = "v,0902,0.5,0.5,1,1,1,0.9\nv,0902,0,0,0.5,0.5,1,0.8\n"   # the TP ranks second
    args = _files(tmp_path, gt, det)[:3]
    assert evaluate_ava(*args)["mAP"] == 0.5
    r = evaluate_ava(*args, top_k=1)
    assert r["mAP"] == 0.0 and r["det_rows_beyond_top_k"] == 1


def test_timestamps_name_the_same_keyframe(tmp_path):
    args = _files(tmp_path, "v,0902,0,0,0.5,0.5,1,0\n", "v,902.0,0,0,0.5,0.5,1,0.9\n")[:3]
    assert evaluate_ava(*args)["mAP"] == 1.0


# ----------------------------------------------------------------- reliability
@pytest.mark.parametrize("row, message", [
    ("v,0902,0,0,0.5\n", "expected"),
    ("v,0902,0,zero,0.5,0.5,1,0.9\n", "not a number"),
    ("v,0902,0.6,0,0.5,0.5,1,0.9\n", "impossible box"),
    ("v,0902,0,0,1.5,0.5,1,0.9\n", "[0, 1]"),
    ("v,0902,0,0,0.5,0.5,1,nan\n", "finite"),
])
def test_malformed_rows_name_file_and_line(tmp_path, row, message):
    good = "v,0902,0,0,0.5,0.5,1,0.9\n"
    args = _files(tmp_path, "v,0902,0,0,0.5,0.5,1,0\n", good + row)[:3]
    with pytest.raises(ValueError, match=r"det\.csv:2: .*") as e: evaluate_ava(*args)
    assert message in str(e.value)
    r = evaluate_ava(*args, lenient=True)
    assert r["malformed_rows"] == 1 and "det.csv:2" in r["malformed"][0] and r["mAP"] == 1.0


# ----------------------------------------------------------------- the Arrow fast path of the CSV reader
def _same_rows(a, b):
    assert a.videos == b.videos and a.malformed == b.malformed
    for f in ("video", "timestamp", "boxes", "action", "line"): np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_array_equal(a.last, b.last)                    # NaN (keyframe-only rows) equal NaN


@pytest.mark.parametrize("chunk_bytes", [1 << 21, 64, 5])
def test_arrow_and_exact_readers_give_identical_arrays(tmp_path, chunk_bytes):
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(1)
    rows = [f"vid{i % 4},{900 + i // 9:04d},{x1:.3f},{y1:.3f},{x1 + w:.3f},{y1 + h:.3f},{1 + i % 80},{float(s)!r}"
            for i, (x1, y1, w, h, s) in enumerate(zip(*(rng.random((4, 300)) / 2), rng.random(300)))]
    rows[10] = "vid0,0901"                                             # keyframe-only row
    rows[20] = rows[20].rsplit(",", 1)[0] + ",1e-3"                    # exponent
    rows[30] = " vid9 , 902.0,0,0,1.,1,3, 0.5"                         # spaces
    rows[40] = rows[40] + "\r"                                         # CRLF line
    rows[50] = rows[50] + "\r" + rows[51]                              # lone CR: one malformed line
    rows[60] = ""                                                      # blank line
    rows[70] = "vid1,0950,0,0,0,0,5,-0.0"                              # zero-area box, score -0
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n", newline="")
    fast = read_ava_csv(tmp_path / "d.csv", lenient=True, chunk_bytes=chunk_bytes)
    exact = read_ava_csv(tmp_path / "d.csv", lenient=True, chunk_bytes=chunk_bytes, arrow=False)
    _same_rows(fast, exact)
    assert len(fast.malformed) == 1 and "d.csv:51:" in fast.malformed[0]
    assert len(fast.line) == 300 - 2 and fast.action[fast.line == 11].tolist() == [-1]


@pytest.mark.parametrize("row, message", [
    ("v,0902,0.6,0,0.5,0.5,1,0.9", "impossible box"), ("v,0902,0,0,1.5,0.5,1,0.9", "coordinates must lie in [0, 1]"),
    ("v,0902,0,0,0.5,0.5,1,inf", "not a finite number"), ("v,0902,0,0,0.5,0.5,1.5,0.9", "not an integer"),
    ("v,0902,0,0,0.5,0.5", "expected 2 or 7 or 8 columns, got 6"), ("v,0902,0,0,0.5,0.5,1,0.9,7", "got 9"),
    ("v,0902,0,0,0.5,0.5,1,", "not a number")])
def test_arrow_path_errors_name_file_and_line(tmp_path, row, message):
    pytest.importorskip("pyarrow")
    good = "".join(f"v,{902 + i},0,0,0.5,0.5,1,0.{i + 1}\n" for i in range(200))
    (tmp_path / "d.csv").write_text(good + row + "\n" + good)
    with pytest.raises(ValueError, match=r"d\.csv:201: ") as e: read_ava_csv(tmp_path / "d.csv")
    assert message in str(e.value)
    lenient = read_ava_csv(tmp_path / "d.csv", lenient=True)
    assert len(lenient.line) == 400 and len(lenient.malformed) == 1 and lenient.line[-1] == 401


def test_unknown_classes_are_counted(tmp_path):
    args = _files(tmp_path, "v,0902,0,0,0.5,0.5,1,0\nv,0902,0,0,0.5,0.5,77,0\n",
                  "v,0902,0,0,0.5,0.5,1,0.9\nv,0902,0,0,0.5,0.5,77,0.9\nv,0902,0,0,0.5,0.5,78,0.9\n")[:3]
    r = evaluate_ava(*args)
    assert (r["gt_rows_unknown_class"], r["det_rows_unknown_class"], r["mAP"]) == (1, 2, 1.0)


def test_write_then_read_round_trip(tmp_path):
    rows = [("vid_a", 902, 0.1, 0.2, 0.3, 0.4, 12, 0.5), ("vid_b", 1798, 0.0, 0.0, 1.0, 1.0, 80, 0.125)]
    assert write_ava_csv(tmp_path / "d.csv", rows) == 2
    r = read_ava_csv(tmp_path / "d.csv")
    assert r.videos == ["vid_a", "vid_b"] and r.action.tolist() == [12, 80]
    np.testing.assert_array_equal(r.boxes, [[0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]])
    np.testing.assert_array_equal(r.last, [0.5, 0.125])


# ----------------------------------------------------------------- property test: a plain loop reference
def reference_ava(gt_rows, det_rows, class_ids, excluded=(), top_k=50, thr=0.5):
    """The official rules written as plainly as possible: per keyframe a heapq of (score, action, y1, x1, y2,
    x2) tuples and a stable sort on -score, keyframes in first-appearance order, per keyframe and class the
    greedy VOC match, per class np.argsort of the concatenated scores. Rows: (video, t, x1, y1, x2, y2,
    action, score/person) in file order."""
    excluded = set(excluded)
    def read(rows, capacity):
        entries = {}
        for r in rows:
            if r[6] not in class_ids: continue
            heap, t = entries.setdefault((r[0], r[1]), []), (r[7], r[6], r[3], r[2], r[5], r[4])
            if capacity < 1 or len(heap) < capacity: heapq.heappush(heap, t)
            elif t[0] > heap[0][0]: heapq.heapreplace(heap, t)
        return {key: sorted(heap, key=lambda t: -t[0]) for key, heap in entries.items()}
    gt_keys = {(r[0], r[1]) for r in gt_rows}
    gt, det = read(gt_rows, 0), read(det_rows, top_k)
    def iou(a, b):                                                  # tuples: (score, action, y1, x1, y2, x2)
        h, w = min(a[4], b[4]) - max(a[2], b[2]), min(a[5], b[5]) - max(a[3], b[3])
        inter = h * w if h >= 0 and w >= 0 else 0.0
        return inter / ((a[4] - a[2]) * (a[5] - a[3]) + (b[4] - b[2]) * (b[5] - b[3]) - inter)
    num_gt = {c: sum(t[1] == c for key, ts in gt.items() if key not in excluded for t in ts) for c in class_ids}
    scores, flags = {c: [] for c in class_ids}, {c: [] for c in class_ids}
    for key, dets in det.items():                                   # dict order: first appearance in the file
        if key not in gt_keys or key in excluded: continue
        for c in class_ids:
            boxes = [t for t in gt.get(key, []) if t[1] == c]
            taken = set()
            for t in dets:
                if t[1] != c or not (t[2] < t[4] and t[3] < t[5]): continue   # invalid boxes removed
                hit = False
                if boxes:
                    ious = [iou(t, g) for g in boxes]
                    j = int(np.argmax(ious))
                    if ious[j] >= thr and j not in taken: taken.add(j); hit = True
                scores[c].append(t[0]); flags[c].append(hit)
    aps = {}
    for c in class_ids:
        if num_gt[c] == 0: aps[c] = math.nan; continue
        ranked = np.array(flags[c], bool)[np.argsort(np.array(scores[c], float))[::-1]]
        tp, prec, rec = 0, [], []
        for i, f in enumerate(ranked, 1):
            tp += int(f); prec.append(tp / i); rec.append(tp / num_gt[c])
        ap, prev_r = 0.0, 0.0
        for i in range(len(prec)):
            ap += (rec[i] - prev_r) * max(prec[i:]); prev_r = rec[i]
        aps[c] = ap
    valid = [a for a in aps.values() if not math.isnan(a)]
    return (sum(valid) / len(valid) if valid else math.nan), aps


KEYFRAMES = [("v", 902), ("v", 903), ("w", 902)]
# a few boxes whose pairwise IoUs straddle 0.5 (0.8, 0.43, 0.25, ...), one degenerate
boxes = st.sampled_from([(0, 0, .5, .5), (0, 0, .5, .4), (.2, 0, .7, .5), (0, 0, 1, 1), (.5, .5, 1, 1), (.5, .5, .5, 1)])
classes = st.sampled_from([1, 2, 2, 9])                             # 9 is not in the label map
gt_rows = st.tuples(st.sampled_from(KEYFRAMES), boxes, classes).map(lambda t: (*t[0], *t[1], t[2], 0))
det_rows = st.tuples(st.sampled_from(KEYFRAMES), boxes, classes, st.integers(0, 6)).map(
    lambda t: (*t[0], *t[1], t[2], t[3] / 6))                        # few distinct scores: many ties
workloads = st.tuples(st.lists(gt_rows, min_size=1, max_size=8), st.lists(det_rows, min_size=4, max_size=30),
                      st.lists(st.sampled_from(KEYFRAMES), max_size=1), st.sampled_from([2, 50]))


def _csv(rows, score_fmt):
    return "".join(f"{v},{t:04d},{x1},{y1},{x2},{y2},{a},{s:{score_fmt}}\n" for v, t, x1, y1, x2, y2, a, s in rows)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workloads)
def test_ava_matches_loop_reference(tmp_path, workload):
    gt, det, excluded, top_k = workload
    (tmp_path / "lm.pbtxt").write_text(LABELMAP)
    (tmp_path / "g.csv").write_text(_csv(gt, "d"))
    (tmp_path / "d.csv").write_text(_csv(det, ".17g"))
    ours = evaluate_ava(tmp_path / "g.csv", tmp_path / "d.csv", tmp_path / "lm.pbtxt", excluded, top_k=top_k)
    ref_map, ref_ap = reference_ava(gt, det, {1, 2, 3}, excluded, top_k)
    for c in (1, 2, 3):
        a, b = ours["per_class"][f"c{c}"], ref_ap[c]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9, (c, a, b)
    assert (math.isnan(ours["mAP"]) and math.isnan(ref_map)) or abs(ours["mAP"] - ref_map) <= 1e-9


# ----------------------------------------------------------------- frame-mAP and video-mAP
def test_frame_map_hand_example():
    gt = dict(labels=["a", "b"], nframes={"x": 2}, resolution={"x": (100, 100)}, train_videos=[[]], test_videos=[["x"]],
              gttubes={"x": {0: [np.array([[1, 0, 0, 9, 9], [2, 0, 0, 9, 9.]])]}})
    dets = np.array([[0, 1, 0, .9, 0, 0, 9, 9], [0, 2, 0, .8, 50, 50, 60, 60], [0, 2, 0, .7, 0, 0, 9, 9],
                     [0, 1, 1, .5, 0, 0, 9, 9]])
    r = frame_map(gt, dets, ["x"])
    # class a: TP FP TP over 2 -> 1/2 + 1/2 * 2/3; class b has no GT -> NaN, not in the mean
    assert r["per_class"]["a"] == pytest.approx(5 / 6) and math.isnan(r["per_class"]["b"])
    assert r["mAP"] == pytest.approx(5 / 6)


def test_voc_folders_touching_boxes_use_plus_one(tmp_path):
    (tmp_path / "g").mkdir(); (tmp_path / "d").mkdir()
    (tmp_path / "g/f.txt").write_text("k 0 0 9 9\n")
    (tmp_path / "d/f.txt").write_text("k 0.5 0 0 9 4\n")            # (10*5)/(10*10) = 0.5 with +1 pixels
    assert voc_folder_map(tmp_path / "g", tmp_path / "d")["mAP"] == 1.0


def test_video_map_matched_tube_is_not_reused():
    box = lambda frames: np.array([[f, 0, 0, 9, 9] for f in frames], np.float64)
    gt = dict(labels=["a"], gttubes={"x": {0: [box(range(1, 5))]}}, nframes={"x": 4})
    tubes = [Tube(0, 0, 0.9, box(range(1, 5))), Tube(0, 0, 0.8, box(range(1, 5)))]
    r = video_map(gt, tubes, ["x"], ious=(0.5,))
    assert r["0.5"]["mAP"] == 1.0                                   # TP then FP: recall already 1
    assert tube_iou(box(range(1, 5)), box(range(3, 7))) == pytest.approx(2 / 6)


# ----------------------------------------------------------------- against the official evaluator (when present)
ACTIVITYNET = os.environ.get("VAD_REPRO_ACTIVITYNET")   # .../ActivityNet/Evaluation: fetched separately, never committed


@pytest.mark.skipif(not ACTIVITYNET, reason="VAD_REPRO_ACTIVITYNET (ActivityNet/Evaluation) not set: official evaluator absent")
@pytest.mark.parametrize("decimals", [1, 2, 4])
def test_ties_equal_the_official_evaluator(tmp_path, decimals):
    "Scores rounded to few decimals (1: heavy ties at the top-50 boundary): mAP and every per-class AP to 1e-9."
    import subprocess, sys
    sys.path.insert(0, str(Path(__file__).parent / "bench"))
    import bench_evaluation as be
    be.AVA_VIDEOS, be.AVA_KEYFRAMES = 2, 40
    be.make_ava_workload(tmp_path, seed=decimals)
    det = be.rounded_copy(tmp_path / "ava_det.csv", decimals)
    files = ["-l", str(tmp_path / "ava_labelmap.pbtxt"), "-g", str(tmp_path / "ava_gt.csv"), "-d", str(det)]
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "bench/run_official_ava.py"), ACTIVITYNET] + files,
                         capture_output=True, text=True, check=True)
    official_map, official_ap = be._parse_official(out.stdout + out.stderr)
    ours = evaluate_ava(tmp_path / "ava_gt.csv", det, tmp_path / "ava_labelmap.pbtxt")
    assert abs(ours["mAP"] - official_map) <= 1e-9, (ours["mAP"], official_map)
    for name, ap in official_ap.items():
        assert (math.isnan(ap) and math.isnan(ours["per_class"][name])) or abs(ours["per_class"][name] - ap) <= 1e-9, name
    assert ours["det_keyframes_replayed"] > 0 or decimals == 4      # the heap's own order was needed
