"""Spec errors: `SpecError` (one ``FILE: KEY: message`` line per problem), and pydantic's
validation errors rewritten as such lines (the key path a user wrote, what is allowed)."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Tag

from reset_tune.errors import ConfigError
from reset_tune.search.spec._vocabulary import did_you_mean


class SpecError(ConfigError):
    """A spec has problems; `problems` holds one ``FILE: KEY: message`` line per problem."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = [
            f"{source}: {path}: {msg}" if path else f"{source}: {msg}" for path, msg in problems
        ]
        super().__init__("\n".join(self.problems))


# -- pydantic errors -> one line each ------------------------------------------------------------
def _strip_annotated(tp: Any) -> tuple[Any, tuple[Any, ...]]:
    metadata: tuple[Any, ...] = ()
    while typing.get_origin(tp) is Annotated:
        metadata += tp.__metadata__
        tp = typing.get_args(tp)[0]
    return tp, metadata


def _union_members(tp: Any) -> dict[str, Any]:
    """Tag -> member type for a tagged union (either `Tag(...)` or a `type: Literal[...]`)."""
    members: dict[str, Any] = {}
    for arg in typing.get_args(tp):
        inner, metadata = _strip_annotated(arg)
        tags = [m.tag for m in metadata if isinstance(m, Tag)]
        if not tags and isinstance(inner, type) and issubclass(inner, BaseModel):
            kind = inner.model_fields.get("type")
            tags = list(typing.get_args(kind.annotation)) if kind else []
        for tag in tags:
            members[tag] = inner
    return members


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, Any]:
    """The dotted key path of a pydantic `loc` in `root` (union tags dropped) and the type it
    ends at (None where it cannot be told)."""
    path = ""
    tp: Any = root
    for part in loc:
        tp, _ = _strip_annotated(tp)
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            members = _union_members(tp)
            if part in members:
                tp = members[part]
                continue
            tp = None
        if isinstance(part, int):
            path += f"[{part}]"
            args = typing.get_args(tp)
            tp = args[0] if typing.get_origin(tp) is list and args else None
            continue
        path += f".{part}" if path else str(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            tp = None
    tp, _ = _strip_annotated(tp) if tp is not None else (None, ())
    return path, tp


def describe_error(root: type[BaseModel], error: Mapping[str, Any]) -> tuple[str, str]:
    """(key path, message) for one of pydantic's errors validating `root`."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        path, _ = _walk(root, loc)
        _, parent = _walk(root, loc[:-1])
        allowed = (
            list(parent.model_fields)
            if isinstance(parent, type) and issubclass(parent, BaseModel)
            else []
        )
        hint = did_you_mean(str(loc[-1]), allowed)
        return path, f"unknown key{hint}; allowed: {', '.join(allowed)}"
    path, _ = _walk(root, loc)
    if kind == "missing":
        return path, "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        _, union = _walk(root, loc)
        tags = [t for t in _union_members(union) if t != "fixed"]
        params = path.startswith("params.")
        extra = " (or a plain value to fix the parameter)" if params else ""
        if kind == "union_tag_not_found" or not isinstance(ctx.get("tag"), str):
            return path, f"needs `type:` — one of {', '.join(tags)}{extra}"
        return path, f"unknown type {ctx['tag']!r}; allowed: {', '.join(tags)}{extra}"
    msg = str(error["msg"])
    if kind == "value_error":
        return path, msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        return path, f"must be a mapping of keys, got {value!r}"
    msg = re.sub(r"^(Input|List|Value|Dictionary|String) should ", "must ", msg)
    msg = re.sub(r"^must have at least (\d+) items?.*", r"must list at least \1 item(s)", msg)
    if not isinstance(value, dict):
        msg += f", got {value!r}"
    return path, msg
