"""Failure tests of `vad_repro.data.unlabeled` (ME-STAD's unlabeled clips) and of the synthetic dense truth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vad_repro.data.ava import AVAFormatError, read_labelmap
from vad_repro.data.datasets import AVADataset, Skipped
from vad_repro.data.decode import write_video
from vad_repro.data.synth import dense_truth_path, read_dense_truth
from vad_repro.data.unlabeled import SemiSupervisedPairs, UnlabeledAVADataset, collate_semi_supervised

LABELMAP = 'item {\n name: "bend"\n id: 1\n}\nitem {\n name: "stand"\n id: 12\n}\n'


def make_ava(root, rows: list[str], truth: list[str] | None = None, seconds: int = 4):
    "A one-video AVA fixture under `root` (split 'train'), optionally with a synthetic dense-truth file."
    (root / "annotations").mkdir(parents=True); (root / "videos").mkdir()
    frames = np.broadcast_to((np.arange(seconds * 30) % 256).astype(np.uint8)[:, None, None, None], (seconds * 30, 32, 48, 3))
    write_video(root / "videos" / "vidA.mp4", frames, fps=30)
    (root / "annotations" / "ava_action_list_v2.2.pbtxt").write_text(LABELMAP)
    (root / "annotations" / "ava_train_v2.2.csv").write_text("".join(r + "\n" for r in rows))
    if truth is not None:
        dense_truth_path(root, "train").write_text("".join(r + "\n" for r in truth))
    return root


GOOD = ["vidA,0902,0.1,0.2,0.5,0.9,12,0", "vidA,0903,0.6,0.1,0.9,0.8,1,1"]


def test_malformed_dense_truth_row_names_file_and_row(tmp_path):
    truth = ["vidA,60,0.1,0.2,0.5,0.9,12,0", "vidA,61,0.1,0.2,0.5,0.9,12,0", "vidA,62,0.1,0.2,0.5"]
    root = make_ava(tmp_path / "ava", GOOD, truth)
    path = dense_truth_path(root, "train")
    with pytest.raises(AVAFormatError, match=f"{path}:3: expected 8 columns"):
        UnlabeledAVADataset(root, "train", 4, 2)
    path.write_text("vidA,60,0.1,0.2,0.5,0.9,12,0\nvidA,61,0.5,0.2,0.1,0.9,12,0\n")         # x2 < x1
    with pytest.raises(AVAFormatError, match=f"{path}:2: box .* zero area"):
        read_dense_truth(path, read_labelmap(root / "annotations" / "ava_action_list_v2.2.pbtxt"))
    path.write_text("vidA,sixty,0.1,0.2,0.5,0.9,12,0\n")
    with pytest.raises(AVAFormatError, match=f"{path}:1: frame 'sixty'"):
        UnlabeledAVADataset(root, "train", 4, 2)


def test_single_keyframe_gives_zero_pairs_and_a_clear_message(tmp_path):
    root = make_ava(tmp_path / "ava", GOOD[:1])
    with pytest.warns(UserWarning, match="no two consecutive annotated key frames"):
        ds = UnlabeledAVADataset(root, "train", 4, 2)
    assert len(ds) == 0 and ds.samples == []
    with pytest.raises(ValueError, match="the unlabeled dataset is empty"):
        SemiSupervisedPairs(AVADataset(root, "train", 4, 2), ds)


def test_gap_or_excluded_second_gives_no_pair(tmp_path):
    root = make_ava(tmp_path / "ava", ["vidA,0902,0.1,0.2,0.5,0.9,12,0", "vidA,0904,0.6,0.1,0.9,0.8,1,1"])   # 903 missing
    with pytest.warns(UserWarning):
        assert len(UnlabeledAVADataset(root, "train", 4, 2)) == 0
    (root / "annotations" / "ava_train_v2.2.csv").write_text("\n".join(GOOD) + "\n")
    (root / "annotations" / "ava_train_excluded_timestamps_v2.2.csv").write_text("vidA,0903\n")
    with pytest.warns(UserWarning):
        assert len(UnlabeledAVADataset(root, "train", 4, 2)) == 0


def test_bad_offset_and_missing_video(tmp_path):
    root = make_ava(tmp_path / "ava", GOOD, truth=["vidA,65,0.2,0.2,0.5,0.9,1,0"])
    for offset in (0, 30, -1):
        with pytest.raises(ValueError, match="offset must be in 1..29"):
            UnlabeledAVADataset(root, "train", 4, 2, offset=offset)
    ds = UnlabeledAVADataset(root, "train", 4, 2, offset=5)
    torch.testing.assert_close(ds[0]["box_groups"]["truth"]["boxes"], torch.tensor([[0.2, 0.2, 0.5, 0.9]]))   # frame 60 + 5
    assert UnlabeledAVADataset(root, "train", 4, 2, offset=6)[0]["box_groups"]["truth"]["boxes"].shape == (0, 4)
    (root / "videos" / "vidA.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="no videos/vidA.mp4"):
        ds[0]
    skipping = UnlabeledAVADataset(root, "train", 4, 2, skip_bad=True)
    assert isinstance(skipping[0], Skipped) and len(skipping.skipped) == 1


def test_skipped_unlabeled_is_counted_in_the_batch(tmp_path):
    root = make_ava(tmp_path / "ava", GOOD)
    labeled = AVADataset(root, "train", 4, 2)
    pairs = SemiSupervisedPairs(labeled, UnlabeledAVADataset(root, "train", 4, 2, skip_bad=True))
    torch.manual_seed(0)
    items, last = [pairs[0], pairs[1]], labeled[0]
    (root / "videos" / "vidA.mp4").rename(root / "videos" / "other.mp4")
    items.append(dict(last, unlabeled=pairs.unlabeled[0]))                       # the unlabeled clip is unreadable now
    batch = collate_semi_supervised(items)
    assert batch["clip"].shape[0] == 3 and batch["unlabeled"]["clip"].shape[0] == 2
    assert len(batch["skipped"]) == 1 and "vidA" in batch["skipped"][0]
