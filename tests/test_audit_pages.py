"""The audit trail by cursor: pages newest first that follow one another without a gap or a repeat,
even while entries are written; each page read by seeking, not by skipping what comes before it
(checked by the work SQLite does, not by timing); and the admin API's cursors."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tornado_auth.audit import AuditEntry, AuditPage, BadCursor
from tornado_auth.users import UserStore, store_for_url
from tornado_auth.users.sqlite import SQLiteUserStore

from .conftest import PASSWORD, USER_STORES, Store, body, require_service, serving, settings_for

NOW = 1_900_000_000.0


@pytest.fixture(params=USER_STORES)
async def users(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[UserStore]:
    if request.param == "mongodb":
        require_service("mongodb")
    place = Store(request.param, tmp_path)
    store = store_for_url(place.user_url())
    await store.start()
    yield store
    await store.close()
    await place.cleanup()


class ByPosition(SQLiteUserStore):
    """A store without cursors of its own: the default, by position, as an app's store has."""

    audit_range = UserStore.audit_range


async def write(users: UserStore, count: int, first: int = 0) -> None:
    """Entries numbered in ``detail["n"]`` in the order written, a second apart."""
    for n in range(first, first + count):
        await users.record(AuditEntry("signin", at=NOW + n, detail={"n": n}))


def numbers(page: AuditPage) -> list[int]:
    return [entry.detail["n"] for entry in page.entries]


async def walk_older(users: UserStore, limit: int) -> list[list[int]]:
    """Every page from the newest, by the older cursors."""
    pages, page = [], await users.audit_range(limit, before="")
    assert page.newer is None
    while True:
        pages.append(numbers(page))
        if page.older is None:
            return pages
        page = await users.audit_range(limit, before=page.older)


async def walk_newer(users: UserStore, limit: int) -> list[list[int]]:
    """Every page from the oldest, by the newer cursors."""
    pages, page = [], await users.audit_range(limit, after="")
    assert page.older is None
    while True:
        pages.append(numbers(page))
        if page.newer is None:
            return pages
        page = await users.audit_range(limit, after=page.newer)


async def check_walks(users: UserStore) -> None:
    await write(users, 23)
    newest_first = list(range(22, -1, -1))
    older = await walk_older(users, 5)
    assert older == [newest_first[i : i + 5] for i in range(0, 23, 5)]
    newer = await walk_newer(users, 5)
    assert [n for page in reversed(newer) for n in page] == newest_first
    assert newer[0] == [4, 3, 2, 1, 0]  # from the oldest, the odd page is the newest
    assert newer[-1] == [22, 21, 20]
    assert numbers(await users.audit_range(5)) == newest_first[:5]


async def test_pages_by_cursor_follow_one_another_both_ways(users: UserStore):
    await check_walks(users)


async def test_the_default_by_position_pages_alike(tmp_path: Path):
    store = ByPosition(f"sqlite:///{tmp_path}/users.db")
    await store.start()
    try:
        await check_walks(store)
    finally:
        await store.close()


async def test_entries_written_meanwhile_neither_shift_nor_repeat_the_next_pages(users: UserStore):
    await write(users, 10)
    first = await users.audit_range(4)
    assert numbers(first) == [9, 8, 7, 6]
    await write(users, 3, first=10)  # by page number, page 2 would now start at 9 again
    second = await users.audit_range(4, before=first.older)
    assert numbers(second) == [5, 4, 3, 2]
    back = await users.audit_range(4, after=second.newer)
    assert numbers(back) == [9, 8, 7, 6]
    assert numbers(await users.audit_range(4, after=back.newer)) == [12, 11, 10]


async def test_a_cursor_no_page_gave_is_refused(users: UserStore):
    await write(users, 3)
    page = await users.audit_range(2)
    assert page.older is not None
    for cursor in ("x", "-1", "1e5", "nan_0123456789abcdef01234567", "1" * 40, "½"):
        with pytest.raises(BadCursor):
            await users.audit_range(2, before=cursor)
        with pytest.raises(BadCursor):
            await users.audit_range(2, after=cursor)
    with pytest.raises(BadCursor):
        await users.audit_range(2, before=page.older, after=page.older)


