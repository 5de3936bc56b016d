"""utils.check_dataset refuses the data flags train_ds.py refuses, with the same one sentence."""

import pytest

from tools.toy_dataset import make_toy_dataset
from utils.check_dataset import main

# (flags, text of the one line printed)
CASES = {
    "unknown dataset": (["--dataset=vqa||vqq", "--sample_rates=1,1"], "--dataset: unknown entry"),
    "unknown sem_seg": (["--sem_seg_data=ade20k||ade21k"], "--sem_seg_data: unknown entry"),
    "unknown refer": (["--refer_seg_data=refkoko"], "--refer_seg_data: unknown entry"),
    "rates text": (["--sample_rates=a,b,c,d"], "not comma-separated numbers"),
    "rates count": (["--sample_rates=1"], "has 1 values for the 4 tasks"),
    "rates negative": (["--sample_rates=1,1,1,-1"], "finite numbers >= 0"),
    "rates inf": (["--sample_rates=1,1,1,inf"], "finite numbers >= 0"),
    "val without split": (["--val_dataset=ReasonSeg"], "--val_dataset 'ReasonSeg' is neither"),
    "reason_seg without split": (["--reason_seg_data=ReasonSeg|"], "NAME|SPLIT"),
    "classes per sample": (["--num_classes_per_sample=-2"], "--num_classes_per_sample"),
    "explanatory": (["--explanatory=1.5"], "--explanatory must be -1 or within [0, 1]"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("check_flags") / "dataset"
    make_toy_dataset(root, seed=0, num_train=2, num_val=1, num_test=1, num_refer=5, num_sem_seg=2)
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_flag_is_one_line(dataset, case, capsys):
    flags, expected = CASES[case]
    before = sorted(p.stat().st_mtime_ns for p in dataset.rglob("*"))
    assert main([f"--dataset_dir={dataset}", *flags]) == 1
    out, err = capsys.readouterr()
    assert out.strip().count("\n") == 0 and expected in out, out
    assert "Traceback" not in out + err
    assert sorted(p.stat().st_mtime_ns for p in dataset.rglob("*")) == before
