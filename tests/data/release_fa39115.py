"""A database as release fa39115 left it (schema version 5), as literal DDL and rows.

Captured once from that release itself, run from its own checkout on each backend:
the statements are the DDL its migrations sent, in order, as peewee wrote them
(``schema_migrations`` first, then versions 1 to 5; a MariaDB table takes the
server's default collation, as it did then); the rows are what its store, its
``token create`` command and its projections wrote. Rows are the same text on every
backend (the runs on PostgreSQL and MariaDB stored the same forms); these are the
SQLite run's. SQLite files of that release were in WAL mode.

What the log holds, positions 1 to 12:
- node ``old-node`` (serve, then stopped): ``old-1`` (user "u-1", items ["sku-1", 42],
  total 19.99 sent as a JSON number), ``old-2`` (user 7 as a number, total "5"), and an
  order sent without an id, with ``Idempotency-Key: checkout-1`` by the token ``shop``
  (its id ``KEYED_ORDER`` derived from both): each placed, claimed and completed.
- node ``dead-node`` (one order in work at most, an hour of work each), then SIGKILL:
  ``old-claimed`` placed and claimed (attempt 1), ``old-pending`` placed behind it.
- tokens ``shop`` (orders:read,orders:write) and ``ops`` (events:read,metrics:read),
  stored as the SHA-256 of secrets that release generated (``SECRETS``).
- the projections' checkpoints as the dead node left them: the metrics state and the
  order-status rows at position 11, one event behind the log's head.
``VIEWS``, ``REPLAYED`` and ``REUSED`` are that release's HTTP answers: the completed
orders (its listing showed the same three, in that order), a retry with the key and
the same body, and one with the key and another body.
"""

from __future__ import annotations

from typing import Any

RELEASE = "fa39115"
SCHEMA_VERSION = 5
SKETCH_ACCURACY = 0.01  # the relative accuracy of that release's processing-time sketch
IDEMPOTENCY_KEY = "checkout-1"
KEYED_BODY = {"user_id": "u-2", "item_ids": ["sku-2"], "total_amount": "12.50"}

# Not DDL, but what the file was left in: that release opened SQLite in WAL mode.
SQLITE_JOURNAL_MODE = "PRAGMA journal_mode=wal"

