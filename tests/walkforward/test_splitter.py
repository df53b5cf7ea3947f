"""Tests of sb3_iter_ckpt.splitter: walk-forward window invariants, input types, timestamps and errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_iter_ckpt.errors import CheckpointError
from sb3_iter_ckpt.splitter import WalkForwardSplitter, Window

splitters = st.builds(
    WalkForwardSplitter,
    train_size=st.integers(1, 60),
    val_size=st.integers(1, 30),
    step=st.none() | st.integers(1, 30),
    gap=st.integers(0, 10),
    mode=st.sampled_from(["rolling", "anchored"]),
    max_windows=st.none() | st.integers(1, 8),
)


@settings(max_examples=300, deadline=None)
@given(splitter=splitters, length=st.integers(0, 400))
def test_property_window_invariants(splitter, length):
    n = splitter.n_windows(length)
    if length < splitter.train_size + splitter.gap + splitter.val_size:
        assert n == 0
        with pytest.raises(ValueError, match="one window needs"):
            splitter.split(length)
        return
    windows = list(splitter.split(length))
    assert len(windows) == n >= 1
    assert [w.iteration for w in windows] == list(range(n))
    for w in windows:
        # bounds inside the data, stops exclusive, nothing empty
        assert 0 <= w.train_start < w.train_stop <= w.val_start < w.val_stop <= length
        # the purge gap is respected exactly, so train and validation never overlap
        assert w.val_start - w.train_stop == splitter.gap
        assert w.val_size == splitter.val_size
        if splitter.mode == "anchored":
            assert w.train_start == 0
        else:
            assert w.train_size == splitter.train_size
        assert w.train_start_time is None and w.val_end_time is None
    for prev, cur in zip(windows, windows[1:], strict=False):
        # ordered, moving forward by exactly `step`
        assert cur.val_start - prev.val_start == splitter.step
        assert cur.train_stop - prev.train_stop == splitter.step
        assert cur.train_start >= prev.train_start
    # the first window starts at the beginning of the data
    assert windows[0].train_start == 0 and windows[0].train_stop == splitter.train_size
    if splitter.max_windows is None:
        # as many windows as fit: one more step would run past the end
        assert windows[-1].val_stop + splitter.step > length
    else:
        assert n <= splitter.max_windows


@settings(max_examples=100, deadline=None)
@given(
    train=st.integers(1, 30),
    val=st.integers(1, 20),
    step=st.none() | st.integers(1, 20),
    gap=st.integers(0, 5),
    length=st.integers(0, 200),
)
def test_property_modes_share_validation_blocks(train, val, step, gap, length):
    rolling = WalkForwardSplitter(train, val, step=step, gap=gap, mode="rolling")
    anchored = WalkForwardSplitter(train, val, step=step, gap=gap, mode="anchored")
    assert rolling.n_windows(length) == anchored.n_windows(length)
    if rolling.n_windows(length):
        r = [(w.val_start, w.val_stop, w.train_stop) for w in rolling.split(length)]
        a = [(w.val_start, w.val_stop, w.train_stop) for w in anchored.split(length)]
        assert r == a


def test_rolling_example():
    windows = list(WalkForwardSplitter(train_size=4, val_size=2, gap=1).split(12))
    spans = [(w.train_start, w.train_stop, w.val_start, w.val_stop) for w in windows]
    assert spans == [(0, 4, 5, 7), (2, 6, 7, 9), (4, 8, 9, 11)]


def test_anchored_example():
    windows = list(WalkForwardSplitter(train_size=4, val_size=2, step=3, mode="anchored").split(12))
    spans = [(w.train_start, w.train_stop, w.val_start, w.val_stop) for w in windows]
    assert spans == [(0, 4, 4, 6), (0, 7, 7, 9), (0, 10, 10, 12)]


def test_default_step_is_val_size():
    s = WalkForwardSplitter(10, 5)
    assert s.step == 5
    assert s.to_dict() == {
        "train_size": 10,
        "val_size": 5,
        "step": 5,
        "gap": 0,
        "mode": "rolling",
        "max_windows": None,
    }


def test_max_windows():
    s = WalkForwardSplitter(10, 5, max_windows=2)
    assert s.n_windows(1000) == 2
    assert len(list(s.split(1000))) == 2


@pytest.mark.parametrize(
    "data",
    [
        list(range(50)),
        tuple(range(50)),
        np.arange(50),
        np.zeros((50, 3)),
        pd.Series(np.arange(50)),
        pd.DataFrame({"a": np.arange(50), "b": np.arange(50)}),
        pd.RangeIndex(50),
        np.int64(50),
    ],
)
def test_accepts_many_data_types(data):
    s = WalkForwardSplitter(20, 10)
    assert list(s.split(data)) == list(s.split(50))
    assert s.n_windows(data) == s.n_windows(50) == 3


def test_datetime_index_timestamps():
    index = pd.date_range("2020-01-01", periods=30, freq="D", name="date")
    prices = pd.Series(np.arange(30.0), index=index)
    s = WalkForwardSplitter(train_size=10, val_size=5, gap=2)
    windows = list(s.split(prices))
    assert windows == list(s.split(prices.to_frame())) == list(s.split(index))
    first = windows[0]
    assert first.train_start_time == "2020-01-01T00:00:00"
    assert first.train_end_time == "2020-01-10T00:00:00"  # inclusive end: position train_stop - 1
    assert first.val_start_time == "2020-01-13T00:00:00"  # after the 2-day gap
    assert first.val_end_time == "2020-01-17T00:00:00"
    for w in windows:
        assert w.train_start_time == index[w.train_start].isoformat()
        assert w.val_end_time == index[w.val_stop - 1].isoformat()


def test_timezone_aware_timestamps_keep_offset():
    index = pd.date_range("2021-03-01 09:30", periods=12, freq="h", tz="America/New_York")
    w = next(WalkForwardSplitter(4, 2).split(index))
    assert w.train_start_time == "2021-03-01T09:30:00-05:00"


def test_non_datetime_index_has_no_timestamps():
    w = next(WalkForwardSplitter(4, 2).split(pd.Series(range(10), index=list("abcdefghij"))))
    assert w.train_start_time is None and w.val_start_time is None


def test_window_is_frozen_and_serialisable():
    w = next(WalkForwardSplitter(4, 2).split(pd.date_range("2020-01-01", periods=10)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.train_start = 1  # type: ignore[misc]
    d = w.to_dict()
    assert d["iteration"] == 0 and d["val_stop"] == 6
    assert Window(**json.loads(json.dumps(d))) == w
    assert w.train_slice == slice(0, 4) and w.val_slice == slice(4, 6)
    json.dumps(WalkForwardSplitter(4, 2, mode="anchored").to_dict())


def test_splitter_equality_and_repr():
    assert WalkForwardSplitter(4, 2) == WalkForwardSplitter(4, 2, step=2)
    assert WalkForwardSplitter(4, 2) != WalkForwardSplitter(4, 2, gap=1)
    assert hash(WalkForwardSplitter(4, 2)) == hash(WalkForwardSplitter(4, 2, step=2))
    assert "train_size=4" in repr(WalkForwardSplitter(4, 2))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"train_size": 0, "val_size": 5},
        {"train_size": -1, "val_size": 5},
        {"train_size": 10, "val_size": 0},
        {"train_size": 10, "val_size": 5, "step": 0},
        {"train_size": 10, "val_size": 5, "gap": -1},
        {"train_size": 10, "val_size": 5, "max_windows": 0},
        {"train_size": 10.5, "val_size": 5},
        {"train_size": True, "val_size": 5},
        {"train_size": "10", "val_size": 5},
        {"train_size": 10, "val_size": 5, "mode": "expanding"},
    ],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        WalkForwardSplitter(**kwargs)


def test_data_too_short_message():
    s = WalkForwardSplitter(train_size=10, val_size=5, gap=2)
    with pytest.raises(ValueError, match=r"16 rows but one window needs .* = 17"):
        s.split(list(range(16)))
    assert s.n_windows(16) == 0 and s.n_windows(17) == 1


@pytest.mark.parametrize("bad", [-1, 3.5, object(), True])
def test_bad_data(bad):
    with pytest.raises(ValueError):
        WalkForwardSplitter(2, 1).split(bad)


# -- test (trade) parts -----------------------------------------------------------------------------------

test_splitters = st.builds(
    WalkForwardSplitter,
    train_size=st.integers(1, 60),
    val_size=st.integers(1, 30),
    step=st.none() | st.integers(1, 30),
    gap=st.integers(0, 10),
    mode=st.sampled_from(["rolling", "anchored"]),
    max_windows=st.none() | st.integers(1, 8),
    test_size=st.integers(1, 30),
    test_gap=st.integers(0, 5),
)


@settings(max_examples=300, deadline=None)
@given(splitter=test_splitters, length=st.integers(0, 400))
def test_property_test_parts(splitter, length):
    n = splitter.n_windows(length)
    needed = splitter.train_size + splitter.gap + splitter.val_size + splitter.test_gap + splitter.test_size
    assert splitter.min_length == needed
    if length < needed:
        assert n == 0
        with pytest.raises(CheckpointError, match="test_size"):
            splitter.split(length)
        return
    windows = list(splitter.split(length))
    assert len(windows) == n >= 1
    for w in windows:
        test = set(range(w.test_start, w.test_stop))
        assert len(test) == w.test_size == splitter.test_size
        # never inside its own window's train or validation part, and strictly after validation
        assert not test & set(range(w.train_start, w.train_stop))
        assert not test & set(range(w.val_start, w.val_stop))
        assert w.test_start - w.val_stop == splitter.test_gap >= 0
        assert w.val_stop <= w.test_start < w.test_stop <= length  # fits in the data
        assert w.test_slice == slice(w.test_start, w.test_stop)
        # the train/validation layout is the one without a test part
        assert w.val_start - w.train_stop == splitter.gap and w.val_size == splitter.val_size
    for prev, cur in zip(windows, windows[1:], strict=False):
        assert cur.test_start - prev.test_start == splitter.step
        if splitter.step == splitter.test_size:
            assert cur.test_start == prev.test_stop  # contiguous: no overlap, no hole
    if splitter.max_windows is None:
        assert windows[-1].test_stop + splitter.step > length  # as many windows as fit


@settings(max_examples=100, deadline=None)
@given(
    train=st.integers(1, 40),
    val=st.integers(1, 20),
    test=st.integers(1, 20),
    test_gap=st.integers(0, 5),
    gap=st.integers(0, 5),
    length=st.integers(0, 300),
)
def test_property_default_step_tiles_test_parts(train, val, test, test_gap, gap, length):
    s = WalkForwardSplitter(train, val, gap=gap, test_size=test, test_gap=test_gap)
    assert s.step == test
    if s.n_windows(length):
        windows = list(s.split(length))
        covered = [row for w in windows for row in range(w.test_start, w.test_stop)]
        # one continuous out-of-sample period: every row once, in order
        assert covered == list(range(windows[0].test_start, windows[-1].test_stop))


def test_issue_example_test_parts_tile_the_embedded_default():
    s = WalkForwardSplitter(train_size=500, val_size=125, test_size=125)
    windows = list(s.split(1500))
    assert s.step == 125 and len(windows) == 7
    assert [(w.test_start, w.test_stop) for w in windows] == [(625 + 125 * i, 750 + 125 * i) for i in range(7)]
    assert windows[-1].test_stop == 1500
    assert (windows[0].val_start, windows[0].val_stop) == (500, 625)


def test_test_part_example_with_gaps():
    windows = list(WalkForwardSplitter(train_size=4, val_size=2, gap=1, test_size=3, test_gap=1).split(20))
    spans = [(w.train_start, w.train_stop, w.val_start, w.val_stop, w.test_start, w.test_stop) for w in windows]
    assert spans == [(0, 4, 5, 7, 8, 11), (3, 7, 8, 10, 11, 14), (6, 10, 11, 13, 14, 17), (9, 13, 14, 16, 17, 20)]


def test_test_part_timestamps_and_serialisation():
    index = pd.date_range("2020-01-01", periods=30, freq="D")
    w = next(WalkForwardSplitter(10, 5, gap=2, test_size=4, test_gap=1).split(pd.Series(np.arange(30.0), index=index)))
    assert (w.test_start, w.test_stop) == (18, 22)
    assert w.test_start_time == "2020-01-19T00:00:00"
    assert w.test_end_time == "2020-01-22T00:00:00"  # inclusive end: position test_stop - 1
    d = w.to_dict()
    assert d["test_start"] == 18 and d["test_end_time"] == "2020-01-22T00:00:00"
    assert Window(**json.loads(json.dumps(d))) == w
    plain = next(WalkForwardSplitter(10, 5, test_size=4).split(30))
    assert plain.test_start_time is None and plain.to_dict()["test_start"] == 15


def test_test_part_longer_than_the_data_is_a_clear_error():
    s = WalkForwardSplitter(train_size=500, val_size=125, test_size=1000)
    assert s.n_windows(1500) == 0
    with pytest.raises(CheckpointError, match=r"1500 rows .* test_size = 500 \+ 0 \+ 125 \+ 0 \+ 1000 = 1625"):
        s.split(1500)
    with pytest.raises(ValueError):  # still a ValueError for callers that caught the old error
        s.split(1500)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"test_size": -1},
        {"test_size": 2.5},
        {"test_gap": -1, "test_size": 2},
        {"test_gap": 1},  # a gap before a test part that does not exist
    ],
)
def test_bad_test_parameters(kwargs):
    with pytest.raises(ValueError):
        WalkForwardSplitter(10, 5, **kwargs)


# Values produced by the splitter before test parts existed (commit 25f6b1f), pinned so that a run made
# then keeps its configuration fingerprint, and its records their window dictionaries, at test_size=0.
_OLD_DICT = {"train_size": 300, "val_size": 100, "step": 50, "gap": 5, "mode": "anchored", "max_windows": 3}
_OLD_SHA = "19f9eddd5277f5841435a1b273f79536aadd6610ad585b56ecd9e3131d1c7d45"
_OLD_REPR = "WalkForwardSplitter(train_size=300, val_size=100, step=50, gap=5, mode='anchored', max_windows=3)"
_OLD_WINDOW = {
    "iteration": 0,
    "train_start": 0,
    "train_stop": 10,
    "val_start": 12,
    "val_stop": 17,
    "train_start_time": "2020-01-01T00:00:00",
    "train_end_time": "2020-01-10T00:00:00",
    "val_start_time": "2020-01-13T00:00:00",
    "val_end_time": "2020-01-17T00:00:00",
}


@pytest.mark.parametrize("extra", [{}, {"test_size": 0}, {"test_size": 0, "test_gap": 0}])
def test_no_test_part_keeps_the_old_description(extra):
    s = WalkForwardSplitter(train_size=300, val_size=100, step=50, gap=5, mode="anchored", max_windows=3, **extra)
    assert s.to_dict() == _OLD_DICT
    assert list(s.to_dict()) == list(_OLD_DICT)  # same key order, so the same JSON bytes
    blob = json.dumps(s.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(blob).hexdigest() == _OLD_SHA  # the walk-forward fingerprint's input
    assert repr(s) == _OLD_REPR
    assert WalkForwardSplitter(500, 125, **extra).step == 125  # the default step is still val_size
    index = pd.date_range("2020-01-01", periods=30, freq="D")
    w = next(WalkForwardSplitter(10, 5, gap=2, **extra).split(pd.Series(np.arange(30.0), index=index)))
    assert w.to_dict() == _OLD_WINDOW and list(w.to_dict()) == list(_OLD_WINDOW)
    assert w.test_start is None and w.test_slice is None and w.test_size == 0


def test_test_part_changes_the_description():
    plain, with_test = WalkForwardSplitter(10, 5), WalkForwardSplitter(10, 5, test_size=5)
    assert plain == WalkForwardSplitter(10, 5, test_size=0)
    assert with_test != plain and with_test != WalkForwardSplitter(10, 5, step=5, test_size=5, test_gap=1)
    assert with_test.to_dict() == {**plain.to_dict(), "test_size": 5, "test_gap": 0}
    assert "test_size=5" in repr(with_test)
