"""Tests of `vad_repro.data`: official formats, clip decoding, the synthetic benchmark, reliability.

Real footage: `../shared/data/real_videos/` (next to the repository), or `$VAD_REPRO_REAL_VIDEOS`.
"""
from __future__ import annotations

import filecmp
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils.data import DataLoader
from torchvision.io import write_jpeg

from vad_repro.data import (AVAFormatError, GTFormatError, Skipped, VideoDecodeError, build_dataset, clip_indices,
                            collate_detection, load_gt_pkl, read_ava_csv, read_clip, read_labelmap, read_video,
                            summarize_skipped, synth)
from vad_repro.data.decode import decode_video_frames, write_video

REAL = Path(os.environ.get("VAD_REPRO_REAL_VIDEOS", Path(__file__).resolve().parents[2] / "shared/data/real_videos"))
REAL_VIDEOS = sorted(REAL.glob("*.mp4"))


# ---------------------------------------------------------------- clip sampling and decoding
@given(k=st.integers(0, 99), T=st.integers(1, 16), s=st.integers(1, 4), key=st.sampled_from(["center", "last"]))
@settings(max_examples=200, deadline=None, database=None)
def test_clip_indices_properties(k, T, s, key):
    idx = clip_indices(k, T, s, key, n_frames=100)
    assert len(idx) == T and idx.min() >= 0 and idx.max() <= 99
    assert (np.diff(idx) >= 0).all() and (np.diff(idx) <= s).all()
    raw = clip_indices(k + 1000, T, s, key) - 1000         # far from the border: where the clip starts and ends
    if key == "center":
        assert raw[0] == k - (T * s) // 2 and (T % 2 or raw[T // 2] == k)   # even T: key frame is frame T/2
    else:
        assert raw[-1] == k and raw[0] == k - (T - 1) * s


@pytest.fixture(scope="module", params=REAL_VIDEOS, ids=lambda p: p.name)
def real_video(request):
    return request.param, read_video(request.param)


def test_real_videos_present():
    assert len(REAL_VIDEOS) >= 2, f"no real videos under {REAL}"


@pytest.mark.parametrize("key", ["center", "last"])
def test_read_clip_equals_full_decode_on_real_video(real_video, key):
    path, full = real_video
    N = len(full)
    rng = np.random.default_rng(0)
    keys = sorted({0, 1, N - 2, N - 1, *rng.integers(0, N, 2).tolist()})   # borders included
    for k in keys:
        for T, s in [(32, 2), (5, 3)]:
            clip = read_clip(path, k, T, s, key)
            expected = full[clip_indices(k, T, s, key, N)]
            assert clip.dtype == np.uint8 and clip.shape == expected.shape
            assert np.array_equal(clip, expected), (path.name, k, T, s, key)


