-- A MariaDB database as the previous release (schema version 5) left it, captured
-- with mariadb-dump from a MariaDB 10.11 server whose default collation is
-- utf8mb4_general_ci: the tables took that default, so ids compared without case.
-- One order, Case-1 by user Alice, placed, processed and projected by that release.
-- Statements end with ';' at the end of a line (the test runs them one by one).
CREATE TABLE `append_lock` (
  `id` int(11) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
INSERT INTO `append_lock` VALUES (1);
CREATE TABLE `events` (
  `position` bigint(20) NOT NULL,
  `stream_id` varchar(64) NOT NULL,
  `version` int(11) NOT NULL,
  `type` varchar(64) NOT NULL,
  `data` longtext NOT NULL,
  `metadata` longtext NOT NULL,
  `recorded_at` varchar(32) NOT NULL,
  PRIMARY KEY (`position`),
  UNIQUE KEY `events_stream_id_version` (`stream_id`,`version`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
INSERT INTO `events` VALUES (1,'Case-1',1,'OrderPlaced','{\"order_id\":\"Case-1\",\"user_id\":\"Alice\",\"item_ids\":[\"sku-1\"],\"total_amount\":\"12.50\"}','{\"event_id\":\"8b2bf79a-e4ce-4676-b14d-1a0208f84304\",\"correlation_id\":\"bf833fc25a42f0f4ccc603bd10cb4626\",\"node\":\"vm-8000\"}','2026-12-07T01:34:42.697610Z');
INSERT INTO `events` VALUES (2,'Case-1',2,'OrderProcessingStarted','{\"order_id\":\"Case-1\",\"attempt\":1,\"worker_id\":\"vm-8000/cac4acf8/0\"}','{\"event_id\":\"50606816-7dfa-4ad2-96a6-9a10f5c07421\",\"node\":\"vm-8000\",\"worker\":\"vm-8000/cac4acf8/0\"}','2026-12-07T01:34:42.700233Z');
INSERT INTO `events` VALUES (3,'Case-1',3,'OrderCompleted','{\"order_id\":\"Case-1\",\"attempt\":1}','{\"event_id\":\"fd67f41d-bc3a-4e81-92a8-658ffcad6641\",\"node\":\"vm-8000\",\"worker\":\"vm-8000/cac4acf8/0\"}','2026-12-07T01:34:42.701885Z');
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events are append-only';
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'events are append-only';
CREATE TABLE `order_status` (
  `order_id` varchar(64) NOT NULL,
  `user_key` varchar(64) NOT NULL,
  `status` varchar(16) NOT NULL,
  `placed` longtext NOT NULL,
  `attempts` int(11) NOT NULL,
  `node` varchar(255) DEFAULT NULL,
  `worker_id` varchar(255) DEFAULT NULL,
  `placed_at` varchar(32) NOT NULL,
  `started_at` varchar(32) DEFAULT NULL,
  `completed_at` varchar(32) DEFAULT NULL,
  `version` int(11) NOT NULL,
  `position` bigint(20) NOT NULL,
  `placed_position` bigint(20) NOT NULL,
  PRIMARY KEY (`order_id`),
  UNIQUE KEY `order_status_placed_position` (`placed_position`),
  KEY `order_status_status_placed_position` (`status`,`placed_position`),
  KEY `order_status_user_key_placed_position` (`user_key`,`placed_position`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
INSERT INTO `order_status` VALUES ('Case-1','Alice','Completed','{\"order_id\":\"Case-1\",\"user_id\":\"Alice\",\"item_ids\":[\"sku-1\"],\"total_amount\":\"12.50\"}',1,'vm-8000','vm-8000/cac4acf8/0','2026-12-07T01:34:42.697610Z','2026-12-07T01:34:42.700233Z','2026-12-07T01:34:42.701885Z',3,3,1);
CREATE TABLE `order_status_b` (
  `order_id` varchar(64) NOT NULL,
  `user_key` varchar(64) NOT NULL,
  `status` varchar(16) NOT NULL,
  `placed` longtext NOT NULL,
  `attempts` int(11) NOT NULL,
  `node` varchar(255) DEFAULT NULL,
  `worker_id` varchar(255) DEFAULT NULL,
  `placed_at` varchar(32) NOT NULL,
  `started_at` varchar(32) DEFAULT NULL,
  `completed_at` varchar(32) DEFAULT NULL,
  `version` int(11) NOT NULL,
  `position` bigint(20) NOT NULL,
  `placed_position` bigint(20) NOT NULL,
  PRIMARY KEY (`order_id`),
  UNIQUE KEY `order_status_b_placed_position` (`placed_position`),
  KEY `order_status_b_status_placed_position` (`status`,`placed_position`),
  KEY `order_status_b_user_key_placed_position` (`user_key`,`placed_position`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
CREATE TABLE `projections` (
  `name` varchar(64) NOT NULL,
  `position` bigint(20) NOT NULL,
  `state` longtext NOT NULL,
  `generation` int(11) NOT NULL DEFAULT 0,
  PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
INSERT INTO `projections` VALUES ('metrics',3,'{\"total_orders\":1,\"status_counts\":{\"Pending\":0,\"Processing\":0,\"Completed\":1},\"orders_processed\":1,\"processing_us_total\":1652,\"end_to_end_us_total\":4275,\"processing_us_buckets\":{\"372\":1},\"open\":{}}',0);
INSERT INTO `projections` VALUES ('order_status',3,'order_status',0);
CREATE TABLE `schema_migrations` (
  `version` int(11) NOT NULL,
  `description` varchar(255) NOT NULL,
  `applied_at` varchar(32) NOT NULL,
  PRIMARY KEY (`version`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
INSERT INTO `schema_migrations` VALUES (1,'the log: events, append_lock, projections','2026-12-07T01:34:42+00:00');
INSERT INTO `schema_migrations` VALUES (2,'API tokens','2026-12-07T01:34:42+00:00');
INSERT INTO `schema_migrations` VALUES (3,'order-status read model','2026-12-07T01:34:42+00:00');
INSERT INTO `schema_migrations` VALUES (4,'projection generations','2026-12-07T01:34:42+00:00');
INSERT INTO `schema_migrations` VALUES (5,'order-status second table, for rebuilds while serving','2026-12-07T01:34:42+00:00');
CREATE TABLE `tokens` (
  `name` varchar(64) NOT NULL,
  `secret_sha256` varchar(64) NOT NULL,
  `scopes` varchar(255) NOT NULL,
  `created_at` varchar(32) NOT NULL,
  PRIMARY KEY (`name`),
  UNIQUE KEY `tokens_secret_sha256` (`secret_sha256`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
