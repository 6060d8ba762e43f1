"""The library's own cattrs converter: sessions to and from their storage form.

The storage form is a JSON-ready ``dict``: timestamps as ISO 8601 strings with offset, the state
as its value, surfaces as a list and metadata as plain dicts and lists. Structuring validates
and freezes metadata again, so a decoded session is as immutable as one the store built.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .._validate import check_aware, freeze_metadata, thaw
from ..model import Session, SessionState

__all__ = ["converter", "session_from_dict", "session_to_dict"]

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
