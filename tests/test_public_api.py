"""The package's public names: ``__all__`` lists exactly what the package exports."""

from __future__ import annotations

import inspect
import types

import assistant_sessions

#: The contract of DESIGN.md section 4 (the Redis adapter is optional there and lives elsewhere).
DESIGN_NAMES = {
    "create_session_store",
    "SessionStore",
    "InMemorySessionStoreAdapter",
    "default_affinity_resolver",
    "AffinityResolver",
    "resolve_session",
    "Session",
    "SessionState",
    "SessionError",
    "SessionNotFoundError",
    "SessionConflictError",
    "SessionStateError",
    "StoreClosedError",
}


def _public_names() -> set[str]:
    """Public attributes of the package, leaving out its submodules."""
    return {
        name
        for name, value in vars(assistant_sessions).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def test_all_matches_the_public_names() -> None:
    exported = assistant_sessions.__all__
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    assert set(exported) == _public_names()


def test_every_listed_name_exists() -> None:
    for name in assistant_sessions.__all__:
        assert getattr(assistant_sessions, name, None) is not None, name


def test_the_design_contract_is_exported() -> None:
    assert set(assistant_sessions.__all__) >= DESIGN_NAMES


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from assistant_sessions import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(assistant_sessions.__all__)


def test_public_objects_are_documented() -> None:
    undocumented = [
        name
        for name in assistant_sessions.__all__
        if (inspect.isclass(obj := getattr(assistant_sessions, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert undocumented == []


def test_session_store_methods_of_the_contract() -> None:
    store_type = assistant_sessions.SessionStore
    for method in (
        "create",
        "get",
        "find",
        "touch",
        "attach_surface",
        "detach_surface",
        "expire",
        "sweep_stale",
        "update_metadata",
        "resolve",
    ):
        function = getattr(store_type, method)
        assert inspect.iscoroutinefunction(function), method
        assert inspect.getdoc(function), method


def test_create_session_store_signature() -> None:
    parameters = inspect.signature(assistant_sessions.create_session_store).parameters
    assert parameters["adapter"].default is None
    for name, default in (
        ("default_ttl", 3600),
        ("sweep_interval", None),
        ("expire_after", None),
        ("clock", None),
    ):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameters[name].default == default, name
