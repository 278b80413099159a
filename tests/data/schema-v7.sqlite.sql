-- A SQLite database at schema version 7, the last before event versions were stored:
-- its DDL captured with sqlite3 .dump from the release before (no event_version
-- column, no event_versions table). Its events written as that release wrote them:
-- OrderPlaced without a currency. old-1 placed, processed and completed; old-2 placed
-- by a node that went away before claiming it (Pending). The read models are left
-- empty: the node folds them from the log.
CREATE TABLE IF NOT EXISTS "schema_migrations" ("version" INTEGER NOT NULL PRIMARY KEY, "description" VARCHAR(255) NOT NULL, "applied_at" VARCHAR(32) NOT NULL);
INSERT INTO schema_migrations VALUES(1,'the log: events, append_lock, projections','2026-12-07T08:42:56+00:00');
INSERT INTO schema_migrations VALUES(2,'API tokens','2026-12-07T08:42:56+00:00');
INSERT INTO schema_migrations VALUES(3,'order-status read model','2026-12-07T08:42:56+00:00');
INSERT INTO schema_migrations VALUES(4,'projection generations','2026-12-07T08:42:56+00:00');
INSERT INTO schema_migrations VALUES(5,'order-status second table, for rebuilds while serving','2026-12-07T08:42:56+00:00');
INSERT INTO schema_migrations VALUES(6,'ids compare byte for byte on MySQL/MariaDB','2026-12-07T08:42:56+00:00');
INSERT INTO schema_migrations VALUES(7,'PostgreSQL: positions from transaction ids, no lock','2026-12-07T08:42:56+00:00');
CREATE TABLE IF NOT EXISTS "append_lock" ("id" INTEGER NOT NULL PRIMARY KEY);
INSERT INTO append_lock VALUES(1);
CREATE TABLE IF NOT EXISTS "events" ("position" INTEGER NOT NULL PRIMARY KEY, "stream_id" VARCHAR(64) NOT NULL, "version" INTEGER NOT NULL, "type" VARCHAR(64) NOT NULL, "data" TEXT NOT NULL, "metadata" TEXT NOT NULL, "recorded_at" VARCHAR(32) NOT NULL);
CREATE TABLE IF NOT EXISTS "projections" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "position" INTEGER NOT NULL, "state" TEXT NOT NULL, generation INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS "tokens" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "secret_sha256" VARCHAR(64) NOT NULL, "scopes" VARCHAR(255) NOT NULL, "created_at" VARCHAR(32) NOT NULL);
CREATE TABLE IF NOT EXISTS "order_status" ("order_id" VARCHAR(64) NOT NULL PRIMARY KEY, "user_key" VARCHAR(64) NOT NULL, "status" VARCHAR(16) NOT NULL, "placed" TEXT NOT NULL, "attempts" INTEGER NOT NULL, "node" VARCHAR(255), "worker_id" VARCHAR(255), "placed_at" VARCHAR(32) NOT NULL, "started_at" VARCHAR(32), "completed_at" VARCHAR(32), "version" INTEGER NOT NULL, "position" INTEGER NOT NULL, "placed_position" INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS "order_status_b" ("order_id" VARCHAR(64) NOT NULL PRIMARY KEY, "user_key" VARCHAR(64) NOT NULL, "status" VARCHAR(16) NOT NULL, "placed" TEXT NOT NULL, "attempts" INTEGER NOT NULL, "node" VARCHAR(255), "worker_id" VARCHAR(255), "placed_at" VARCHAR(32) NOT NULL, "started_at" VARCHAR(32), "completed_at" VARCHAR(32), "version" INTEGER NOT NULL, "position" INTEGER NOT NULL, "placed_position" INTEGER NOT NULL);
CREATE UNIQUE INDEX "events_stream_id_version" ON "events" ("stream_id", "version");
CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE UNIQUE INDEX "tokens_secret_sha256" ON "tokens" ("secret_sha256");
CREATE UNIQUE INDEX "order_status_placed_position" ON "order_status" ("placed_position");
CREATE INDEX "order_status_status_placed_position" ON "order_status" ("status", "placed_position");
CREATE INDEX "order_status_user_key_placed_position" ON "order_status" ("user_key", "placed_position");
CREATE UNIQUE INDEX "order_status_b_placed_position" ON "order_status_b" ("placed_position");
CREATE INDEX "order_status_b_status_placed_position" ON "order_status_b" ("status", "placed_position");
CREATE INDEX "order_status_b_user_key_placed_position" ON "order_status_b" ("user_key", "placed_position");
INSERT INTO events VALUES(1,'old-1',1,'OrderPlaced','{"order_id":"old-1","user_id":7,"item_ids":["a"],"total_amount":"3.50"}','{"event_id":"7c693fa7-44a6-4d6b-b7b0-1c6a195fedb7","node":"vm-8000"}','2026-12-07T08:42:56.608149Z');
INSERT INTO events VALUES(2,'old-1',2,'OrderProcessingStarted','{"order_id":"old-1","attempt":1,"worker_id":"vm-8000/c077e678/0"}','{"event_id":"77b3808a-0395-4181-858c-710c50da61e2","node":"vm-8000","worker":"vm-8000/c077e678/0"}','2026-12-07T08:42:56.609468Z');
INSERT INTO events VALUES(3,'old-1',3,'OrderCompleted','{"order_id":"old-1","attempt":1}','{"event_id":"7b6bd7b8-a58c-4abc-b8e4-f6a8f531187f","node":"vm-8000","worker":"vm-8000/c077e678/0"}','2026-12-07T08:42:56.610704Z');
INSERT INTO events VALUES(4,'old-2',1,'OrderPlaced','{"order_id":"old-2","user_id":"u-2","item_ids":["b",9],"total_amount":"12"}','{"event_id":"207a4f4b-65aa-40fe-96f9-d944ce0979c3","node":"gone"}','2026-12-07T08:42:57.109468Z');
