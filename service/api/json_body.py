"""Checks on a JSON request body that the JSON parser and the schemas would let through silently or
answer unclearly: nesting deeper than any request needs (Python's parser raises RecursionError near
1,000 levels), more keys in one object than any request has, a key given twice (the parser keeps
the last and drops the others), strings that are not valid Unicode (a lone surrogate escape such
as "\\ud800" parses, then crashes the tokenizers), and numbers Python refuses to convert."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32  # a request is at most 2 levels deep (an object holding a list of strings)
MAX_KEYS = 64  # a request object has at most 10 fields
# the longest list a request holds is `texts` (LSTM_SERVE_MAX_BATCH_TEXTS, at most 1,024): a
# longer one is refused here, before validation would build one error per wrong item
MAX_ITEMS = 1024
# Values in the whole body (array items, object members and brackets, counted by the separators
# and brackets outside strings), and strings. Parsing and validating cost grows with the number
# of values, not bytes: 1 MB of `1,1,1...` took json.loads 80-200 ms and pydantic seconds, all on
# the event loop. These bounds are counted in C over the bytes before any parsing.
MAX_VALUES = 4096
MAX_STRINGS = 4096
MAX_CONTAINERS = 128  # arrays and objects; a request has at most 4

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(rb"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class BodyProblem:
    """What is wrong with the body: the field (dotted path, or "body") and a message naming the
    limit or the rule that was broken."""

    field: str
    message: str


class _Rejected(Exception):
    def __init__(self, problem: BodyProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def json_problem(body: bytes) -> BodyProblem | None:
    """None when the body is JSON that the schemas can judge; else what is wrong with it."""
    return checked_json(body)[0]


def checked_json(body: bytes) -> tuple[BodyProblem | None, Any]:
    """What is wrong with the body (None when the schemas can judge it), and its value when it
    parsed (None otherwise): a caller that needs the value does not parse the body again."""
    if not body.strip():
        return BodyProblem("body", "the request body is empty; send a JSON object"), None
    problem = _structure_problem(body)
    if problem is not None:
        return problem, None
    try:
        value = json.loads(body, object_pairs_hook=_object)
    except _Rejected as rejected:
        return rejected.problem, None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        return BodyProblem("body", f"the body is not valid JSON: {error.msg} ({where})"), None
    except RecursionError:  # not reached while _too_deep sees every bracket; kept as a guard
        return _depth_problem(), None
    except ValueError:  # the one other refusal of json.loads: an integer too long to convert
        limit = sys.get_int_max_str_digits()
        message = f"a number in the JSON has more than {limit:,} digits; the limit is {limit:,}"
        return BodyProblem("body", message), None
    problem = _long_list(value, "")
    if problem is None and _SURROGATE_ESCAPE.search(body):
        problem = _surrogate_problem(value, "")
    return problem, value


def _long_list(value: Any, path: str) -> BodyProblem | None:
    """The first list with more than MAX_ITEMS items, as a problem naming it (the nesting is
    at most MAX_DEPTH levels, so the recursion is bounded)."""
    if isinstance(value, list):
        field = path or "body"
        if len(value) > MAX_ITEMS:
            message = f"`{field}` has {len(value):,} items; the limit is {MAX_ITEMS:,}"
            return BodyProblem(field, message)
        children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    elif isinstance(value, dict):
        children = [
            (f"{path}.{_printable(k)}" if path else _printable(k), v) for k, v in value.items()
        ]
    else:
        return None
    for child_path, child in children:
        if isinstance(child, list | dict):
            problem = _long_list(child, child_path)
            if problem is not None:
                return problem
    return None


def _depth_problem() -> BodyProblem:
    return BodyProblem(
        "body", f"the JSON is nested more than {MAX_DEPTH} levels deep; the limit is {MAX_DEPTH}"
    )


def _structure_problem(body: bytes) -> BodyProblem | None:
    """Nesting over MAX_DEPTH, or more than MAX_VALUES values or MAX_STRINGS strings, found at a
    cost bounded by those limits (never a Python loop over every item of a hostile body)."""
    marks = sum(body.count(mark) for mark in (b",", b":", b"[", b"{"))
    if marks <= MAX_DEPTH:
        return None
    outside = body
    if b'"' in body:  # strings may hold any of these characters: count outside them only
        pieces, last, count = [], 0, 0
        # find() the next quote (fast), then match the string from there: a regex search would
        # scan the rest of a hostile body holding the GIL, the event loop's too
        while (start := body.find(b'"', last)) >= 0 and (string := _STRING.match(body, start)):
            count += 1
            if count > MAX_STRINGS:
                return _count_problem("strings", MAX_STRINGS)
            pieces.append(body[last:start])
            last = string.end()
        pieces.append(body[last:])
        outside = b"".join(pieces)
    depth, brackets = 0, outside.count(b"[") + outside.count(b"{")
    for count, bracket in enumerate(_BRACKET.finditer(outside if brackets > MAX_DEPTH else b"")):
        if count >= 2 * MAX_CONTAINERS:
            return _count_problem("arrays and objects", MAX_CONTAINERS)
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        if depth > MAX_DEPTH:
            return _depth_problem()
    if outside.count(b",") + outside.count(b":") > MAX_VALUES:
        return _count_problem("values", MAX_VALUES)
    return None


def _count_problem(what: str, limit: int) -> BodyProblem:
    message = (
        f"the JSON holds more than {limit:,} {what} (array items and object members together); "
        f"the limit is {limit:,}"
    )
    if what != "values":
        message = f"the JSON holds more than {limit:,} {what}; the limit is {limit:,}"
    return BodyProblem("body", message)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object hook: refuse an object with too many keys or a key given twice."""
    if len(pairs) > MAX_KEYS:
        message = f"a JSON object has {len(pairs):,} keys; the limit is {MAX_KEYS}"
        raise _Rejected(BodyProblem("body", message))
    result = dict(pairs)
    if len(result) < len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for key in keys if keys.count(key) > 1)
        field = _printable(twice)
        message = (
            f"`{field}` is given {keys.count(twice)} times in one JSON object; send each field once"
        )
        raise _Rejected(BodyProblem(field, message))
    return result


def _surrogate_problem(value: Any, path: str) -> BodyProblem | None:
    """The first string (or key) holding a lone UTF-16 surrogate, as a problem naming it."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found is None:
            return None
        field = path or "body"
        message = (
            f"`{field}` is not valid Unicode: a lone surrogate \\u{ord(found.group()):04x} at "
            f"character {found.start()} (a surrogate \\u escape must pair a high and a low one)"
        )
        return BodyProblem(field, message)
    items: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            name = _printable(key)
            items.append((f"{path}.{name}" if path else name, key))
            items.append((f"{path}.{name}" if path else name, item))
    elif isinstance(value, list):
        items = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    for item_path, item in items:
        problem = _surrogate_problem(item, item_path)
        if problem is not None:
            return problem
    return None


def _printable(key: str) -> str:
    """A key as it can be shown: lone surrogates escaped, so the message itself encodes."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8")
