-- A PostgreSQL database as the previous release (schema version 6) left it, captured
-- with pg_dump --inserts from PostgreSQL 15: positions 1..7 handed out under the
-- append_lock row. Orders old-1 and old-2 placed, processed and projected by that
-- release's server; old-3 placed by its store after the server stopped (Pending).
-- Statements end with ';' at the end of a line (the test runs them one by one).
CREATE FUNCTION public.events_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'events are append-only'; END $$;
CREATE TABLE public.append_lock (
    id integer NOT NULL
);
CREATE TABLE public.events (
    "position" bigint NOT NULL,
    stream_id character varying(64) NOT NULL,
    version integer NOT NULL,
    type character varying(64) NOT NULL,
    data text NOT NULL,
    metadata text NOT NULL,
    recorded_at character varying(32) NOT NULL
);
CREATE TABLE public.order_status (
    order_id character varying(64) NOT NULL,
    user_key character varying(64) NOT NULL,
    status character varying(16) NOT NULL,
    placed text NOT NULL,
    attempts integer NOT NULL,
    node character varying(255),
    worker_id character varying(255),
    placed_at character varying(32) NOT NULL,
    started_at character varying(32),
    completed_at character varying(32),
    version integer NOT NULL,
    "position" bigint NOT NULL,
    placed_position bigint NOT NULL
);
CREATE TABLE public.order_status_b (
    order_id character varying(64) NOT NULL,
    user_key character varying(64) NOT NULL,
    status character varying(16) NOT NULL,
    placed text NOT NULL,
    attempts integer NOT NULL,
    node character varying(255),
    worker_id character varying(255),
    placed_at character varying(32) NOT NULL,
    started_at character varying(32),
    completed_at character varying(32),
    version integer NOT NULL,
    "position" bigint NOT NULL,
    placed_position bigint NOT NULL
);
CREATE TABLE public.projections (
    name character varying(64) NOT NULL,
    "position" bigint NOT NULL,
    state text NOT NULL,
    generation integer DEFAULT 0 NOT NULL
);
CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    description character varying(255) NOT NULL,
    applied_at character varying(32) NOT NULL
);
CREATE TABLE public.tokens (
    name character varying(64) NOT NULL,
    secret_sha256 character varying(64) NOT NULL,
    scopes character varying(255) NOT NULL,
    created_at character varying(32) NOT NULL
);
INSERT INTO public.append_lock VALUES (1);
INSERT INTO public.events VALUES (1, 'old-1', 1, 'OrderPlaced', '{"order_id":"old-1","user_id":"u1","item_ids":["sku-1"],"total_amount":"11.50"}', '{"event_id":"2564d35b-fce9-487a-9bb9-54024e99fcac","correlation_id":"req-old-1","node":"vm-8099"}', '2026-12-07T04:22:44.754504Z');
INSERT INTO public.events VALUES (2, 'old-1', 2, 'OrderProcessingStarted', '{"order_id":"old-1","attempt":1,"worker_id":"vm-8099/8a404fe4/0"}', '{"event_id":"4f42eb3d-7fcc-490b-b932-a8be84d6e8c2","node":"vm-8099","worker":"vm-8099/8a404fe4/0"}', '2026-12-07T04:22:44.757055Z');
INSERT INTO public.events VALUES (3, 'old-2', 1, 'OrderPlaced', '{"order_id":"old-2","user_id":"u2","item_ids":["sku-2"],"total_amount":"12.50"}', '{"event_id":"dcdd7505-b64c-41b3-8b94-d41f96998ae8","correlation_id":"req-old-2","node":"vm-8099"}', '2026-12-07T04:22:44.763512Z');
INSERT INTO public.events VALUES (4, 'old-2', 2, 'OrderProcessingStarted', '{"order_id":"old-2","attempt":1,"worker_id":"vm-8099/8a404fe4/0"}', '{"event_id":"e3d788b6-e68f-4f56-8d8d-a0870e1e7011","node":"vm-8099","worker":"vm-8099/8a404fe4/0"}', '2026-12-07T04:22:44.765039Z');
INSERT INTO public.events VALUES (5, 'old-1', 3, 'OrderCompleted', '{"order_id":"old-1","attempt":1}', '{"event_id":"f598410a-ffef-4269-8302-92c3450168a7","node":"vm-8099","worker":"vm-8099/8a404fe4/0"}', '2026-12-07T04:22:44.959076Z');
INSERT INTO public.events VALUES (6, 'old-2', 3, 'OrderCompleted', '{"order_id":"old-2","attempt":1}', '{"event_id":"2eea3444-2e40-44d1-860e-e61902de7e18","node":"vm-8099","worker":"vm-8099/8a404fe4/0"}', '2026-12-07T04:22:44.966381Z');
INSERT INTO public.events VALUES (7, 'old-3', 1, 'OrderPlaced', '{"order_id":"old-3","user_id":"u3","item_ids":["sku-3"],"total_amount":"13.50"}', '{"event_id":"0002aeb4-f9fa-4b78-a03a-ef670c809b2a","node":"gone"}', '2026-12-07T04:22:48.438582Z');
INSERT INTO public.order_status VALUES ('old-1', 'u1', 'Completed', '{"order_id":"old-1","user_id":"u1","item_ids":["sku-1"],"total_amount":"11.50"}', 1, 'vm-8099', 'vm-8099/8a404fe4/0', '2026-12-07T04:22:44.754504Z', '2026-12-07T04:22:44.757055Z', '2026-12-07T04:22:44.959076Z', 3, 5, 1);
INSERT INTO public.order_status VALUES ('old-2', 'u2', 'Completed', '{"order_id":"old-2","user_id":"u2","item_ids":["sku-2"],"total_amount":"12.50"}', 1, 'vm-8099', 'vm-8099/8a404fe4/0', '2026-12-07T04:22:44.763512Z', '2026-12-07T04:22:44.765039Z', '2026-12-07T04:22:44.966381Z', 3, 6, 3);
INSERT INTO public.projections VALUES ('order_status', 6, 'order_status', 0);
INSERT INTO public.projections VALUES ('metrics', 6, '{"total_orders":2,"status_counts":{"Pending":0,"Processing":0,"Completed":2},"orders_processed":2,"processing_us_total":403363,"end_to_end_us_total":407441,"processing_us_buckets":{"612":2},"open":{}}', 0);
INSERT INTO public.schema_migrations VALUES (1, 'the log: events, append_lock, projections', '2026-12-07T04:22:44+00:00');
INSERT INTO public.schema_migrations VALUES (2, 'API tokens', '2026-12-07T04:22:44+00:00');
INSERT INTO public.schema_migrations VALUES (3, 'order-status read model', '2026-12-07T04:22:44+00:00');
INSERT INTO public.schema_migrations VALUES (4, 'projection generations', '2026-12-07T04:22:44+00:00');
INSERT INTO public.schema_migrations VALUES (5, 'order-status second table, for rebuilds while serving', '2026-12-07T04:22:44+00:00');
INSERT INTO public.schema_migrations VALUES (6, 'ids compare byte for byte on MySQL/MariaDB', '2026-12-07T04:22:44+00:00');
ALTER TABLE ONLY public.append_lock
    ADD CONSTRAINT append_lock_pkey PRIMARY KEY (id);
ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY ("position");
ALTER TABLE ONLY public.order_status_b
    ADD CONSTRAINT order_status_b_pkey PRIMARY KEY (order_id);
