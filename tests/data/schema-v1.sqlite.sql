-- The SQLite schema that orderlog created before schema versions existed
-- (events, append_lock and projections, with the append-only triggers).
CREATE TABLE "append_lock" ("id" INTEGER NOT NULL PRIMARY KEY);
CREATE TABLE "events" ("position" INTEGER NOT NULL PRIMARY KEY, "stream_id" VARCHAR(64) NOT NULL, "version" INTEGER NOT NULL, "type" VARCHAR(64) NOT NULL, "data" TEXT NOT NULL, "metadata" TEXT NOT NULL, "recorded_at" VARCHAR(32) NOT NULL);
CREATE UNIQUE INDEX "events_stream_id_version" ON "events" ("stream_id", "version");
CREATE TABLE "projections" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "position" INTEGER NOT NULL, "state" TEXT NOT NULL);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
INSERT INTO append_lock (id) VALUES (1);
