"""Tests of sb3_iter_ckpt.data: synthetic prices, the strict CSV loader and the data fingerprint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
)

from sb3_iter_ckpt.data import (
    DEFAULT_REGIMES,
    DataError,
    data_fingerprint,
    estimate_periods_per_year,
    load_prices_csv,
    synthetic_prices,
)
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
    # a table hashes as a table (issue 22): never as the series of its one column
    assert data_fingerprint(pd.DataFrame({"a": [1.0]})) != data_fingerprint(pd.Series([1.0]))


def test_fingerprint_known_value():
    # Pinned so an accidental change of the hashed byte layout is noticed (it would invalidate stored
    # run fingerprints); update _FINGERPRINT_VERSION together with this value on purpose only.
    s = pd.Series([1.0, 2.5], index=pd.DatetimeIndex(["2020-01-01", "2020-01-02"], name="date"))
    assert data_fingerprint(s) == KNOWN_FINGERPRINT


KNOWN_FINGERPRINT = "0413070918604b33ad9c7527b80035aaebbb0f43f4c4c28e25b65727ba7a43f3"


# -- estimate_periods_per_year ---------------------------------------------------------------------------------


class _ExchangeCalendar(AbstractHolidayCalendar):
    """The holidays of a US stock exchange (about nine a year), to build a trading-day index."""

    rules = [
        Holiday("New Year", month=1, day=1, observance=nearest_workday),
        USMartinLutherKingJr,
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas", month=12, day=25, observance=nearest_workday),
    ]


def test_periods_per_year_of_trading_days_hourly_fx_and_hourly_crypto():
    trading_days = pd.bdate_range("2015-01-01", "2022-12-31", freq="C", holidays=_ExchangeCalendar().holidays())
    assert estimate_periods_per_year(trading_days) == pytest.approx(252, abs=3)
    hours = pd.date_range("2018-01-01", "2020-12-31 23:00", freq="h")
    fx = hours[hours.day_of_week < 5]  # 24x5: Monday to Friday, every hour
    assert estimate_periods_per_year(fx) == pytest.approx(6200, abs=100)
    assert estimate_periods_per_year(hours) == pytest.approx(8760, abs=10)  # 24x7: 24 * 365.25 = 8766
    # the formula itself: (n - 1) bars over the span in 365.25-day years
    weekly = pd.date_range("2020-01-05", periods=105, freq="W")
    assert estimate_periods_per_year(weekly) == pytest.approx(104 / (104 * 7 / 365.25))
    weekdays = pd.bdate_range("2015-01-01", periods=2000)  # no holidays: 365.25 * 5 / 7
    assert estimate_periods_per_year(weekdays) == pytest.approx(260.9, abs=0.5)


def test_periods_per_year_without_dates_is_none():
    assert estimate_periods_per_year(pd.RangeIndex(100)) is None
    assert estimate_periods_per_year(pd.Series([1.0, 2.0, 3.0])) is None
    assert estimate_periods_per_year(pd.DatetimeIndex(["2020-01-01"])) is None
    assert estimate_periods_per_year(pd.DatetimeIndex(["2020-01-01", "2020-01-01"])) is None  # no time spanned
    s = synthetic_prices(300, seed=0, freq="D")  # a Series: its index; 365.25 daily bars a year
    assert estimate_periods_per_year(s) == pytest.approx(365.25)
    assert estimate_periods_per_year(s.index[::-1]) == pytest.approx(365.25)  # the order does not matter


# -- day-first and other non-ISO dates -------------------------------------------------------------------------


def _csv(tmp_path, dates, name="p.csv"):
    path = tmp_path / name
    path.write_text("date,close\n" + "".join(f"{d},{k + 1}\n" for k, d in enumerate(dates)))
    return path


def test_day_first_timestamps_with_milliseconds_are_read_day_first(tmp_path):
    dates = ["13.01.2017 00:00:00.000", "01.02.2017 00:00:00.000", "02.02.2017 13:30:00.250"]
    s = load_prices_csv(_csv(tmp_path, dates))
    assert list(s.index) == [
        pd.Timestamp("2017-01-13"),
        pd.Timestamp("2017-02-01"),  # not January 2nd: the column proved day-first
        pd.Timestamp("2017-02-02 13:30:00.250"),
    ]
    # the proof may come anywhere in the column, not only first
    s = load_prices_csv(_csv(tmp_path, list(reversed(dates))))
    assert list(s.index)[:2] == [pd.Timestamp("2017-01-13"), pd.Timestamp("2017-02-01")]
    assert list(s.to_numpy()) == [3.0, 2.0, 1.0]  # sorted by date, as before


def test_month_first_is_read_when_the_column_proves_it(tmp_path):
    s = load_prices_csv(_csv(tmp_path, ["01/02/2017", "01/13/2017"]))
    assert list(s.index) == [pd.Timestamp("2017-01-02"), pd.Timestamp("2017-01-13")]


@pytest.mark.parametrize(
    "dates, match",
    [
        (["01.02.2017 00:00:00.000", "03.02.2017 00:00:00.000"], "ambiguous: every value reads both"),
        (["01/02/2017", "03/04/2017"], "ambiguous"),
        (["13.01.2017", "01.13.2017"], "some rows read only day-first and others only month-first"),
    ],
)
def test_ambiguous_day_month_dates_are_refused_naming_date_format(tmp_path, dates, match):
    with pytest.raises(DataError, match=match) as info:
        load_prices_csv(_csv(tmp_path, dates))
    assert "--date-format" in str(info.value) and "\n" not in str(info.value)


def test_date_format_settles_ambiguous_dates(tmp_path):
    path = _csv(tmp_path, ["01.02.2017 00:00:00.000", "03.02.2017 00:00:00.000"])
    s = load_prices_csv(path, date_format="%d.%m.%Y %H:%M:%S.%f")
    assert list(s.index) == [pd.Timestamp("2017-02-01"), pd.Timestamp("2017-02-03")]
    s = load_prices_csv(path, date_format="%m.%d.%Y %H:%M:%S.%f")
    assert list(s.index) == [pd.Timestamp("2017-01-02"), pd.Timestamp("2017-03-02")]
    with pytest.raises(DataError, match=r"row 2: '2017-02-03'.*date format '%d\.%m\.%Y'.*--date-format"):
        load_prices_csv(_csv(tmp_path, ["01.02.2017", "2017-02-03"]), date_format="%d.%m.%Y")
    with pytest.raises(DataError, match="cannot parse column 'date'"):
        load_prices_csv(path, date_format="%Q")


def test_day_first_data_keeps_the_other_checks(tmp_path):
    with pytest.raises(DataError, match=r"duplicate dates.*row 1.*row 3"):
        load_prices_csv(_csv(tmp_path, ["13.01.2017", "14.01.2017", "13.01.2017"]))
    with pytest.raises(DataError, match=r"unparsable or missing dates.*row 2: '31.02.2017'.*--date-format"):
        load_prices_csv(_csv(tmp_path, ["13.01.2017", "31.02.2017"]))
    with pytest.raises(DataError, match=r"unparsable or missing dates.*row 2: '2017-01-14'"):
        load_prices_csv(_csv(tmp_path, ["13.01.2017", "2017-01-14"]))  # one form per column


def test_hourly_day_first_fx_file_gets_its_own_annualization(tmp_path):
    hours = pd.date_range("2019-01-01", "2019-12-31 23:00", freq="h")
    hours = hours[hours.day_of_week < 5]
    path = _csv(tmp_path, [t.strftime("%d.%m.%Y %H:%M:%S.000") for t in hours])
    s = load_prices_csv(path)
    assert list(s.index) == list(hours)
    assert estimate_periods_per_year(s) == pytest.approx(6200, abs=100)