ALTER TABLE ONLY public.order_status
    ADD CONSTRAINT order_status_pkey PRIMARY KEY (order_id);
ALTER TABLE ONLY public.projections
    ADD CONSTRAINT projections_pkey PRIMARY KEY (name);
ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);
ALTER TABLE ONLY public.tokens
    ADD CONSTRAINT tokens_pkey PRIMARY KEY (name);
CREATE UNIQUE INDEX events_stream_id_version ON public.events USING btree (stream_id, version);
CREATE UNIQUE INDEX order_status_b_placed_position ON public.order_status_b USING btree (placed_position);
CREATE INDEX order_status_b_status_placed_position ON public.order_status_b USING btree (status, placed_position);
CREATE INDEX order_status_b_user_key_placed_position ON public.order_status_b USING btree (user_key, placed_position);
CREATE UNIQUE INDEX order_status_placed_position ON public.order_status USING btree (placed_position);
CREATE INDEX order_status_status_placed_position ON public.order_status USING btree (status, placed_position);
CREATE INDEX order_status_user_key_placed_position ON public.order_status USING btree (user_key, placed_position);
CREATE UNIQUE INDEX tokens_secret_sha256 ON public.tokens USING btree (secret_sha256);
CREATE TRIGGER events_no_change BEFORE DELETE OR UPDATE ON public.events FOR EACH ROW EXECUTE FUNCTION public.events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON public.events FOR EACH STATEMENT EXECUTE FUNCTION public.events_append_only();
