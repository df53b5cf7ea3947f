"""The record parser's guarantees hold whichever way it parses: strict JSON, numbers inside the float range,
nesting at most ``MAX_JSON_DEPTH``. An ordinary record skips the per-number hooks and the depth walk when its
text alone shows they cannot refuse it; these tests put the hostile values where that look could miss them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_iter_ckpt import RecordError
from sb3_iter_ckpt.common import record as rec

#: What a callback's record looks like around a value: hex digests (an "e" next to digits), floats, nesting.
_AROUND = {
    "artifacts": {"model": {"file": "model_iter_0.zip", "sha256": "5e123" + "0e9" * 19 + "e1", "size": 59611}},
    "metadata": {"fingerprint": "e699e6b085e299740d6703e0a63ff0e4", "window": {"test_start": 625}},
    "metrics": {"validation": {"sharpe": 0.7354142004367235, "tiny": 1.5e-05}, "mean_reward": -1e-7},
}


def _reference(text: str) -> Any:
    """The parser's contract, checked the slow way on every number and container."""

    def number(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            raise ValueError("outside the float range")
        return value

    def integer(token: str) -> int:
        value = int(token)
        if abs(value) >= 2**1024:
            raise ValueError("outside the float range")
        return value

    def constant(token: str) -> Any:
        raise ValueError(token)

    value = json.loads(text, parse_float=number, parse_int=integer, parse_constant=constant)
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > rec.MAX_JSON_DEPTH:
                raise ValueError("nested deeper")
            stack.extend((c, depth + 1) for c in (node.values() if isinstance(node, dict) else node))
    return value


#: Every character that can follow a number in JSON, and the end of the text.
ENDINGS = ["", " ", "\n", "\t", "\r", ",", "]", "}"]


def _ending(value_text: str, end: str) -> str:
    """``value_text`` followed by ``end``, as a JSON value."""
    if end == ",":
        return f"[{value_text}, 1]"
    if end == "]":
        return f"[{value_text}]"
    if end == "}":
        return f'{{"x": {value_text}}}'
    return value_text + end


def _with(value_text: str) -> str:
    """A record's text holding ``value_text`` as a metric."""
    return json.dumps(_AROUND, indent=2).replace('"mean_reward": -1e-07', f'"mean_reward": {value_text}')


HUGE_NUMBERS = [
    "1e400", "1E+400", "-1e0400", "1e309", "2.5e308", "1" + "0" * 25 + "e290", "1" + "0" * 400,
    str(2**1024), str(-(2**1024)), "1" + "0" * 320 + ".5", "0.5e99999", "1" + "0" * 250 + "e99",
]  # fmt: skip


@pytest.mark.parametrize("end", ENDINGS)
@pytest.mark.parametrize("number", HUGE_NUMBERS)
def test_a_number_outside_the_float_range_is_refused_wherever_it_ends(number, end):
    for text in (_with(_ending(number, end)), _ending(number, end)):  # in a record; the whole text
        with pytest.raises(RecordError, match="outside the float range"):
            rec.loads(text.encode(), "metrics_iter_0.json")


@pytest.mark.parametrize("depth", [rec.MAX_JSON_DEPTH, rec.MAX_JSON_DEPTH + 1])
@pytest.mark.parametrize("kind", ["list", "object"])
def test_nesting_past_the_limit_is_refused_and_at_the_limit_read(depth, kind):
    text = "[" * depth + "1" + "]" * depth if kind == "list" else '{"k": ' * depth + "1" + "}" * depth
    if depth > rec.MAX_JSON_DEPTH:
        with pytest.raises(RecordError, match="nested deeper"):
            rec.loads(text.encode(), "x.json")
    else:
        assert rec.loads(text.encode(), "x.json") == json.loads(text)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_constants_are_refused(token):
    with pytest.raises(RecordError, match="not valid JSON"):
        rec.loads(_with(token).encode(), "metrics_iter_0.json")


_digits = st.text("0123456789", min_size=1, max_size=30).map(lambda d: d.lstrip("0") or "0")
_numbers = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]),
    _digits,
    st.sampled_from(["", ".5", ".0001", ".123456789"]),
    st.sampled_from(["", "e5", "E+99", "e-99", "e300", "e308", "e309", "E-400", "e0400", "e+1000"]),
)
_texts = st.recursive(
    _numbers | st.sampled_from(['"5e123"', '"0e999,"', '"[[[["', "true", "null", "NaN"]),
    lambda inner: (
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]")
        | st.lists(inner, max_size=3).map(lambda xs: "{" + ",\n".join(f'"k{i}": {x}' for i, x in enumerate(xs)) + "}")
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(text=_texts, depth=st.sampled_from([0, 1, 60, 63, 64, 70]), end=st.sampled_from(ENDINGS))
def test_every_text_is_read_as_the_slow_reference_reads_it(text, depth, end):
    text = "[" * depth + _ending(text, end) + "]" * depth
    try:
        expected = _reference(text)
    except (ValueError, RecursionError):
        with pytest.raises(RecordError):
            rec.loads(text.encode(), "x.json")
        return
    assert rec.loads(text.encode(), "x.json") == expected


class _Label(str):
    pass


def test_values_become_strict_json_whatever_their_type():
    """``to_jsonable`` (every record written, every signature): JSON's own types as they are, the rest converted."""
    import numpy as np

    value = {
        True: np.float64("nan"),
        3: [float("inf"), -float("inf"), np.array([1.5, np.nan]), (1, np.int64(2))],
        None: {"nested": {"x": float("nan"), "ok": 0.25, "flag": False, "n": 2**70, "s": _Label("a")}},
        "plain": ["text", 1, 2.5, None, True],
    }
    assert rec.to_jsonable(value) == {
        "True": None,
        "3": [None, None, [1.5, None], [1, 2]],
        "None": {"nested": {"x": None, "ok": 0.25, "flag": False, "n": 2**70, "s": "a"}},
        "plain": ["text", 1, 2.5, None, True],
    }
    assert json.loads(rec.dumps(value)) == rec.to_jsonable(value)
