-- Broker realism (issue 15): the SimBroker's limit orders and partial fills.
-- A limit order (order_type 'LMT') fills only at or better than limit_price and at most the size
-- of each trade print after it; filled_quantity grows with each execution while it stays 'open'.
ALTER TABLE sim_orders
    ADD COLUMN order_type  text             NOT NULL DEFAULT 'MKT' CHECK (order_type IN ('MKT', 'LMT')),
    ADD COLUMN limit_price double precision CHECK (limit_price IS NULL OR limit_price > 0);
