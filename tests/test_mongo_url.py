"""A MongoDB connection string reaches the driver as given: replica sets, TLS, credentials."""

from __future__ import annotations

from tornado_auth.mongo import MongoDatabase
from tornado_auth.sessions.mongo import MongoSessionStore

URL = (
    "mongodb://app:secret@db1.example:27017,db2.example:27018/accounts"
    "?replicaSet=rs0&tls=true&authSource=admin&readPreference=secondaryPreferred"
    "&serverSelectionTimeoutMS=1500"
)


async def no_setup() -> None:
    """Index creation would need a reachable server; the options are what is tested here."""


async def test_standard_connection_string_is_passed_through_unchanged():
    backend = MongoSessionStore(MongoDatabase(URL, "session"))
    await backend.mongo.start(no_setup)  # the driver connects lazily: nothing is contacted
    try:
        options = backend.mongo.client.options
        assert backend.mongo.database_name == "accounts"
        assert options.replica_set_name == "rs0"
        assert options.read_preference.mongos_mode == "secondaryPreferred"
        assert options.server_selection_timeout == 1.5  # the URL wins over our 3 s default
        assert options._options["tls"] is True
        assert options.pool_options._credentials.source == "admin"
        assert backend.mongo.client.topology_description.topology_type_name == "ReplicaSetNoPrimary"
        assert backend.revocations.write_concern.document == {"w": "majority"}
    finally:
        await backend.mongo.close()
