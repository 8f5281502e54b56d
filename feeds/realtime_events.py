"""Typed events of the realtime venue's cold messages, decoded with ``json``.

Chat, presence, notifications, posts and sessions are rare next to market data, so
they are parsed with the standard library into frozen dataclasses (the hot messages,
market:price and trade:created, are decoded in Cython by ``feeds.realtime_decode``).
Wire shapes (``ts`` is integer ns since the epoch and optional, 0 when absent)::

    {"type":"chat:message","room":"general","id":"m-17","userId":"u-7","user":"alice","text":"hi","ts":…}
    {"type":"user:online","userId":"u-7","user":"alice","online":true,"ts":…}
    {"type":"notification:new","id":"n-3","title":"Deposit","body":"1 BTC arrived","level":"info","ts":…}
    {"type":"post:created","id":"p-9","authorId":"u-7","title":"Q3","body":"…","ts":…}
    {"type":"session:started","sessionId":"s-1","userId":"u-7","ts":…}

Optional fields and their defaults: ``ts`` 0, ``user`` "", ``online`` true, ``body`` "",
``level`` "info"; every other field shown is required. ``decode_event(kind, raw,
recv_ns)`` returns the event or raises DecodeError naming the missing or mistyped
field; unknown fields are ignored (the server may add some).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Union

from engine.errors import DecodeError

__all__ = [
    "ChatMessage", "UserOnline", "Notification", "PostCreated", "SessionStarted",
    "RealtimeEvent", "EVENT_TYPES", "decode_event", "parse_object",
]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """``chat:message``: a message posted in ``room`` by ``user_id`` (display name
    ``user``). ``ts_ns`` venue time (0 if absent), ``recv_ns`` local receive time."""

    room: str
    message_id: str
    user_id: str
    user: str
    text: str
    ts_ns: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class UserOnline:
    """``user:online``: ``user_id`` came online (``online`` True) or went offline."""

    user_id: str
    user: str
    online: bool
    ts_ns: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Notification:
    """``notification:new``: a notification for this user; ``level`` as sent
    ("info", "warning", ...)."""

    notification_id: str
    title: str
    body: str
    level: str
    ts_ns: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class PostCreated:
    """``post:created``: a new post by ``author_id``."""

    post_id: str
    author_id: str
    title: str
    body: str
    ts_ns: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """``session:started``: the server opened session ``session_id`` for ``user_id``
    (sent after a successful ``auth``)."""

    session_id: str
    user_id: str
    ts_ns: int
    recv_ns: int


RealtimeEvent = Union[ChatMessage, UserOnline, Notification, PostCreated, SessionStarted]


def parse_object(kind: str, raw: bytes) -> dict[str, Any]:
    """``raw`` as a JSON object; DecodeError naming ``kind`` otherwise."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise DecodeError(f"realtime {kind}: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"realtime {kind}: expected a JSON object")
    return obj


def _str(kind: str, obj: dict[str, Any], field: str, default: str | None = None) -> str:
    value = obj.get(field, default)
    if not isinstance(value, str):
        what = "missing" if field not in obj else f"must be a string, got {type(value).__name__}"
        raise DecodeError(f"realtime {kind}: field {field!r} {what}")
    return value


def _ts(kind: str, obj: dict[str, Any]) -> int:
    value = obj.get("ts", 0)
    if type(value) is not int or value < 0:
        raise DecodeError(f"realtime {kind}: field 'ts' must be a non-negative integer (ns), got {value!r}")
    return value


def _chat(k: str, o: dict[str, Any], recv_ns: int) -> ChatMessage:
    return ChatMessage(_str(k, o, "room"), _str(k, o, "id"), _str(k, o, "userId"), _str(k, o, "user", ""),
                       _str(k, o, "text"), _ts(k, o), recv_ns)


def _online(k: str, o: dict[str, Any], recv_ns: int) -> UserOnline:
    online = o.get("online", True)
    if not isinstance(online, bool):
        raise DecodeError(f"realtime {k}: field 'online' must be true or false, got {online!r}")
    return UserOnline(_str(k, o, "userId"), _str(k, o, "user", ""), online, _ts(k, o), recv_ns)


def _notification(k: str, o: dict[str, Any], recv_ns: int) -> Notification:
    return Notification(_str(k, o, "id"), _str(k, o, "title"), _str(k, o, "body", ""),
                        _str(k, o, "level", "info"), _ts(k, o), recv_ns)


def _post(k: str, o: dict[str, Any], recv_ns: int) -> PostCreated:
    return PostCreated(_str(k, o, "id"), _str(k, o, "authorId"), _str(k, o, "title"), _str(k, o, "body", ""),
                       _ts(k, o), recv_ns)


def _session(k: str, o: dict[str, Any], recv_ns: int) -> SessionStarted:
    return SessionStarted(_str(k, o, "sessionId"), _str(k, o, "userId"), _ts(k, o), recv_ns)


#: Wire type -> decoder of the typed event.
EVENT_TYPES: dict[str, Callable[[str, dict[str, Any], int], RealtimeEvent]] = {
    "chat:message": _chat,
    "user:online": _online,
    "notification:new": _notification,
    "post:created": _post,
    "session:started": _session,
}


def decode_event(kind: str, raw: bytes, recv_ns: int) -> RealtimeEvent:
    """The typed event of a cold message of type ``kind`` (a key of EVENT_TYPES).
    DecodeError for malformed JSON, a missing/mistyped field or an unknown kind. O(len)."""
    fn = EVENT_TYPES.get(kind)
    if fn is None:
        raise DecodeError(f"realtime: unknown event type {kind!r}")
    return fn(kind, parse_object(kind, raw), recv_ns)
