"""What JSON bodies are refused beyond what Python's parser refuses."""

from __future__ import annotations

import pytest

from blazerpc.errors import InvalidArgument
from blazerpc.http.json_body import refuse_non_json


@pytest.mark.parametrize(
    "body",
    [
        b'{"prompt": "NaN and Infinity are words", "x": 1e300}',
        b'{"emoji": "\\ud83d\\ude00", "escaped": "\\\\ud800"}',
        b'{"n": ' + b"9" * 4300 + b"}",
        b"[" * 100_000,  # not JSON at all: the route's parser answers for it
        b"\xff\xfe not utf-8 NaN",
    ],
)
def test_json_and_non_json_pass(body: bytes) -> None:
    refuse_non_json(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"t": NaN}', "NaN is not a JSON number"),
        (b"[1, -Infinity]", "-Infinity is not a JSON number"),
        (b'{"t": 1E+999}', "1E+999 is beyond the float64 range"),
        (b'{"n": ' + b"1" * 4301 + b"}", "an integer of more than 4300 digits"),
        (b'{"\\udc00": 1}', "lone UTF-16 surrogate"),
        (b'[[[["x", "\\ud800y"]]]]', "lone UTF-16 surrogate"),
    ],
)
def test_nan_infinity_overflow_and_lone_surrogates_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("+", r"\+")):
        refuse_non_json(body)
