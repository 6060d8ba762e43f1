"""How the durable adapters store a session: the cattrs converter (the JSON-ready storage form
and back), the one JSON text both adapters write, and times as integer microseconds."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import cattrs
import pytest
from hypothesis import given, settings

from _strategies import sessions
from assistant_sessions import AdapterError, Session, SessionState
from assistant_sessions.adapters._encoding import (
    converter,
    decode_session,
    encode_session,
    encode_surfaces,
    from_micros,
    session_from_dict,
    session_to_dict,
    to_micros,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _is_plain_json(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain_json(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


@settings(max_examples=100, deadline=None)
@given(session=sessions)
def test_round_trip(session: Session) -> None:
    data = session_to_dict(session)
    assert _is_plain_json(data)
    decoded = session_from_dict(data)
    assert decoded == session
    # Through real JSON text too, as a storage adapter would keep it.
    assert session_from_dict(json.loads(json.dumps(data))) == session
    # The decoded session is as immutable as one the store built.
    _assert_frozen(decoded.metadata)
    assert isinstance(decoded.attached_surfaces, tuple)
    assert decoded.state is session.state
    for name in ("created_at", "last_activity_at", "state_changed_at"):
        assert getattr(decoded, name).utcoffset() == getattr(session, name).utcoffset()


def _assert_frozen(value: Any) -> None:
    if isinstance(value, Mapping):
        assert isinstance(value, MappingProxyType)
        for item in value.values():
            _assert_frozen(item)
    else:
        assert not isinstance(value, list | dict)
        if isinstance(value, tuple):
            for item in value:
                _assert_frozen(item)


def test_storage_form() -> None:
    session = Session(
        "s1",
        "u1",
        None,
        SessionState.SUSPENDED,
        T0,
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=2),
        ("web",),
        MappingProxyType({"k": (1, MappingProxyType({"x": None}))}),
    )
    assert session_to_dict(session) == {
        "id": "s1",
        "user_id": "u1",
        "workspace_id": None,
        "state": "suspended",
        "created_at": "2026-01-01T00:00:00+00:00",
        "last_activity_at": "2026-01-01T00:00:01+00:00",
        "state_changed_at": "2026-01-01T00:00:02+00:00",
        "attached_surfaces": ["web"],
        "metadata": {"k": [1, {"x": None}]},
    }


def test_the_library_has_its_own_converter() -> None:
    assert isinstance(converter, cattrs.Converter)
    assert converter is not cattrs.global_converter


def _good() -> dict[str, Any]:
    return session_to_dict(Session("s1", "u1", "w1", SessionState.ACTIVE, T0, T0, T0, ("web",)))


def _without(key: str) -> dict[str, Any]:
    data = _good()
    del data[key]
    return data


def _with(**changes: Any) -> dict[str, Any]:
    return {**_good(), **changes}


@pytest.mark.parametrize(
    "data",
    [
        _without("id"),
        _without("state"),
        _without("created_at"),
        _with(extra="field"),
        _with(state="bogus"),
        _with(state="ACTIVE"),
        _with(created_at="not a timestamp"),
        _with(created_at="2026-01-01T00:00:00"),  # naive
        _with(last_activity_at=12345),
        _with(metadata=["not", "a", "mapping"]),
        _with(metadata={"nan": math.nan}),
        _with(metadata={"obj": {"set": {1, 2}}}),
    ],
    ids=[
        "missing-id",
        "missing-state",
        "missing-created_at",
        "extra-key",
        "unknown-state",
        "state-name-not-value",
        "bad-timestamp",
        "naive-timestamp",
        "number-timestamp",
        "metadata-list",
        "metadata-nan",
        "metadata-set",
    ],
)
def test_bad_data_raises(data: dict[str, Any]) -> None:
    with pytest.raises(cattrs.BaseValidationError):
        session_from_dict(data)


def test_good_data_decodes() -> None:
    decoded = session_from_dict(_good())
    assert decoded.id == "s1"
    assert decoded.state is SessionState.ACTIVE
    assert decoded.created_at == T0


# -- the JSON text both durable adapters store ------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(session=sessions)
def test_the_hand_written_encoding_is_the_converters(session: Session) -> None:
    """Sessions are written by a hand-written encoder (it is on the hot path), and read back
    with the converter: both must agree on every session."""
    text = encode_session(session)
    # The very text of the converter's storage form: compact ASCII JSON.
    assert text == json.dumps(session_to_dict(session), allow_nan=False, separators=(",", ":"))
    assert text.isascii()
    assert encode_session(session, encode_surfaces(session.attached_surfaces)) == text
    assert decode_session(text, session.id) == session
    assert decode_session(text.encode(), session.id) == session


@settings(max_examples=50, deadline=None)
@given(session=sessions)
def test_utf8_text_of_the_storage_form_decodes_too(session: Session) -> None:
    text = json.dumps(session_to_dict(session), ensure_ascii=False)
    assert decode_session(text, session.id) == session
    assert decode_session(text.encode(), session.id) == session


@pytest.mark.parametrize("data", ["{oops", "[]", '{"id": "s1"}', b"\xff", 17])
def test_text_that_is_not_a_session_fails_naming_it(data: object) -> None:
    with pytest.raises(AdapterError, match="session 's1' cannot be decoded") as caught:
        decode_session(data, "s1")  # type: ignore[arg-type]
    assert caught.value.__cause__ is not None


# -- times --------------------------------------------------------------------------------------


def test_micros_are_exact_and_ordered() -> None:
    moments = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    micros = [to_micros(m) for m in moments]
    assert micros == sorted(micros)
    assert micros[2] == 0
    assert [from_micros(m) for m in micros] == moments


def test_micros_ignore_the_offset() -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2026, 1, 1, 2, 0, 0, 5, tzinfo=plus2)
    assert to_micros(local) == to_micros(datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=UTC))
    assert from_micros(to_micros(local)) == local
