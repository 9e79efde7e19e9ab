"""Config problems in words: a msgspec ValidationError becomes `at $.key.path: Expected ..., got ...`, with a close
match for a misspelt key and the value as TOML spells it. The schema's own checks (`__post_init__`) raise with
`fail(key, ...)`, which names the key, so the problem lands on `$.<table>.<key>`."""
import difflib
import re
from typing import Any

import msgspec


class ConfigError(ValueError):
    """Every problem found, one per line, each `FILE: at $.key.path: expected ..., got ...`."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def fail(key: str, expected: str, got: Any) -> None:
    """Raise from __post_init__ so that the loader reports `$.<parent>.<key>` (see explain)."""
    raise ValueError(f"`{key}`: {expected}, got {show(got)}")


def unsupported(key: str, why: str) -> None:
    """A key that is accepted by no part of the engine yet: refused, never silently ignored."""
    raise ValueError(f"`{key}`: not supported yet: {why}; remove it")


def close_match(value: str, known) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    return f'; did you mean "{close[0]}"?' if close else ""


_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
SECRET_KEYS = ("token",)  # keys whose values an error never repeats (the API's bearer tokens)


def explain(message: str, data: Any, struct_type, pattern_text: dict[str, str]) -> str:
    """Turn a msgspec ValidationError message into `at $.key.path: Expected ..., got ...`; pattern_text says in
    words what each string pattern of the schema means."""
    text, sep, where = message.rpartition(" - at `")
    if sep:
        path = where.rstrip("`")
    else:
        text, path = message, "$"
    lifted = re.match(r"^`([^`]+)`: (.*)$", text, re.S)  # a __post_init__ error names its own key
    if lifted:
        key, text = lifted.groups()
        return f"at {path}.{key}: {text}"
    if match := re.match(r"^Object contains unknown field `(.+)`$", text):
        key = match[1]
        known = [f.encode_name for f in _struct_fields(struct_type, path)]
        return f"at {path}.{key}: unknown key; expected one of: {', '.join(known)}{close_match(key, known)}"
    if match := re.match(r"^Object missing required field `(.+)`$", text):
        key = match[1]
        kind = _type_at(struct_type, f"{path}.{key}")
        return f"at {path}.{key}: missing required key; expected {_describe(kind, pattern_text)}"
    got = _HIDDEN if path.rpartition(".")[2] in SECRET_KEYS else _value_at(data, path)
    expected = _type_at(struct_type, path)
    if (text.startswith("Invalid enum value") or text.startswith("Expected `str` matching regex")
            or (text.startswith("Expected `object | null`") and isinstance(expected, msgspec.inspect.StructType))):
        return f"at {path}: Expected {_describe(expected, pattern_text)}, got {show(got)}"
    text = text.replace("`object`", "a table").replace("`array`", "an array").replace("`", "")
    if ", got " in text:
        text += f" ({show(got)})" if isinstance(got, (str, bool, int, float)) else ""
    elif got is not _MISSING:
        text += f", got {show(got)}"
    return f"at {path}: {text}"


_MISSING = object()
_HIDDEN = object()


def _segments(path: str):
    return [key if key else int(index) for key, index in _SEGMENT.findall(path)]


def _value_at(data: Any, path: str):
    for segment in _segments(path):
        try:
            data = data[segment]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _unwrap(info):
    while True:
        if isinstance(info, msgspec.inspect.Metadata):
            info = info.type
        elif isinstance(info, msgspec.inspect.UnionType):
            others = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
            if len(others) != 1:
                return info
            info = others[0]
        else:
            return info


def _type_at(struct_type, path: str):
    info = msgspec.inspect.type_info(struct_type)
    for segment in _segments(path):
        info = _unwrap(info)
        if isinstance(segment, int) and hasattr(info, "item_type"):
            info = info.item_type
        elif isinstance(info, msgspec.inspect.StructType):
            matches = [f.type for f in info.fields if f.encode_name == segment]
            if not matches:
                return None
            info = matches[0]
        else:
            return None
    return _unwrap(info)


def _struct_fields(struct_type, path: str):
    info = _type_at(struct_type, path)
    return info.fields if isinstance(info, msgspec.inspect.StructType) else ()


def _bounds(info) -> str:
    parts = [f"{op} {getattr(info, name)}" for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
             if getattr(info, name, None) is not None]
    return " " + " and ".join(parts) if parts else ""


def _describe(info, pattern_text) -> str:
    inspect = msgspec.inspect
    if isinstance(info, inspect.IntType):
        return "int" + _bounds(info)
    if isinstance(info, inspect.FloatType):
        return "float" + _bounds(info)
    if isinstance(info, inspect.BoolType):
        return "true or false"
    if isinstance(info, inspect.StrType):
        return pattern_text.get(info.pattern, f"string matching {info.pattern}") if info.pattern else "string"
    if isinstance(info, inspect.LiteralType):
        return "one of " + ", ".join(show(v) for v in info.values)
    if isinstance(info, inspect.StructType):
        return "a table with keys " + ", ".join(f.encode_name for f in info.fields)
    if hasattr(info, "item_type"):
        return f"an array of {_describe(_unwrap(info.item_type), pattern_text)}"
    return "a value"


def show(value: Any) -> str:
    """A value as TOML spells it."""
    if value is _MISSING:
        return "nothing"
    if value is _HIDDEN:
        return "a secret (not shown)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)