DDL: dict[str, tuple[str, ...]] = {
    "sqlite": (
        (
            'CREATE TABLE IF NOT EXISTS "schema_migrations" ("version" INTEGER NOT NULL PRIMARY '
            'KEY, "description" VARCHAR(255) NOT NULL, "applied_at" VARCHAR(32) NOT NULL)'
        ),
        'CREATE TABLE IF NOT EXISTS "append_lock" ("id" INTEGER NOT NULL PRIMARY KEY)',
        (
            'CREATE TABLE IF NOT EXISTS "events" ("position" INTEGER NOT NULL PRIMARY KEY, '
            '"stream_id" VARCHAR(64) NOT NULL, "version" INTEGER NOT NULL, "type" VARCHAR(64) '
            'NOT NULL, "data" TEXT NOT NULL, "metadata" TEXT NOT NULL, "recorded_at" '
            "VARCHAR(32) NOT NULL)"
        ),
        (
            'CREATE UNIQUE INDEX IF NOT EXISTS "events_stream_id_version" ON "events" '
            '("stream_id", "version")'
        ),
        (
            'CREATE TABLE IF NOT EXISTS "projections" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, '
            '"position" INTEGER NOT NULL, "state" TEXT NOT NULL)'
        ),
        (
            "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events BEGIN SELECT "
            "RAISE(ABORT, 'events are append-only'); END"
        ),
        (
            "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events BEGIN SELECT "
            "RAISE(ABORT, 'events are append-only'); END"
        ),
        (
            'CREATE TABLE IF NOT EXISTS "tokens" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, '
            '"secret_sha256" VARCHAR(64) NOT NULL, "scopes" VARCHAR(255) NOT NULL, "created_at" '
            "VARCHAR(32) NOT NULL)"
        ),
        'CREATE UNIQUE INDEX IF NOT EXISTS "tokens_secret_sha256" ON "tokens" ("secret_sha256")',
        (
            'CREATE TABLE IF NOT EXISTS "order_status" ("order_id" VARCHAR(64) NOT NULL PRIMARY '
            'KEY, "user_key" VARCHAR(64) NOT NULL, "status" VARCHAR(16) NOT NULL, "placed" TEXT '
            'NOT NULL, "attempts" INTEGER NOT NULL, "node" VARCHAR(255), "worker_id" '
            'VARCHAR(255), "placed_at" VARCHAR(32) NOT NULL, "started_at" VARCHAR(32), '
            '"completed_at" VARCHAR(32), "version" INTEGER NOT NULL, "position" INTEGER NOT '
            'NULL, "placed_position" INTEGER NOT NULL)'
        ),
        (
            'CREATE UNIQUE INDEX IF NOT EXISTS "order_status_placed_position" ON "order_status" '
            '("placed_position")'
        ),
        (
            'CREATE INDEX IF NOT EXISTS "order_status_status_placed_position" ON "order_status" '
            '("status", "placed_position")'
        ),
        (
            'CREATE INDEX IF NOT EXISTS "order_status_user_key_placed_position" ON '
            '"order_status" ("user_key", "placed_position")'
        ),
        "ALTER TABLE projections ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
        (
            'CREATE TABLE IF NOT EXISTS "order_status_b" ("order_id" VARCHAR(64) NOT NULL '
            'PRIMARY KEY, "user_key" VARCHAR(64) NOT NULL, "status" VARCHAR(16) NOT NULL, '
            '"placed" TEXT NOT NULL, "attempts" INTEGER NOT NULL, "node" VARCHAR(255), '
            '"worker_id" VARCHAR(255), "placed_at" VARCHAR(32) NOT NULL, "started_at" '
            'VARCHAR(32), "completed_at" VARCHAR(32), "version" INTEGER NOT NULL, "position" '
            'INTEGER NOT NULL, "placed_position" INTEGER NOT NULL)'
        ),
        (
            'CREATE UNIQUE INDEX IF NOT EXISTS "order_status_b_placed_position" ON '
            '"order_status_b" ("placed_position")'
        ),
        (
            'CREATE INDEX IF NOT EXISTS "order_status_b_status_placed_position" ON '
            '"order_status_b" ("status", "placed_position")'
        ),
        (
            'CREATE INDEX IF NOT EXISTS "order_status_b_user_key_placed_position" ON '
            '"order_status_b" ("user_key", "placed_position")'
        ),
    ),
    "postgres": (
        (
            'CREATE TABLE IF NOT EXISTS "schema_migrations" ("version" INTEGER NOT NULL PRIMARY '
            'KEY, "description" VARCHAR(255) NOT NULL, "applied_at" VARCHAR(32) NOT NULL)'
        ),
        'CREATE TABLE IF NOT EXISTS "append_lock" ("id" INTEGER NOT NULL PRIMARY KEY)',
        (
            'CREATE TABLE IF NOT EXISTS "events" ("position" BIGINT NOT NULL PRIMARY KEY, '
            '"stream_id" VARCHAR(64) NOT NULL, "version" INTEGER NOT NULL, "type" VARCHAR(64) '
            'NOT NULL, "data" TEXT NOT NULL, "metadata" TEXT NOT NULL, "recorded_at" '
            "VARCHAR(32) NOT NULL)"
        ),
        (
            'CREATE UNIQUE INDEX IF NOT EXISTS "events_stream_id_version" ON "events" '
            '("stream_id", "version")'
        ),
        (
            'CREATE TABLE IF NOT EXISTS "projections" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, '
            '"position" BIGINT NOT NULL, "state" TEXT NOT NULL)'
        ),
        (
            "CREATE OR REPLACE FUNCTION events_append_only() RETURNS trigger AS $$ BEGIN RAISE "
            "EXCEPTION 'events are append-only'; END $$ LANGUAGE plpgsql"
        ),
        (
            "CREATE OR REPLACE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events FOR "
            "EACH ROW EXECUTE FUNCTION events_append_only()"
        ),
        (
            "CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON events FOR EACH "
            "STATEMENT EXECUTE FUNCTION events_append_only()"
        ),
        (
            'CREATE TABLE IF NOT EXISTS "tokens" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, '
            '"secret_sha256" VARCHAR(64) NOT NULL, "scopes" VARCHAR(255) NOT NULL, "created_at" '
            "VARCHAR(32) NOT NULL)"
        ),
        'CREATE UNIQUE INDEX IF NOT EXISTS "tokens_secret_sha256" ON "tokens" ("secret_sha256")',
        (
            'CREATE TABLE IF NOT EXISTS "order_status" ("order_id" VARCHAR(64) NOT NULL PRIMARY '
            'KEY, "user_key" VARCHAR(64) NOT NULL, "status" VARCHAR(16) NOT NULL, "placed" TEXT '
            'NOT NULL, "attempts" INTEGER NOT NULL, "node" VARCHAR(255), "worker_id" '
            'VARCHAR(255), "placed_at" VARCHAR(32) NOT NULL, "started_at" VARCHAR(32), '
            '"completed_at" VARCHAR(32), "version" INTEGER NOT NULL, "position" BIGINT NOT '
            'NULL, "placed_position" BIGINT NOT NULL)'
        ),
        (
            'CREATE UNIQUE INDEX IF NOT EXISTS "order_status_placed_position" ON "order_status" '
            '("placed_position")'
        ),
        (
            'CREATE INDEX IF NOT EXISTS "order_status_status_placed_position" ON "order_status" '
            '("status", "placed_position")'
        ),
        (
            'CREATE INDEX IF NOT EXISTS "order_status_user_key_placed_position" ON '
            '"order_status" ("user_key", "placed_position")'
        ),
        "ALTER TABLE projections ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
        (
            'CREATE TABLE IF NOT EXISTS "order_status_b" ("order_id" VARCHAR(64) NOT NULL '
            'PRIMARY KEY, "user_key" VARCHAR(64) NOT NULL, "status" VARCHAR(16) NOT NULL, '
            '"placed" TEXT NOT NULL, "attempts" INTEGER NOT NULL, "node" VARCHAR(255), '
            '"worker_id" VARCHAR(255), "placed_at" VARCHAR(32) NOT NULL, "started_at" '
            'VARCHAR(32), "completed_at" VARCHAR(32), "version" INTEGER NOT NULL, "position" '
            'BIGINT NOT NULL, "placed_position" BIGINT NOT NULL)'
        ),
        (
            'CREATE UNIQUE INDEX IF NOT EXISTS "order_status_b_placed_position" ON '
            '"order_status_b" ("placed_position")'
        ),
        (
            'CREATE INDEX IF NOT EXISTS "order_status_b_status_placed_position" ON '
            '"order_status_b" ("status", "placed_position")'
        ),
        (
            'CREATE INDEX IF NOT EXISTS "order_status_b_user_key_placed_position" ON '
            '"order_status_b" ("user_key", "placed_position")'
        ),
    ),
    "mysql": (
        (
            "CREATE TABLE IF NOT EXISTS `schema_migrations` (`version` INTEGER NOT NULL PRIMARY "
            "KEY, `description` VARCHAR(255) NOT NULL, `applied_at` VARCHAR(32) NOT NULL)"
        ),
        "CREATE TABLE IF NOT EXISTS `append_lock` (`id` INTEGER NOT NULL PRIMARY KEY)",
        (
            "CREATE TABLE IF NOT EXISTS `events` (`position` BIGINT NOT NULL PRIMARY KEY, "
            "`stream_id` VARCHAR(64) NOT NULL, `version` INTEGER NOT NULL, `type` VARCHAR(64) "
            "NOT NULL, `data` LONGTEXT NOT NULL, `metadata` LONGTEXT NOT NULL, `recorded_at` "
            "VARCHAR(32) NOT NULL)"
        ),
        "CREATE UNIQUE INDEX `events_stream_id_version` ON `events` (`stream_id`, `version`)",
        (
            "CREATE TABLE IF NOT EXISTS `projections` (`name` VARCHAR(64) NOT NULL PRIMARY KEY, "
            "`position` BIGINT NOT NULL, `state` LONGTEXT NOT NULL)"
        ),
        (
            "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events are append-only'"
        ),
        (
            "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events FOR EACH ROW "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events are append-only'"
        ),
        (
            "CREATE TABLE IF NOT EXISTS `tokens` (`name` VARCHAR(64) NOT NULL PRIMARY KEY, "
            "`secret_sha256` VARCHAR(64) NOT NULL, `scopes` VARCHAR(255) NOT NULL, `created_at` "
            "VARCHAR(32) NOT NULL)"
        ),
        "CREATE UNIQUE INDEX `tokens_secret_sha256` ON `tokens` (`secret_sha256`)",
        (
            "CREATE TABLE IF NOT EXISTS `order_status` (`order_id` VARCHAR(64) NOT NULL PRIMARY "
            "KEY, `user_key` VARCHAR(64) NOT NULL, `status` VARCHAR(16) NOT NULL, `placed` "
            "LONGTEXT NOT NULL, `attempts` INTEGER NOT NULL, `node` VARCHAR(255), `worker_id` "
            "VARCHAR(255), `placed_at` VARCHAR(32) NOT NULL, `started_at` VARCHAR(32), "
            "`completed_at` VARCHAR(32), `version` INTEGER NOT NULL, `position` BIGINT NOT "
            "NULL, `placed_position` BIGINT NOT NULL)"
        ),
        (
            "CREATE UNIQUE INDEX `order_status_placed_position` ON `order_status` "
            "(`placed_position`)"
        ),
        (
            "CREATE INDEX `order_status_status_placed_position` ON `order_status` (`status`, "
            "`placed_position`)"
        ),
        (
            "CREATE INDEX `order_status_user_key_placed_position` ON `order_status` "
            "(`user_key`, `placed_position`)"
        ),
        "ALTER TABLE projections ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
        (
            "CREATE TABLE IF NOT EXISTS `order_status_b` (`order_id` VARCHAR(64) NOT NULL "
            "PRIMARY KEY, `user_key` VARCHAR(64) NOT NULL, `status` VARCHAR(16) NOT NULL, "
            "`placed` LONGTEXT NOT NULL, `attempts` INTEGER NOT NULL, `node` VARCHAR(255), "
            "`worker_id` VARCHAR(255), `placed_at` VARCHAR(32) NOT NULL, `started_at` "
            "VARCHAR(32), `completed_at` VARCHAR(32), `version` INTEGER NOT NULL, `position` "
            "BIGINT NOT NULL, `placed_position` BIGINT NOT NULL)"
        ),
        (
            "CREATE UNIQUE INDEX `order_status_b_placed_position` ON `order_status_b` "
            "(`placed_position`)"
        ),
        (
            "CREATE INDEX `order_status_b_status_placed_position` ON `order_status_b` "
            "(`status`, `placed_position`)"
        ),
        (
            "CREATE INDEX `order_status_b_user_key_placed_position` ON `order_status_b` "
            "(`user_key`, `placed_position`)"
        ),
    ),
}

