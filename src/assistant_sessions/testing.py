"""Public test helpers: a fake clock, and the contract suite every adapter must pass.

To check an adapter of your own, subclass :class:`AdapterContract` in a pytest module and give
it an ``adapter`` fixture that yields a fresh, empty adapter (not yet opened); the anyio pytest
plugin runs each test on the backends your ``anyio_backend`` fixture names. This module imports
pytest, so import it from tests only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from ._validate import check_aware, check_duration
from .adapters.base import GroupLoadAdapter, Rejection, SessionStoreAdapter, UserCommit
from .model import Session, SessionQuery, SessionState

__all__ = ["AdapterContract", "FakeClock"]

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock for tests: time stands still until :meth:`advance` or :meth:`set` moves it.

    Pass it as ``create_session_store(clock=FakeClock())``.
    """

    def __init__(self, start: datetime = _EPOCH) -> None:
        self._now = check_aware(start, "start")

    def __call__(self) -> datetime:
        return self._now

    def advance(self, by: float | timedelta) -> datetime:
        """Move the time forward by seconds or a ``timedelta``; return the new time."""
        self._now += check_duration(by, "by")
        return self._now

    def set(self, now: datetime) -> None:
        """Set the time (it may move backwards, as wall clocks sometimes do)."""
        self._now = check_aware(now, "now")


def _session(
    session_id: str,
    user_id: str,
    at: datetime,
    *,
    state: SessionState = SessionState.ACTIVE,
    workspace_id: str | None = None,
    surfaces: tuple[str, ...] = (),
    changed_at: datetime | None = None,
) -> Session:
    return Session(
        session_id,
        user_id,
        workspace_id,
        state,
        at,
        at,
        changed_at or at,
        surfaces,
        MappingProxyType({"n": 1, "nested": MappingProxyType({"list": (1, "two", None)})}),
    )


