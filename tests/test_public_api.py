"""The package's public names: ``__all__`` lists exactly what the package exports."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

import assistant_sessions
import assistant_sessions.__main__ as cli

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
        ("sweep_interval", 60),
        ("expire_after", 86400),
        ("purge_after", 30 * 86400),
        ("clock", None),
    ):
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert parameters[name].default == default, name


def _readme_defaults() -> dict[str, object]:
    """The keywords of the README's "Lifecycle options" block, evaluated."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Lifecycle options", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    call = ast.parse(block, mode="eval").body
    assert isinstance(call, ast.Call)
    assert isinstance(call.func, ast.Name)
    assert call.func.id == "create_session_store"
    assert not call.args
    found: dict[str, object] = {}
    for keyword in call.keywords:
        assert keyword.arg is not None
        assert keyword.arg not in found, keyword.arg
        code = compile(ast.Expression(keyword.value), "README.md", "eval")
        found[keyword.arg] = eval(code, {"__builtins__": {}})  # our own README
    return found


def test_readme_states_the_defaults_of_create_session_store() -> None:
    parameters = inspect.signature(assistant_sessions.create_session_store).parameters
    documented = _readme_defaults()
    # Every option is documented, with the default the code has: they cannot drift apart.
    assert set(documented) == set(parameters)
    for name, value in documented.items():
        default = parameters[name].default
        assert type(value) is type(default), (name, value, default)
        assert value == default, (name, value, default)


def test_version_is_the_package_metadata_and_pyproject_version() -> None:
    pyproject = tomllib.loads(
        (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    )
    assert assistant_sessions.__version__ == importlib.metadata.version("assistant-sessions")
    assert assistant_sessions.__version__ == pyproject["project"]["version"]


def test_the_command_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"assistant-sessions {assistant_sessions.__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "assistant_sessions", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        done.stdout.strip()
        == f"assistant-sessions {importlib.metadata.version('assistant-sessions')}"
    )
