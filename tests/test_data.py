"""Tests of sb3_iter_ckpt.data: synthetic prices, the strict CSV loader and the data fingerprint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sb3_iter_ckpt.data import DEFAULT_REGIMES, DataError, data_fingerprint, load_prices_csv, synthetic_prices
from sb3_iter_ckpt.errors import CheckpointError

# -- synthetic_prices ------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed():
    a = synthetic_prices(500, seed=7)
    b = synthetic_prices(500, seed=7)
    pd.testing.assert_series_equal(a, b)
    assert data_fingerprint(a) == data_fingerprint(b)


def test_synthetic_seeds_differ():
    a, b = synthetic_prices(500, seed=1), synthetic_prices(500, seed=2)
    assert not np.allclose(a.to_numpy(), b.to_numpy())
    assert data_fingerprint(a) != data_fingerprint(b)


def test_synthetic_shape_and_positivity():
    s = synthetic_prices(2000, seed=0, start_price=50.0)
    assert len(s) == 2000
    assert s.name == "close" and s.index.name == "date"
    assert isinstance(s.index, pd.DatetimeIndex) and s.index.is_monotonic_increasing
    assert s.index[0] == pd.Timestamp("2015-01-01")
    assert s.dtype == np.float64
    assert s.iloc[0] == pytest.approx(50.0)
    assert np.all(np.isfinite(s.to_numpy())) and (s > 0).all()


def test_synthetic_regimes_matter():
    # One bull-only and one bear-only regime, same shocks: the bull path ends higher.
    bull = synthetic_prices(300, seed=3, regimes=[(0.5, 0.1)])
    bear = synthetic_prices(300, seed=3, regimes={"bear": (-0.5, 0.1)})
    assert bull.iloc[-1] > bear.iloc[-1]
    # zero volatility, zero drift: a flat line
    flat = synthetic_prices(50, seed=0, regimes=[(0.0, 0.0)])
    assert np.allclose(flat.to_numpy(), 100.0)
    assert set(DEFAULT_REGIMES) == {"bull", "bear", "sideways"}


def test_synthetic_index_options():
    s = synthetic_prices(10, start="2020-06-01", freq="D")
    assert s.index[1] - s.index[0] == pd.Timedelta(days=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 1},
        {"n": 2.5},
        {"start_price": 0.0},
        {"start_price": float("nan")},
        {"regimes": []},
        {"regimes": [(0.1, -0.2)]},
        {"regimes": [(0.1, 0.2, 0.3)]},
        {"persistence": 1.5},
        {"periods_per_year": 0},
    ],
)
def test_synthetic_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic_prices(**kwargs)


# -- load_prices_csv -------------------------------------------------------------------------------------------


def test_csv_round_trip(tmp_path):
    s = synthetic_prices(100, seed=5)
    path = tmp_path / "prices.csv"
    s.to_csv(path)
    loaded = load_prices_csv(path)
    pd.testing.assert_series_equal(loaded, s, check_freq=False)
    assert data_fingerprint(loaded) == data_fingerprint(s)


def test_csv_case_insensitive_columns_and_sorting(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("Date,Open,Close\n2020-01-03,1,12.5\n2020-01-01,1,10\n2020-01-02,1,11\n")
    s = load_prices_csv(path)
    assert list(s.to_numpy()) == [10.0, 11.0, 12.5]
    assert s.index.is_monotonic_increasing and s.name == "close" and s.index.name == "date"
    # custom column names, also case-insensitive
    path.write_text("TIME,adj close\n2020-01-01,1\n2020-01-02,2\n")
    assert list(load_prices_csv(str(path), date_column="time", close_column="Adj Close")) == [1.0, 2.0]


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "empty"),
        ("day,close\n2020-01-01,1\n2020-01-02,2\n", r"no column 'date'.*columns present: \['day', 'close'\]"),
        ("date,price\n2020-01-01,1\n2020-01-02,2\n", r"no column 'close'.*\['date', 'price'\]"),
        ("date,close\n2020-01-01,1\nnot a date,2\n", r"unparsable or missing dates.*row 2: 'not a date'"),
        ("date,close\n2020-01-01,1\n,2\n", "unparsable or missing dates"),
        ("date,close\n2020-01-01,1\n2020-01-02,abc\n", r"non-numeric.*row 2: 'abc'"),
        ("date,close\n2020-01-01,1\n2020-01-02,\n", "missing or non-numeric"),
        ("date,close\n2020-01-01,1\n2020-01-02,inf\n", "missing or non-numeric"),
        ("date,close\n2020-01-01,1\n2020-01-02,0\n", r"must be > 0.*row 2"),
        ("date,close\n2020-01-01,1\n2020-01-02,-3\n", "must be > 0"),
        ("date,close\n2020-01-01,1\n", "at least 2 price rows, found 1"),
        ("date,close\n", "at least 2 price rows, found 0"),
        ("date,close\n2020-01-01,1\n2020-01-02,2\n2020-01-01,3\n", r"duplicate dates.*row 1.*row 3"),
        ("Date,date,close\n2020-01-01,2020-01-01,1\n2020-01-02,2020-01-02,2\n", None),  # exact match wins
        ("Close,CLOSE,date\n1,1,2020-01-01\n2,2,2020-01-02\n", "ambiguous"),
        (
            "date,close\n2020-01-01T00:00+01:00,1\n2020-01-02T00:00+02:00,2\n",
            "cannot parse column 'date'|unparsable",
        ),
    ],
)
def test_csv_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    if match is None:
        assert len(load_prices_csv(path)) == 2
        return
    with pytest.raises(DataError, match=match) as info:
        load_prices_csv(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CheckpointError)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="price file not found"):
        load_prices_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="price file not found"):
        load_prices_csv(tmp_path)  # a directory is not a price file


def test_csv_reports_few_bad_rows(tmp_path):
    rows = "\n".join(f"2020-01-{d:02d},x" for d in range(1, 20))
    path = tmp_path / "many.csv"
    path.write_text("date,close\n" + rows + "\n")
    with pytest.raises(DataError, match="and 14 more"):
        load_prices_csv(path)


# -- data_fingerprint ------------------------------------------------------------------------------------------


def test_fingerprint_is_stable_and_sensitive():
    s = synthetic_prices(50, seed=0)
    fp = data_fingerprint(s)
    assert len(fp) == 64 and int(fp, 16) >= 0
    # name and freq do not matter
    assert data_fingerprint(s.rename("other")) == fp
    assert data_fingerprint(pd.Series(s.to_numpy(), index=pd.DatetimeIndex(list(s.index)))) == fp
    # the datetime resolution pandas picked does not matter
    assert data_fingerprint(pd.Series(s.to_numpy(), index=s.index.as_unit("s"))) == fp
    # values and index do
    changed = s.copy()
    changed.iloc[10] *= 1.0000001
    assert data_fingerprint(changed) != fp
    assert data_fingerprint(pd.Series(s.to_numpy(), index=s.index + pd.Timedelta(days=1))) != fp
    assert data_fingerprint(s.iloc[:-1]) != fp


def test_fingerprint_canonical_values_and_arrays():
    assert data_fingerprint([0.0, 1.0]) == data_fingerprint(np.array([-0.0, 1.0]))
    assert data_fingerprint([1, 2, 3]) == data_fingerprint(pd.Series([1.0, 2.0, 3.0]))
    assert data_fingerprint([1.0, 2.0]) != data_fingerprint([2.0, 1.0])
    nan_a = np.array([1.0, np.nan])
    nan_b = np.array([1.0, -np.nan])
    assert data_fingerprint(nan_a) == data_fingerprint(nan_b)
    other_index = pd.Series([1.0, 2.0], index=["a", "b"])
    assert data_fingerprint(other_index) != data_fingerprint([1.0, 2.0])
    utc = pd.Series([1.0], index=pd.DatetimeIndex(["2020-01-01 05:00"], tz="UTC"))
    ny = utc.tz_convert("America/New_York")
    assert data_fingerprint(utc) != data_fingerprint(ny)  # zone name is part of the data
    with pytest.raises(TypeError):
        data_fingerprint(pd.DataFrame({"a": [1.0]}))


def test_fingerprint_known_value():
    # Pinned so an accidental change of the hashed byte layout is noticed (it would invalidate stored
    # run fingerprints); update _FINGERPRINT_VERSION together with this value on purpose only.
    s = pd.Series([1.0, 2.5], index=pd.DatetimeIndex(["2020-01-01", "2020-01-02"], name="date"))
    assert data_fingerprint(s) == KNOWN_FINGERPRINT


KNOWN_FINGERPRINT = "0413070918604b33ad9c7527b80035aaebbb0f43f4c4c28e25b65727ba7a43f3"