class AdapterContract:
    """The contract of :mod:`assistant_sessions.adapters.base`, as tests.

    Subclasses provide an ``adapter`` fixture yielding a fresh adapter that is not yet open.
    """

    @pytest.fixture
    async def opened(self, adapter: SessionStoreAdapter) -> AsyncIterator[SessionStoreAdapter]:
        """The adapter, opened for the test and closed after it."""
        await adapter.open()
        try:
            yield adapter
        finally:
            await adapter.aclose()

    async def _commit(self, adapter: SessionStoreAdapter, *commits: UserCommit) -> None:
        assert await adapter.commit(commits) == [None] * len(commits)

    @pytest.mark.anyio
    async def test_unknown_user_loads_empty_at_version_zero(
        self, opened: SessionStoreAdapter
    ) -> None:
        snapshot = await opened.load_user("nobody")
        assert (snapshot.user_id, snapshot.version, snapshot.sessions) == ("nobody", 0, ())

    @pytest.mark.anyio
    async def test_load_users_reads_each_user_as_load_user_does(
        self, opened: SessionStoreAdapter
    ) -> None:
        if not isinstance(opened, GroupLoadAdapter):
            pytest.skip(f"{type(opened).__name__} is not a GroupLoadAdapter")
        sessions = [_session(f"s{i}", f"u{i}", _EPOCH, surfaces=("web",)) for i in range(3)]
        await self._commit(opened, *(UserCommit(s.user_id, 0, (s,)) for s in sessions))
        await self._commit(opened, UserCommit("u1", 1, (_session("t1", "u1", _EPOCH),)))
        users = ["u2", "nobody", "u0", "u1"]
        loaded = await opened.load_users(users)
        assert loaded == [await opened.load_user(user) for user in users]
        assert [(s.user_id, s.version, len(s.sessions)) for s in loaded] == [  # type: ignore[union-attr]
            ("u2", 1, 1),
            ("nobody", 0, 0),
            ("u0", 1, 1),
            ("u1", 2, 2),
        ]

    @pytest.mark.anyio
    async def test_commit_round_trips_and_bumps_version(self, opened: SessionStoreAdapter) -> None:
        s = _session("s1", "u1", _EPOCH, workspace_id="w", surfaces=("web", "slack"))
        await self._commit(opened, UserCommit("u1", 0, (s,)))
        snapshot = await opened.load_user("u1")
        assert snapshot.version == 1
        assert snapshot.sessions == (s,)
        assert await opened.get("s1") == s
        assert await opened.get("missing") is None

    @pytest.mark.anyio
    async def test_stale_version_is_rejected_and_changes_nothing(
        self, opened: SessionStoreAdapter
    ) -> None:
        first = _session("s1", "u1", _EPOCH)
        await self._commit(opened, UserCommit("u1", 0, (first,)))
        second = _session("s2", "u1", _EPOCH)
        assert await opened.commit((UserCommit("u1", 0, (second,)),)) == [Rejection.VERSION]
        snapshot = await opened.load_user("u1")
        assert snapshot.version == 1
        assert snapshot.sessions == (first,)

    @pytest.mark.anyio
    async def test_users_in_one_batch_are_independent(self, opened: SessionStoreAdapter) -> None:
        await self._commit(opened, UserCommit("u1", 0, (_session("a", "u1", _EPOCH),)))
        result = await opened.commit(
            (
                UserCommit("u1", 0, (_session("b", "u1", _EPOCH),)),
                UserCommit("u2", 0, (_session("c", "u2", _EPOCH),)),
            )
        )
        assert result == [Rejection.VERSION, None]
        assert await opened.get("b") is None
        assert await opened.get("c") is not None

    @pytest.mark.anyio
    async def test_duplicate_session_id_of_another_user_is_rejected(
        self, opened: SessionStoreAdapter
    ) -> None:
        await self._commit(opened, UserCommit("u1", 0, (_session("same", "u1", _EPOCH),)))
        clash = _session("same", "u2", _EPOCH)
        assert await opened.commit((UserCommit("u2", 0, (clash,)),)) == [Rejection.DUPLICATE_ID]
        assert (await opened.load_user("u2")).version == 0
        stored = await opened.get("same")
        assert stored is not None
        assert stored.user_id == "u1"

    @pytest.mark.anyio
    async def test_update_and_delete(self, opened: SessionStoreAdapter) -> None:
        a = _session("a", "u1", _EPOCH)
        b = _session("b", "u1", _EPOCH)
        await self._commit(opened, UserCommit("u1", 0, (a, b)))
        later = _EPOCH + timedelta(minutes=5)
        a2 = _session("a", "u1", later, surfaces=("phone",))
        await self._commit(opened, UserCommit("u1", 1, (a2,), ("b",)))
        snapshot = await opened.load_user("u1")
        assert snapshot.version == 2
        assert snapshot.sessions == (a2,)
        assert await opened.get("b") is None

    @pytest.mark.anyio
    async def test_find_filters_and_orders_most_recent_first(
        self, opened: SessionStoreAdapter
    ) -> None:
        t = [_EPOCH + timedelta(seconds=i) for i in range(5)]
        sessions = [
            _session("a", "u1", t[0], workspace_id="w1", surfaces=("web",)),
            _session("b", "u1", t[3], workspace_id="w2"),
            _session("c", "u1", t[2], state=SessionState.SUSPENDED, workspace_id="w1"),
            _session("d", "u2", t[4], workspace_id="w1", surfaces=("web",)),
        ]
        await self._commit(
            opened,
            UserCommit("u1", 0, tuple(sessions[:3])),
            UserCommit("u2", 0, (sessions[3],)),
        )

        async def ids(**filters: object) -> list[str]:
            return [s.id for s in await opened.find(SessionQuery(**filters))]  # type: ignore[arg-type]

        assert await ids() == ["d", "b", "c", "a"]
        assert await ids(user_id="u1") == ["b", "c", "a"]
        assert await ids(workspace_id="w1") == ["d", "c", "a"]
        assert await ids(state=SessionState.SUSPENDED) == ["c"]
        assert await ids(surface_id="web") == ["d", "a"]
        assert await ids(active_after=t[2]) == ["d", "b"]
        assert await ids(limit=2) == ["d", "b"]
        assert await ids(user_id="u1", workspace_id="w1", surface_id="web") == ["a"]
        assert await ids(user_id="nobody") == []
        # Keyset paging: `after` is the recency key of the last session of the previous page.
        assert await ids(after=(t[3], "b")) == ["c", "a"]
        assert await ids(after=(t[2], "c"), workspace_id="w1") == ["a"]
        assert await ids(user_id="u1", after=(t[0], "a")) == []

    @pytest.mark.anyio
    async def test_find_matches_any_of_several_states(self, opened: SessionStoreAdapter) -> None:
        t = [_EPOCH + timedelta(seconds=i) for i in range(6)]
        states = (
            SessionState.CREATED,
            SessionState.ACTIVE,
            SessionState.SUSPENDED,
            SessionState.EXPIRED,
        )
        u1 = tuple(
            _session(f"{state.value[0]}1", "u1", t[i], state=state)
            for i, state in enumerate(states)
        )
        u2 = (
            _session("c2", "u2", t[4], state=SessionState.CREATED, workspace_id="w"),
            _session("a2", "u2", t[5], state=SessionState.ACTIVE, workspace_id="w"),
        )
        await self._commit(opened, UserCommit("u1", 0, u1), UserCommit("u2", 0, u2))

        async def ids(*wanted: SessionState, **filters: object) -> list[str]:
            query = SessionQuery(state=frozenset(wanted), **filters)  # type: ignore[arg-type]
            return [s.id for s in await opened.find(query)]

        live = (SessionState.CREATED, SessionState.ACTIVE)
        assert await ids(*live) == ["a2", "c2", "a1", "c1"]
        assert await ids(*live, user_id="u1") == ["a1", "c1"]
        assert await ids(*live, limit=3) == ["a2", "c2", "a1"]
        assert await ids(*live, after=(t[4], "c2")) == ["a1", "c1"]
        assert await ids(*live, workspace_id="w") == ["a2", "c2"]
        assert await ids(SessionState.SUSPENDED, SessionState.EXPIRED) == ["e1", "s1"]
        assert await ids(SessionState.CREATED, SessionState.EXPIRED) == ["c2", "e1", "c1"]
        assert await ids(SessionState.ACTIVE, SessionState.SUSPENDED, user_id="u2") == ["a2"]
        assert await ids(*states) == ["a2", "c2", "e1", "s1", "a1", "c1"]
        # One state in a set is the same query as that state alone.
        assert await ids(SessionState.SUSPENDED) == ["s1"]
        assert SessionQuery(state=SessionState.SUSPENDED) == SessionQuery(
            state=frozenset((SessionState.SUSPENDED,))
        )

    @pytest.mark.anyio
    async def test_due_returns_oldest_first_by_state_clock(
        self, opened: SessionStoreAdapter
    ) -> None:
        t = [_EPOCH + timedelta(seconds=i) for i in range(6)]
        await self._commit(
            opened,
            UserCommit(
                "u1",
                0,
                (
                    _session("a", "u1", t[3]),
                    _session("b", "u1", t[1]),
                    _session("c", "u1", t[5]),
                    _session("s", "u1", t[0], state=SessionState.SUSPENDED, changed_at=t[4]),
                ),
            ),
        )
        active = await opened.due(SessionState.ACTIVE, t[4], 10)
        assert [s.id for s in active] == ["b", "a"]
        assert [s.id for s in await opened.due(SessionState.ACTIVE, t[4], 1)] == ["b"]
        # Suspended sessions are due by when they were suspended, not by their last activity.
        assert await opened.due(SessionState.SUSPENDED, t[4], 10) == []
        assert [s.id for s in await opened.due(SessionState.SUSPENDED, t[5], 10)] == ["s"]

    @pytest.mark.anyio
    async def test_due_pages_by_state_clock_and_id(self, opened: SessionStoreAdapter) -> None:
        t = [_EPOCH + timedelta(seconds=i) for i in range(3)]
        # Ties of one clock are ordered by id, whoever owns them and whenever they were written.
        await self._commit(
            opened,
            UserCommit("u2", 0, (_session("d", "u2", t[1]),)),
            UserCommit("u1", 0, (_session("e", "u1", t[1]), _session("b", "u1", t[1]))),
            UserCommit("u3", 0, (_session("c", "u3", t[0]), _session("f", "u3", t[1]))),
            UserCommit("u4", 0, (_session("a", "u4", t[2]),)),
        )
        end = t[2] + timedelta(seconds=1)
        every = [s.id for s in await opened.due(SessionState.ACTIVE, end, 10)]
        assert every == ["c", "b", "d", "e", "f", "a"]
        pages: list[str] = []
        after: tuple[datetime, str] | None = None
        while page := await opened.due(SessionState.ACTIVE, end, 2, after=after):
            assert len(page) <= 2
            pages += [s.id for s in page]
            after = (page[-1].last_activity_at, page[-1].id)
        assert pages == every
        assert [
            s.id for s in await opened.due(SessionState.ACTIVE, t[2], 10, after=(t[1], "d"))
        ] == [
            "e",
            "f",
        ]
        assert await opened.due(SessionState.ACTIVE, end, 10, after=(t[2], "a")) == []

    @pytest.mark.anyio
    async def test_due_forgets_sessions_that_changed(self, opened: SessionStoreAdapter) -> None:
        old = _session("a", "u1", _EPOCH)
        await self._commit(opened, UserCommit("u1", 0, (old,)))
        cutoff = _EPOCH + timedelta(hours=1)
        assert [s.id for s in await opened.due(SessionState.ACTIVE, cutoff, 10)] == ["a"]
        # Reading candidates does not consume them.
        assert [s.id for s in await opened.due(SessionState.ACTIVE, cutoff, 10)] == ["a"]
        touched = _session("a", "u1", cutoff + timedelta(seconds=1))
        await self._commit(opened, UserCommit("u1", 1, (touched,)))
        assert await opened.due(SessionState.ACTIVE, cutoff, 10) == []
        suspended = _session("a", "u1", _EPOCH, state=SessionState.SUSPENDED, changed_at=_EPOCH)
        await self._commit(opened, UserCommit("u1", 2, (suspended,)))
        assert await opened.due(SessionState.ACTIVE, cutoff, 10) == []
        assert [s.id for s in await opened.due(SessionState.SUSPENDED, cutoff, 10)] == ["a"]

    @pytest.mark.anyio
    async def test_an_adapter_opened_twice_works_until_closed_twice(
        self, adapter: SessionStoreAdapter
    ) -> None:
        # Two stores sharing the adapter: the first to close does not close it for the other.
        await adapter.open()
        await adapter.open()
        await adapter.aclose()
        try:
            s = _session("a", "u1", _EPOCH)
            await self._commit(adapter, UserCommit("u1", 0, (s,)))
            assert await adapter.get("a") == s
        finally:
            await adapter.aclose()

    @pytest.mark.anyio
    async def test_data_survives_close_and_reopen(self, adapter: SessionStoreAdapter) -> None:
        await adapter.open()
        s = _session("a", "u1", _EPOCH, surfaces=("web",))
        await self._commit(adapter, UserCommit("u1", 0, (s,)))
        await adapter.aclose()
        await adapter.open()
        try:
            assert await adapter.get("a") == s
            assert (await adapter.load_user("u1")).version == 1
        finally:
            await adapter.aclose()
