"""How the durable adapters store a session: its storage form, its JSON text, and its times.

The *storage form* is what the library's own cattrs converter makes of a session: a JSON-ready
``dict`` with timestamps as ISO 8601 strings with offset, the state as its value, surfaces as a
list and metadata as plain dicts and lists. Structuring validates and freezes metadata again, so
a decoded session is as immutable as one the store built.

Both the SQLite and the Redis adapter store that form as the same JSON text,
:func:`encode_session`: compact, and ASCII (``json.dumps(form, separators=(",", ":"),
allow_nan=False)``). ASCII, because then every id and metadata string survives whatever lies
between the library and the bytes stored -- a server's locale, a database's text encoding, a
driver -- and no storage ever has to encode text; it is also what the Redis adapter has always
stored. :func:`decode_session` reads any JSON text of the storage form, ASCII or not (SQLite
rows written before held UTF-8 text), through the converter alone.

Times that storage orders or compares (index scores, SQL columns) are integer microseconds since
the Unix epoch, UTC: :func:`to_micros` and :func:`from_micros`, exact for every ``datetime``.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .._validate import check_aware, freeze_metadata, thaw
from ..errors import AdapterError
from ..model import Session, SessionState

__all__ = [
    "converter",
    "decode_session",
    "encode_metadata",
    "encode_session",
    "encode_surfaces",
    "from_micros",
    "session_from_dict",
    "session_to_dict",
    "to_micros",
]

converter = cattrs.Converter()
converter.register_unstructure_hook(datetime, datetime.isoformat)
converter.register_structure_hook(
    datetime, lambda value, _: check_aware(datetime.fromisoformat(value), "timestamp")
)
converter.register_unstructure_hook(SessionState, lambda state: state.value)
converter.register_structure_hook(SessionState, lambda value, _: SessionState(value))
converter.register_unstructure_hook(
    Session,
    make_dict_unstructure_fn(
        Session,
        converter,
        attached_surfaces=override(unstruct_hook=list),
        metadata=override(unstruct_hook=thaw),
    ),
)
converter.register_structure_hook(
    Session,
    make_dict_structure_fn(
        Session,
        converter,
        _cattrs_forbid_extra_keys=True,
        attached_surfaces=override(struct_hook=lambda value, _: tuple(map(str, value))),
        metadata=override(struct_hook=lambda value, _: freeze_metadata(value)),
    ),
)


def session_to_dict(session: Session) -> dict[str, Any]:
    """The storage form of ``session``."""
    result: dict[str, Any] = converter.unstructure(session)
    return result


def session_from_dict(data: Mapping[str, Any]) -> Session:
    """The session stored as ``data``.

    Raises:
        cattrs.BaseValidationError: ``data`` is not a valid stored session.
    """
    return converter.structure(data, Session)


# -- the JSON text ----------------------------------------------------------------------------


def _json_encoder() -> Callable[[Any], str]:
    """``json.dumps(value, allow_nan=False, separators=(",", ":"))``, fast.

    ``json.dumps`` with options builds a new encoder on every call, and even a kept
    ``JSONEncoder`` builds its C encoder again on every call: together more than the encoding
    of a session. So the C encoder is built once (the same one ``JSONEncoder`` builds, without
    the check for circular references: documents are trees), where the interpreter has one.
    """
    options = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - interpreters without the C accelerator
        return options.encode
    try:
        # (markers, default, encoder, indent, key_separator, item_separator, sort_keys,
        # skipkeys, allow_nan), as JSONEncoder.iterencode passes them.
        encode_string = json.encoder.encode_basestring_ascii
        chunks = make(None, options.default, encode_string, None, ":", ",", False, False, False)
    except TypeError:  # pragma: no cover - a C encoder with another signature
        return options.encode
    return lambda value: "".join(chunks(value, 0))


_encode_json: Final = _json_encoder()

#: The ASCII JSON text of a string, as the encoder above writes strings.
_encode_string: Final = json.encoder.encode_basestring_ascii


def encode_surfaces(surfaces: Iterable[str]) -> str:
    """The JSON text of a session's ``attached_surfaces``, as :func:`encode_session` has it."""
    return "[" + ",".join(map(_encode_string, surfaces)) + "]"


def encode_metadata(metadata: Mapping[str, Any]) -> str:
    """The JSON text of a session's ``metadata``, as :func:`encode_session` has it."""
    return _encode_json(thaw(metadata)) if metadata else "{}"


def encode_session(
    session: Session, surfaces: str | None = None, metadata: str | None = None
) -> str:
    """The JSON text of the storage form of ``session`` (ASCII; see the module documentation).

    The text is put together directly, in the converter's key order: the same text as
    ``json.dumps(session_to_dict(session), allow_nan=False, separators=(",", ":"))`` (a property
    test checks it for any session), without building the dict -- a commit is on the hot path,
    and the converter's generic unstructuring costs more than the rest of the encoding.
    Timestamps and the state are ASCII with nothing to escape.

    Args:
        session: The session.
        surfaces: :func:`encode_surfaces` of its surfaces, if the caller has it already.
        metadata: :func:`encode_metadata` of its metadata, if the caller has it already.
    """
    workspace = session.workspace_id
    return "".join(
        (
            '{"id":',
            _encode_string(session.id),
            ',"user_id":',
            _encode_string(session.user_id),
            ',"workspace_id":',
            "null" if workspace is None else _encode_string(workspace),
            ',"state":"',
            str(session.state),  # a StrEnum: its value, faster than .value
            '","created_at":"',
            session.created_at.isoformat(),
            '","last_activity_at":"',
            session.last_activity_at.isoformat(),
            '","state_changed_at":"',
            session.state_changed_at.isoformat(),
            '","attached_surfaces":',
            encode_surfaces(session.attached_surfaces) if surfaces is None else surfaces,
            ',"metadata":',
            encode_metadata(session.metadata) if metadata is None else metadata,
            "}",
        )
    )


def decode_session(data: str | bytes, session_id: str) -> Session:
    """The session whose JSON text (ASCII or UTF-8) is ``data``.

    Raises:
        AdapterError: ``data`` is not a stored session (naming ``session_id``); the decoding
            error is the ``__cause__``.
    """
    try:
        return session_from_dict(json.loads(data))
    except Exception as exc:
        raise AdapterError(
            f"stored session {session_id!r} cannot be decoded ({type(exc).__name__}: {exc})"
        ) from exc


# -- times ------------------------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Integer microseconds since the Unix epoch, UTC, of an aware ``datetime`` (exact)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The aware UTC ``datetime`` of :func:`to_micros` (exact)."""
    return _EPOCH + micros * _MICROSECOND