def test_read_clip_equals_full_decode_with_seeking(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (90, 32, 48, 3), dtype=np.uint8)
    path = write_video(tmp_path / "noise.mp4", frames, fps=30, gop=10)
    full = read_video(path)
    for k in range(90):
        idx = clip_indices(k, 8, 2, "center", 90)
        clip, n_decoded = decode_video_frames(path, idx)
        assert np.array_equal(clip, full[idx]), k
        assert n_decoded <= idx.max() - (idx.min() // 10) * 10 + 1     # from the keyframe before, no further


@pytest.mark.parametrize("ext, codec", [("mkv", "libx264"), ("webm", "libvpx")])
def test_containers_without_frame_count(tmp_path, ext, codec):
    "AVA's movies come as mkv/webm too: the frame count comes from the duration there."
    import av
    frames = np.random.default_rng(2).integers(0, 255, (45, 32, 32, 3), dtype=np.uint8)
    with av.open(str(tmp_path / f"v.{ext}"), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width = stream.height = 32; stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    full = read_video(tmp_path / f"v.{ext}")
    assert len(full) == 45
    for k in (0, 20, 44):
        assert np.array_equal(read_clip(tmp_path / f"v.{ext}", k, 4, 2), full[clip_indices(k, 4, 2, "center", 45)])


# ---------------------------------------------------------------- hand-written fixtures, official formats
def _ava_fixture(root: Path, rows: list[str]) -> Path:
    (root / "annotations").mkdir(parents=True); (root / "videos").mkdir()
    gray = np.broadcast_to((np.arange(150) % 128 * 2).astype(np.uint8)[:, None, None, None], (150, 32, 48, 3))
    write_video(root / "videos" / "vid_A.mp4", gray, fps=30)
    (root / "annotations" / "ava_action_list_v2.1_for_activitynet_2018.pbtxt").write_text(
        'item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\nitem {\n  name: "talk to (e.g., self, a person, a group)"\n  id: 79\n}\n')
    (root / "annotations" / "ava_train_v2.1.csv").write_text("".join(r + "\n" for r in rows))
    (root / "annotations" / "ava_train_excluded_timestamps_v2.1.csv").write_text("vid_A,0904\n")
    return root


AVA_ROWS = ["vid_A,0902,0.077,0.151,0.283,0.811,79,1", "vid_A,0902,0.077,0.151,0.283,0.811,1,1",
            "vid_A,0902,0.332,0.194,0.481,0.891,79,0", "vid_A,0903,0.5,0.5,0.75,1.0,1,0",
            "vid_A,0904,0.5,0.5,0.75,1.0,1,0"]


def test_ava_fixture_to_tensors(tmp_path):
    ds = build_dataset("ava", _ava_fixture(tmp_path, AVA_ROWS), "train", num_frames=4, stride=8)
    assert ds.fmt == "ava" and ds.num_classes == 2 and ds.class_names[1].startswith("talk to")
    assert len(ds) == 2                                          # 0904 is excluded
    s = ds[0]
    assert s["clip"].shape == (3, 4, 32, 48) and s["clip"].dtype == torch.float32
    torch.testing.assert_close(s["boxes"], torch.tensor([[0.077, 0.151, 0.283, 0.811], [0.332, 0.194, 0.481, 0.891]]))
    torch.testing.assert_close(s["labels"], torch.tensor([[1., 1.], [0., 1.]]))
    levels = s["clip"].mean((0, 2, 3)) * 255                     # frames 44, 52, 60, 68: gray 2i
    torch.testing.assert_close(levels, torch.tensor([88., 104., 120., 136.]), atol=2.5, rtol=0)
    assert s["meta"] == {"video_id": "vid_A", "key_frame": 60, "timestamp": 902, "orig_size": (32, 48),
                         "dataset": "ava", "person_ids": [1, 0]}
    assert set(ds.gt_files) >= {"gt_csv", "labelmap", "excluded"}


def _gt_fixture():
    return {"labels": ["brush_hair", "catch", "clap"],
            "gttubes": {"clap/v1": {2: [np.array([[f, 10 + f, 20, 110 + f, 220] for f in range(1, 7)], np.float32)]},
                        "catch/v2": {1: [np.array([[3, 0, 0, 50, 50], [4, 1, 1, 51, 51]], np.float32)]}},
            "nframes": {"clap/v1": 6, "catch/v2": 5},
            "train_videos": [["clap/v1"], ["catch/v2"], ["clap/v1"]],
            "test_videos": [["catch/v2"], ["clap/v1"], ["catch/v2"]],
            "resolution": {"clap/v1": (240, 320), "catch/v2": (240, 320)}}


def _write_pkl(gt, path):
    with open(path, "wb") as f:
        pickle.dump(gt, f, protocol=2)
    return path


def _jhmdb_fixture(root: Path, gt=None) -> Path:
    gt = gt or _gt_fixture()
    for video, n in gt["nframes"].items():
        (root / "rgb-images" / video).mkdir(parents=True)
        for f in range(1, n + 1):
            write_jpeg(torch.full((3, 240, 320), 20 * f, dtype=torch.uint8), str(root / "rgb-images" / video / f"{f:05d}.jpg"), quality=100)
    _write_pkl(gt, root / "JHMDB-GT.pkl")
    return root


def test_gt_pkl_fixture_to_tensors(tmp_path):
    root = _jhmdb_fixture(tmp_path)
    gt = load_gt_pkl(root / "JHMDB-GT.pkl")
    assert gt["labels"] == ["brush_hair", "catch", "clap"] and gt["nframes"]["clap/v1"] == 6
    ds = build_dataset("jhmdb", root, "test", num_frames=4, stride=1, key="last", split_index=2)
    assert ds.gt_files["videos"] == ["clap/v1"] and len(ds) == 6 and ds.num_classes == 3
    s = ds[2]                                                      # 1-based frame 3
    torch.testing.assert_close(s["boxes"], torch.tensor([[13 / 320, 20 / 240, 113 / 320, 220 / 240]]))
    torch.testing.assert_close(s["labels"], torch.tensor([[0., 0., 1.]]))
    torch.testing.assert_close(s["clip"].mean((0, 2, 3)) * 255, torch.tensor([20., 20., 40., 60.]), atol=1.5, rtol=0)
    assert s["tube_valid"].tolist() == [[True, True, True, True]]          # frames 1, 1, 2, 3
    torch.testing.assert_close(s["tubes"][0, 0], torch.tensor([11 / 320, 20 / 240, 111 / 320, 220 / 240]))
    assert s["meta"]["timestamp"] == 3 and s["meta"]["key_frame"] == 2 and s["meta"]["orig_size"] == (240, 320)


def test_python2_latin1_pickle(tmp_path):
    gt = _gt_fixture(); gt["labels"] = ["caf\xe9", "catch", "clap"]          # non-ASCII label, protocol 2
    assert load_gt_pkl(_write_pkl(gt, tmp_path / "UCF101v2-GT.pkl"))["labels"][0] == "caf\xe9"


# ---------------------------------------------------------------- reliability: clear errors naming file and row
def test_corrupt_and_truncated_videos(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, (60, 32, 32, 3), dtype=np.uint8)
    data = write_video(tmp_path / "ok.mp4", frames, gop=10).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4: frames \[.*could not be decoded.*truncated"):
        read_clip(tmp_path / "cut.mp4", 55, 4, 1)
    import av                                                            # index at the end (no faststart)
    with av.open(str(tmp_path / "tail.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width = stream.height = 32; stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    tail = (tmp_path / "tail.mp4").read_bytes()
    (tmp_path / "tail_cut.mp4").write_bytes(tail[: len(tail) * 3 // 4])      # the index is lost
    with pytest.raises(VideoDecodeError, match=r"tail_cut\.mp4: (cannot open video|frames)"):
        read_clip(tmp_path / "tail_cut.mp4", 10, 4, 1)
    (tmp_path / "noise.mp4").write_bytes(os.urandom(4096))
    with pytest.raises(VideoDecodeError, match=r"noise\.mp4: cannot open video"):
        read_clip(tmp_path / "noise.mp4", 0, 4, 1)
    with pytest.raises(VideoDecodeError, match=r"absent\.mp4: no such video"):
        read_clip(tmp_path / "absent.mp4", 0, 4, 1)


def test_missing_and_corrupt_frames(tmp_path):
    root = _jhmdb_fixture(tmp_path)
    folder = root / "rgb-images" / "clap" / "v1"
    (folder / "00004.jpg").unlink()
    (folder / "00002.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(VideoDecodeError, match=r"clap/v1/00004\.jpg: missing frame image"):
        read_clip(folder, 3, 1, 1)
    with pytest.raises(VideoDecodeError, match=r"clap/v1/00002\.jpg: corrupt frame image"):
        read_clip(folder, 1, 1, 1)


@pytest.mark.parametrize("row, message", [
    ("vid_A,0902,0.5,0.2,0.5,0.9,1,0", r"bad\.csv:2: box \[0\.5, 0\.2, 0\.5, 0\.9\] is outside \[0, 1\] or has zero area"),
    ("vid_A,0902,0.1,0.2,1.5,0.9,1,0", r"bad\.csv:2: box .* outside"),
    ("vid_A,0902,0.1,0.2,0.5,abc,1,0", r"bad\.csv:2: box is not numeric"),
    ("vid_A,0902,0.1,0.2,0.5,0.9,2,0", r"bad\.csv:2: action id '2' is not in the label map"),
    ("vid_A,1800,0.1,0.2,0.5,0.9,1,0", r"bad\.csv:2: timestamp '1800' is not a key frame"),
    ("vid_A,0902,0.1,0.2,0.5,0.9", r"bad\.csv:2: expected 8 columns, got 6"),
])
def test_malformed_ava_rows(tmp_path, row, message):
    (tmp_path / "bad.csv").write_text(AVA_ROWS[0] + "\n" + row + "\n")
    with pytest.raises(AVAFormatError, match=message):
        read_ava_csv(tmp_path / "bad.csv", {1: "bend", 79: "talk"})


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.__setitem__((2, 3), 5), r"tube 0 row 2: box .* zero area"),                              # x2 < x1
    (lambda t: t.__setitem__((4, slice(1, 5)), [400, 10, 450, 20]), r"tube 0 row 4: box .* zero area inside the 320x240"),
    (lambda t: t.__setitem__((5, 0), 9), r"tube 0 row 5: bad frame 9\.0 \(video has 6 frames\)"),
    (lambda t: t.__setitem__((1, 0), 1), r"tube 0 row 1: frame 1 does not follow frame 1"),
])
def test_malformed_gt_pkl_rows(tmp_path, edit, message):
    gt = _gt_fixture()
    edit(gt["gttubes"]["clap/v1"][2][0])
    with pytest.raises(GTFormatError, match=r"JHMDB-GT\.pkl: gttubes\['clap/v1'\]\[2\] " + message):
        load_gt_pkl(_write_pkl(gt, tmp_path / "JHMDB-GT.pkl"))      # names the file, video, label, tube and row


def test_skip_bad_counts_and_reports(tmp_path):
    rows = AVA_ROWS[:4] + ["vid_A,0905,0.1,0.2,0.1,0.9,1,0", "vid_B,0902,0.1,0.1,0.2,0.2,1,0"]  # zero-area row, missing video
    root = _ava_fixture(tmp_path, rows)
    with pytest.raises(AVAFormatError, match=r"ava_train_v2\.1\.csv:5: box"):
        build_dataset("ava", root, "train", 4, 2)
    ds = build_dataset("ava", root, "train", 4, 2, skip_bad=True)
    assert len(ds.skipped_rows) == 1 and "ava_train_v2.1.csv:5" in ds.skipped_rows[0]
    batches = list(DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_detection))
    skipped = [r for b in batches for r in b["skipped"]]
    assert len(skipped) == 1 and "vid_B" in skipped[0]
    assert sum(len(b["meta"]) for b in batches) == len(ds) - 1
    assert summarize_skipped(skipped).startswith("1 samples skipped:")

    jroot = _jhmdb_fixture(tmp_path / "j")
    (jroot / "rgb-images" / "clap" / "v1" / "00005.jpg").unlink()
    jds = build_dataset("jhmdb", jroot, "train", 1, 1, skip_bad=True)      # split 1 trains on clap/v1
    items = [jds[i] for i in range(len(jds))]
    assert sum(isinstance(x, Skipped) for x in items) == 1 and len(jds.skipped) == 1


# ---------------------------------------------------------------- the synthetic benchmark
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "The three tiny benchmarks (seed 7) and how long they took."
    out = tmp_path_factory.mktemp("synth")
    t0 = time.perf_counter()
    roots = {fmt: synth.generate(fmt, "tiny", 7, out / f"{fmt}_a") for fmt in synth.FORMATS}
    return roots, time.perf_counter() - t0


def test_synth_tiny_fast_and_deterministic(tiny, tmp_path):
    first, seconds = tiny
    assert seconds < 30, seconds
    for fmt, names in [("ava", ["annotations/ava_train_v2.2.csv", "annotations/ava_val_v2.2.csv",
                                "annotations/ava_val_predicted_boxes.csv", "annotations/ava_val_excluded_timestamps_v2.2.csv",
                                "annotations/ava_action_list_v2.2.pbtxt", "synth.json"]),
                       ("jhmdb", ["JHMDB-GT.pkl"]), ("ucf", ["UCF101v2-GT.pkl"])]:
        again = synth.generate(fmt, "tiny", 7, tmp_path / f"{fmt}_b")
        for name in names:
            assert filecmp.cmp(first[fmt] / name, again / name, shallow=False), (fmt, name)
        assert fmt != "jhmdb" or (first["jhmdb"] / "JHMDB-GT.pkl").read_bytes() != \
            (synth.ensure("jhmdb", "tiny", 0, cache_dir=tmp_path) / "JHMDB-GT.pkl").read_bytes()   # other seed, other data


def test_synth_loads_with_official_readers(tiny):
    roots, _ = tiny
    labelmap = read_labelmap(roots["ava"] / "annotations" / "ava_action_list_v2.2.pbtxt")
    assert list(labelmap.values()) == synth.AVA_CLASSES
    ds = build_dataset("ava", roots["ava"], "val", 8, 4)
    labels = torch.cat([ds[i]["labels"] for i in range(len(ds))])
    assert labels[:, : len(synth.POSE_CLASSES)].sum(1).eq(1).all()           # exactly one pose per actor
    for fmt in ("jhmdb", "ucf"):
        s = build_dataset(fmt, roots[fmt], "train", 8, 2)[0]
        assert s["clip"].shape == (3, 8, 64, 64) and s["labels"].sum() == len(s["boxes"]) >= 1


def test_forked_loader_workers_after_pyav_conversion(tiny):
    """DataLoader workers forked after the parent converted a frame with PyAV's own `to_ndarray` read their clips.

    With PyAV 18.1.1 that conversion leaves a converter with swscale slice threads behind; a worker converting
    through it waits forever for threads that did not survive the fork (CI hung so in two notebooks). The
    loader's timeout turns a hang into a failure."""
    import av
    roots, _ = tiny
    ds = build_dataset("ava", roots["ava"], "val", 8, 4)
    video = sorted((roots["ava"] / "videos").glob("*.mp4"))[0]
    with av.open(str(video)) as c:
        next(c.decode(video=0)).to_ndarray(format="rgb24")
    loader = DataLoader(ds, batch_size=2, num_workers=2, timeout=60, collate_fn=collate_detection,
                        multiprocessing_context="fork")
    assert sum(len(b["meta"]) for b in loader) == len(ds)


def test_cli_synth(tmp_path):
    from vad_repro.cli import main
    assert main(["synth", "--format", "jhmdb", "--size", "tiny", "--seed", "2", "--out", str(tmp_path / "j")]) == 0
    assert load_gt_pkl(tmp_path / "j" / "JHMDB-GT.pkl")["labels"] == synth.POSE_CLASSES
