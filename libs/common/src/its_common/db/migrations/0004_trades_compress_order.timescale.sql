-- Applied only when TimescaleDB is usable. The primary key of trades is
-- (symbol, ts, exchange, trade_id): TimescaleDB warns that compressing without exchange and
-- trade_id in segmentby/orderby makes the unique checks on compressed chunks slow, so they join
-- the order. New settings apply to chunks compressed from now on; a TimescaleDB release that
-- refuses to change them while compressed chunks exist fails here with its own message
-- (decompress those chunks, run its-migrate again).
ALTER TABLE trades SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',
                        timescaledb.compress_orderby = 'ts DESC, exchange, trade_id');