COLUMNS: dict[str, tuple[str, ...]] = {
    "schema_migrations": ("version", "description", "applied_at"),
    "append_lock": ("id",),
    "events": ("position", "stream_id", "version", "type", "data", "metadata", "recorded_at"),
    "tokens": ("name", "secret_sha256", "scopes", "created_at"),
    "order_status": (
        "order_id",
        "user_key",
        "status",
        "placed",
        "attempts",
        "node",
        "worker_id",
        "placed_at",
        "started_at",
        "completed_at",
        "version",
        "position",
        "placed_position",
    ),
    "projections": ("name", "position", "state", "generation"),
}

ROWS: dict[str, tuple[tuple[object, ...], ...]] = {
    "schema_migrations": (
        (1, "the log: events, append_lock, projections", "2026-12-07T08:40:03+00:00"),
        (2, "API tokens", "2026-12-07T08:40:03+00:00"),
        (3, "order-status read model", "2026-12-07T08:40:03+00:00"),
        (4, "projection generations", "2026-12-07T08:40:03+00:00"),
        (5, "order-status second table, for rebuilds while serving", "2026-12-07T08:40:03+00:00"),
    ),
    "append_lock": ((1,),),
    "events": (
        (
            1,
            "old-1",
            1,
            "OrderPlaced",
            '{"order_id":"old-1","user_id":"u-1","item_ids":["sku-1",42],"total_amount":"19.99"}',
            '{"event_id":"4472cbe3-76d5-471b-b6c0-e38c04e32658","correlation_id":"a4b33d9c7c70c8f83fc38790abd05d04","node":"old-node"}',
            "2026-12-07T08:40:04.608224Z",
        ),
        (
            2,
            "old-1",
            2,
            "OrderProcessingStarted",
            '{"order_id":"old-1","attempt":1,"worker_id":"old-node/8ea846d3/0"}',
            '{"event_id":"2db5d6e7-0223-4de5-8efe-fd1c6aedd103","node":"old-node","worker":"old-node/8ea846d3/0"}',
            "2026-12-07T08:40:04.609759Z",
        ),
        (
            3,
            "old-2",
            1,
            "OrderPlaced",
            '{"order_id":"old-2","user_id":7,"item_ids":[1,2],"total_amount":"5.00"}',
            '{"event_id":"4fa9248e-a8e5-41ec-85bd-f73e8eee8d54","correlation_id":"b454d4380db5e5340a028ab7f82e8e46","node":"old-node"}',
            "2026-12-07T08:40:04.610663Z",
        ),
        (
            4,
            "old-2",
            2,
            "OrderProcessingStarted",
            '{"order_id":"old-2","attempt":1,"worker_id":"old-node/8ea846d3/0"}',
            '{"event_id":"b0e34521-50d4-4b59-937c-b7596e1bd7cc","node":"old-node","worker":"old-node/8ea846d3/0"}',
            "2026-12-07T08:40:04.611724Z",
        ),
        (
            5,
            "kqhb6snhka6rqod7jjyevirl52mej5gy",
            1,
            "OrderPlaced",
            '{"order_id":"kqhb6snhka6rqod7jjyevirl52mej5gy","user_id":"u-2","item_ids":["sku-2"],"total_amount":"12.50"}',
            '{"event_id":"f3afa798-2beb-43e8-8548-ab2238149ff1","correlation_id":"a3e353e932abdc5b21486c333d7d68af","node":"old-node","idempotency_key":"checkout-1"}',
            "2026-12-07T08:40:04.613024Z",
        ),
        (
            6,
            "kqhb6snhka6rqod7jjyevirl52mej5gy",
            2,
            "OrderProcessingStarted",
            '{"order_id":"kqhb6snhka6rqod7jjyevirl52mej5gy","attempt":1,"worker_id":"old-node/8ea846d3/0"}',
            '{"event_id":"5019582c-5193-473e-b929-69a5fe2827d9","node":"old-node","worker":"old-node/8ea846d3/0"}',
            "2026-12-07T08:40:04.614007Z",
        ),
        (
            7,
            "old-1",
            3,
            "OrderCompleted",
            '{"order_id":"old-1","attempt":1}',
            '{"event_id":"f026e141-b1e2-4fcb-8241-2d2e53ec25a1","node":"old-node","worker":"old-node/8ea846d3/0"}',
            "2026-12-07T08:40:04.661027Z",
        ),
        (
            8,
            "old-2",
            3,
            "OrderCompleted",
            '{"order_id":"old-2","attempt":1}',
            '{"event_id":"2bb66eb6-a92c-44c1-9622-32deca7c3a80","node":"old-node","worker":"old-node/8ea846d3/0"}',
            "2026-12-07T08:40:04.664294Z",
        ),
        (
            9,
            "kqhb6snhka6rqod7jjyevirl52mej5gy",
            3,
            "OrderCompleted",
            '{"order_id":"kqhb6snhka6rqod7jjyevirl52mej5gy","attempt":1}',
            '{"event_id":"b3ec4d82-15b7-4c25-9e44-364cf853903e","node":"old-node","worker":"old-node/8ea846d3/0"}',
            "2026-12-07T08:40:04.664830Z",
        ),
        (
            10,
            "old-claimed",
            1,
            "OrderPlaced",
            '{"order_id":"old-claimed","user_id":"u-3","item_ids":["sku-3"],"total_amount":"30.00"}',
            '{"event_id":"0258cf8b-5a41-4f99-9208-3e3acf8755ce","correlation_id":"b5f6b183f3ac3d5370155abdd5b1aaef","node":"dead-node"}',
            "2026-12-07T08:40:04.998726Z",
        ),
        (
            11,
            "old-claimed",
            2,
            "OrderProcessingStarted",
            '{"order_id":"old-claimed","attempt":1,"worker_id":"dead-node/3dc9066a/0"}',
            '{"event_id":"7544bec4-b32c-44f4-82eb-8f4338ebd119","node":"dead-node","worker":"dead-node/3dc9066a/0"}',
            "2026-12-07T08:40:04.999804Z",
        ),
        (
            12,
            "old-pending",
            1,
            "OrderPlaced",
            '{"order_id":"old-pending","user_id":"u-1","item_ids":["sku-4"],"total_amount":"0.10"}',
            '{"event_id":"383ffd1f-6682-45aa-9c4b-d77934057d7f","correlation_id":"4a52feea9c6b583b1e057b2a944132a3","node":"dead-node"}',
            "2026-12-07T08:40:05.005581Z",
        ),
    ),
    "tokens": (
        (
            "ops",
            "facff18a4c21166d764eae1ccff6dd8fcec3a4f80f4137ecc25894cfa64af962",
            "events:read,metrics:read",
            "2026-12-07T08:40:04+00:00",
        ),
        (
            "shop",
            "063ba615a96112c18456cad67297f305a6becaf8f6c818d3ba969ea2912d8a48",
            "orders:read,orders:write",
            "2026-12-07T08:40:04+00:00",
        ),
    ),
    "order_status": (
        (
            "kqhb6snhka6rqod7jjyevirl52mej5gy",
            "u-2",
            "Completed",
            '{"order_id":"kqhb6snhka6rqod7jjyevirl52mej5gy","user_id":"u-2","item_ids":["sku-2"],"total_amount":"12.50"}',
            1,
            "old-node",
            "old-node/8ea846d3/0",
            "2026-12-07T08:40:04.613024Z",
            "2026-12-07T08:40:04.614007Z",
            "2026-12-07T08:40:04.664830Z",
            3,
            9,
            5,
        ),
        (
            "old-1",
            "u-1",
            "Completed",
            '{"order_id":"old-1","user_id":"u-1","item_ids":["sku-1",42],"total_amount":"19.99"}',
            1,
            "old-node",
            "old-node/8ea846d3/0",
            "2026-12-07T08:40:04.608224Z",
            "2026-12-07T08:40:04.609759Z",
            "2026-12-07T08:40:04.661027Z",
            3,
            7,
            1,
        ),
        (
            "old-2",
            "7",
            "Completed",
            '{"order_id":"old-2","user_id":7,"item_ids":[1,2],"total_amount":"5.00"}',
            1,
            "old-node",
            "old-node/8ea846d3/0",
            "2026-12-07T08:40:04.610663Z",
            "2026-12-07T08:40:04.611724Z",
            "2026-12-07T08:40:04.664294Z",
            3,
            8,
            3,
        ),
        (
            "old-claimed",
            "u-3",
            "Processing",
            '{"order_id":"old-claimed","user_id":"u-3","item_ids":["sku-3"],"total_amount":"30.00"}',
            1,
            "dead-node",
            "dead-node/3dc9066a/0",
            "2026-12-07T08:40:04.998726Z",
            "2026-12-07T08:40:04.999804Z",
            None,
            2,
            11,
            10,
        ),
    ),
    "projections": (
        (
            "metrics",
            11,
            '{"total_orders":4,"status_counts":{"Pending":0,"Processing":1,"Completed":3},"orders_processed":3,"processing_us_total":154661,"end_to_end_us_total":158240,"processing_us_buckets":{"544":1,"545":1,"543":1},"open":{"old-claimed":[1796632804998726,1796632804999804]}}',
            0,
        ),
        ("order_status", 11, "order_status", 0),
    ),
}