async def test_a_sqlite_page_by_cursor_reads_only_itself(tmp_path: Path):
    """The work (SQLite virtual machine steps) of a page by cursor deep in a long trail is that
    of the first page; by page number, it grows with the entries skipped."""
    store = SQLiteUserStore(f"sqlite:///{tmp_path}/users.db")
    await store.start()
    try:
        rows = [("signin", NOW + n, None, None, "", "", None, "{}") for n in range(20_000)]
        await store.db.run(
            lambda connection: connection.executemany(
                "INSERT INTO audit (event, at, user_id, email, ip, user_agent, session, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        )

        async def steps(read):  # thousands of VM instructions the read takes
            counted = [0]

            def tick() -> int:
                counted[0] += 1
                return 0

            def watch(connection: sqlite3.Connection) -> None:
                connection.set_progress_handler(tick, 1000)

            await store.db.run(watch)
            await read()
            await store.db.run(lambda connection: connection.set_progress_handler(None, 0))
            return counted[0]

        first = await store.audit_range(50)
        deep = await store.audit_range(50, before="1001")  # 19,000 entries from the newest
        assert len(deep.entries) == 50 and deep.older is not None
        newest = await steps(lambda: store.audit_range(50))
        assert await steps(lambda: store.audit_range(50, before=deep.older)) <= newest + 2
        assert await steps(lambda: store.audit_range(50, after="")) <= newest + 2
        assert await steps(lambda: store.audit_range(50, before=first.older)) <= newest + 2
        # by page number, skipping to the same depth reads every entry before it
        assert await steps(lambda: store.audit_page(19_000, 50)) > 10 * (newest + 2)
    finally:
        await store.close()


# -- the admin API --------------------------------------------------------------------------------


async def test_the_admin_api_pages_by_cursor(tmp_path: Path):
    async with serving(settings_for(Store("sqlite", tmp_path))) as server:
        await server.add_user("root@example.com", PASSWORD, role="admin")
        await write(server.services.users, 7)
        admin = server.client()
        await admin.login("root@example.com", PASSWORD)  # the 9th entry: a sign-in

        newest = body(await admin.get("/api/admin/audit?before=&perPage=4"))
        assert [e["event"] for e in newest["entries"]] == ["signin"] * 4
        assert newest["entries"][0]["email"] == "root@example.com"
        assert newest["newer"] is None and newest["perPage"] == 4
        assert "total" not in newest
        nxt = body(await admin.get(f"/api/admin/audit?before={newest['older']}&perPage=4"))
        assert [e["detail"].get("n") for e in nxt["entries"]] == [3, 2, 1, 0]
        oldest = body(await admin.get("/api/admin/audit?after=&perPage=4"))
        assert oldest["older"] is None
        assert [e["event"] for e in oldest["entries"]][-1] == "registered"
        back = body(await admin.get(f"/api/admin/audit?after={nxt['newer']}&perPage=4"))
        assert back["entries"] == newest["entries"]

        by_number = body(await admin.get("/api/admin/audit?page=2&perPage=4"))
        assert by_number["total"] == 9 and by_number["entries"] == nxt["entries"]
        for query, message in (
            ("before=abc", "Before is not a cursor of this list"),
            ("after=-3", "After is not a cursor of this list"),
            ("page=1&before=", "Use one of page, before and after"),
            ("before=&after=", "Use one of page, before and after"),
            ("before=&perPage=0", "Per page must be an integer from 1 to 200"),
        ):
            reply = await admin.get(f"/api/admin/audit?{query}")
            assert (reply.code, body(reply)) == (400, {"error": message}), query


async def test_the_sqlite_total_is_kept_not_counted_also_for_a_file_made_before(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/users.db"
    before = SQLiteUserStore(url)  # a file as an earlier version left it: entries, no count
    rows = [("signin", NOW + n, None, None, "", "", None, "{}") for n in range(5)]
    await before.db.run(
        lambda connection: connection.executemany(
            "INSERT INTO audit (event, at, user_id, email, ip, user_agent, session, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    )
    await before.close()
    store = SQLiteUserStore(url)
    await store.start()
    try:
        assert (await store.audit_page(0, 1))[1] == 5
        await write(store, 4, first=5)
        statements: list[str] = []
        await store.db.run(lambda connection: connection.set_trace_callback(statements.append))
        assert (await store.audit_page(0, 1))[1] == 9
        await store.db.run(lambda connection: connection.set_trace_callback(None))
        assert not [sql for sql in statements if "COUNT(" in sql.upper()], statements
        assert await store.prune_audit(None, 3, 100) == 6
        assert (await store.audit_page(0, 100))[1] == 3 == len((await store.audit_page(0, 100))[0])
        second = SQLiteUserStore(url)  # another process starting on the counted file
        await second.start()
        await second.record(AuditEntry("logout"))
        await second.close()
        assert (await store.audit_page(0, 1))[1] == 4
    finally:
        await store.close()
