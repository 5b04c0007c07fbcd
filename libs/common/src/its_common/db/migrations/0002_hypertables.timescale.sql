-- Applied only when the timescaledb extension is available (TimescaleDB 2.x).
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('market_data', 'ts', chunk_time_interval => INTERVAL '7 days',
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('trades', 'ts', chunk_time_interval => INTERVAL '1 day',
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('sys_metrics', 'ts', chunk_time_interval => INTERVAL '1 day',
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('signals', 'ts', chunk_time_interval => INTERVAL '7 days',
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('portfolio_snapshots', 'ts', chunk_time_interval => INTERVAL '7 days',
                         migrate_data => true, if_not_exists => true);
SELECT create_hypertable('price_checks', 'ts', chunk_time_interval => INTERVAL '7 days',
                         migrate_data => true, if_not_exists => true);

ALTER TABLE market_data SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',
                             timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE trades SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',
                        timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE sys_metrics SET (timescaledb.compress,
                             timescaledb.compress_segmentby = 'service, metric_name');
ALTER TABLE price_checks SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol');

-- Bars older than 7 days are final (late corrections arrive within ~15 minutes).
SELECT add_compression_policy('market_data', INTERVAL '7 days', if_not_exists => true);
SELECT add_compression_policy('trades', INTERVAL '2 days', if_not_exists => true);
SELECT add_compression_policy('sys_metrics', INTERVAL '2 days', if_not_exists => true);
SELECT add_compression_policy('price_checks', INTERVAL '7 days', if_not_exists => true);

SELECT add_retention_policy('trades', INTERVAL '30 days', if_not_exists => true);
SELECT add_retention_policy('sys_metrics', INTERVAL '30 days', if_not_exists => true);
SELECT add_retention_policy('price_checks', INTERVAL '180 days', if_not_exists => true);
