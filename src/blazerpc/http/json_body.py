"""JSON as RFC 8259 defines it, where Python's ``json`` is looser.

Python parses ``NaN``, ``Infinity`` and escapes of lone surrogates (``"\\ud800"``); none is
JSON. It reads ``1e400`` as infinity, and an integer of more than 4,300 digits is an error of
its own. Each used to fail later, as a 500 (a NaN cannot be written back in an answer; a lone
surrogate cannot be encoded as UTF-8 for the tokenizer). ``refuse_non_json`` turns them away
as the body arrives.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import InvalidArgument, shorten


class _BadNumber(ValueError):
    pass


def refuse_non_json(body: bytes) -> None:
    """Raise ``InvalidArgument`` if ``body`` holds NaN, Infinity, a number out of range or a lone surrogate.

    A body that is not JSON at all passes: the route's own parser answers for it. The check is
    a second parse (~2 ms per MB of text): a regular expression to skip it scanned ten times slower.
    """
    try:
        value = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _BadNumber as exc:
        raise InvalidArgument(f"the body has an unusable number: {exc}") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's limit of 4,300 digits
            raise InvalidArgument("the body has an unusable number: an integer of more than 4300 digits") from None
        return
    except RecursionError:
        return
    if (b"\\ud" in body or b"\\uD" in body) and _has_lone_surrogate(value):
        raise InvalidArgument("the body is not valid JSON: a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)")


def _refuse_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise _BadNumber(f"{shorten(text, 32)} is beyond the float64 range")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    pending = [value]  # a loop, not recursion: the nesting depth is the client's choice
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
    return False