SECRETS = {
    "shop": "olt_-A4w-w_3CvfQs6f6ajoI2sOnomrBs6CfyH3FfMpRApY",
    "ops": "olt_IwguThVjpH8IIQBSMObj0iGmUiw-TUHuc1MTcQx19XI",
}
KEYED_ORDER = "kqhb6snhka6rqod7jjyevirl52mej5gy"
VIEWS: dict[str, dict[str, Any]] = {
    "old-1": {
        "order_id": "old-1",
        "user_id": "u-1",
        "item_ids": ["sku-1", 42],
        "total_amount": "19.99",
        "status": "Completed",
        "version": 3,
        "attempts": 1,
        "placed_at": "2026-12-07T08:40:04.608224Z",
        "processing_started_at": "2026-12-07T08:40:04.609759Z",
        "completed_at": "2026-12-07T08:40:04.661027Z",
        "processing_time_seconds": 0.051268,
    },
    "old-2": {
        "order_id": "old-2",
        "user_id": 7,
        "item_ids": [1, 2],
        "total_amount": "5.00",
        "status": "Completed",
        "version": 3,
        "attempts": 1,
        "placed_at": "2026-12-07T08:40:04.610663Z",
        "processing_started_at": "2026-12-07T08:40:04.611724Z",
        "completed_at": "2026-12-07T08:40:04.664294Z",
        "processing_time_seconds": 0.05257,
    },
    "kqhb6snhka6rqod7jjyevirl52mej5gy": {
        "order_id": "kqhb6snhka6rqod7jjyevirl52mej5gy",
        "user_id": "u-2",
        "item_ids": ["sku-2"],
        "total_amount": "12.50",
        "status": "Completed",
        "version": 3,
        "attempts": 1,
        "placed_at": "2026-12-07T08:40:04.613024Z",
        "processing_started_at": "2026-12-07T08:40:04.614007Z",
        "completed_at": "2026-12-07T08:40:04.664830Z",
        "processing_time_seconds": 0.050823,
    },
}
REPLAYED: dict[str, Any] = {
    "status": 201,
    "headers": {
        "content-type": "application/json",
        "etag": '"1"',
        "idempotent-replayed": "true",
        "location": "/orders/kqhb6snhka6rqod7jjyevirl52mej5gy",
    },
    "body": {
        "order_id": "kqhb6snhka6rqod7jjyevirl52mej5gy",
        "user_id": "u-2",
        "item_ids": ["sku-2"],
        "total_amount": "12.50",
        "status": "Pending",
        "version": 1,
        "attempts": 0,
        "placed_at": "2026-12-07T08:40:04.613024Z",
        "processing_started_at": None,
        "completed_at": None,
        "processing_time_seconds": None,
    },
}
REUSED: dict[str, Any] = {
    "status": 409,
    "headers": {"content-type": "application/problem+json"},
    "body": {
        "type": "urn:orderlog:problem:idempotency-key-reused",
        "title": "Idempotency key reused",
        "status": 409,
        "detail": "this Idempotency-Key was first used with a different order",
    },
}
