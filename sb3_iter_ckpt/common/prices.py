"""What a run trades on a table: its one price column, or several price columns' equal-weight portfolio.

Pure (numpy and pandas); ``sb3_iter_ckpt.data`` re-exports both functions, the public path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["equal_weight_index", "traded_prices"]


def traded_prices(table: Any, column: Any) -> Any:
    """What a run trades on a table: its price column, or several price columns' equal-weight portfolio
    (:func:`equal_weight_index`); anything that is no table (a price series) is itself."""
    if column is None or not hasattr(table, "columns"):
        return table
    return equal_weight_index(table, column) if isinstance(column, tuple) else table[column]


def equal_weight_index(table: pd.DataFrame, columns: Sequence[Any]) -> pd.Series:
    """The value of the equal-weight portfolio of the price ``columns``, rebalanced to 1/N every period
    (the "1/N" portfolio of DeMiguel, Garlappi & Uppal, 2009, *Rev. Financ. Stud.* 22(5)), from 1.0 on the
    first row: its return over a period is the mean of the columns' returns. A run with several price
    columns holds it as buy-and-hold; rebalancing every period keeps its returns independent of where the
    test parts are cut.

    :param table: the prices (checked: finite and positive).
    :param columns: two or more of its columns.
    :return: a Series on the table's index, named ``"equal-weight"``.
    """
    prices = table[list(columns)].to_numpy(dtype=np.float64)
    mean = (prices[1:] / prices[:-1] - 1.0).mean(axis=1)
    return pd.Series(np.concatenate(([1.0], np.cumprod(1.0 + mean))), index=table.index, name="equal-weight")
