"""Hypothesis strategies shared by the tests: any session the store could hold.

Ids and text are any Unicode without lone surrogates (which JSON cannot carry through UTF-8),
timestamps carry several UTC offsets, and metadata is any JSON, frozen the way the store
freezes it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from hypothesis import strategies as st

from assistant_sessions import Session, SessionState

__all__ = ["freeze", "ids", "json_values", "moments", "sessions", "texts"]

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=15,
)
moments = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))]
    ),
)


def freeze(value: Any) -> Any:
    """Freeze plain JSON data the way the store does: read-only mappings and tuples."""
    if isinstance(value, dict):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return value


sessions = st.builds(
    Session,
    id=ids,
    user_id=ids,
    workspace_id=st.none() | ids,
    state=st.sampled_from(SessionState),
    created_at=moments,
    last_activity_at=moments,
    state_changed_at=moments,
    attached_surfaces=st.lists(ids, max_size=4, unique=True).map(tuple),
    metadata=st.dictionaries(texts, json_values, max_size=5).map(freeze),
)
