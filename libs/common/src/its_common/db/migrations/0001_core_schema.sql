-- Core schema: works on plain PostgreSQL; 0002 turns time tables into hypertables when
-- the timescaledb extension is available. All timestamps are timestamptz (stored UTC).

CREATE TABLE market_data (
    symbol       text             NOT NULL,
    ts           timestamptz      NOT NULL,           -- bar start (minute)
    open         double precision NOT NULL,
    high         double precision NOT NULL,
    low          double precision NOT NULL,
    close        double precision NOT NULL,
    volume       double precision NOT NULL,
    vwap         double precision,
    trade_count  integer,
    source       text             NOT NULL,           -- polygon_ws | polygon_rest | marketsim ...
    revision     integer          NOT NULL DEFAULT 1, -- bumped when a corrected bar replaces it
    received_at  timestamptz      NOT NULL DEFAULT now(),
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, ts),
    CHECK (high >= low AND volume >= 0)
);

CREATE TABLE trades (
    symbol       text             NOT NULL,
    ts           timestamptz      NOT NULL,           -- SIP timestamp
    trade_id     text             NOT NULL,
    exchange     smallint         NOT NULL,
    tape         smallint,
    price        double precision NOT NULL CHECK (price >= 0),
    size         integer          NOT NULL CHECK (size >= 0),
    conditions   smallint[],
    sequence     bigint,
    received_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, ts, exchange, trade_id)
);

CREATE TABLE sys_metrics (
    ts            timestamptz      NOT NULL,
    service       text             NOT NULL,
    metric_name   text             NOT NULL,
    metric_value  double precision NOT NULL,
    tags          jsonb            NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX sys_metrics_name_ts ON sys_metrics (metric_name, ts DESC);
CREATE INDEX sys_metrics_service_ts ON sys_metrics (service, ts DESC);

CREATE TABLE signals (
    ts             timestamptz      NOT NULL,          -- bar the decision was made on
    model_version  text             NOT NULL,
    action         smallint         NOT NULL CHECK (action BETWEEN 0 AND 8),
    action_name    text             NOT NULL,
    confidence     double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    features       jsonb,
    risk_outcome   text,
    trace_id       text,
    created_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (model_version, ts)
);

CREATE TABLE orders (
    client_order_id  text             PRIMARY KEY,
    created_at       timestamptz      NOT NULL DEFAULT now(),
    updated_at       timestamptz      NOT NULL DEFAULT now(),
    account          text             NOT NULL,
    broker           text             NOT NULL,       -- sim | ib
    broker_order_id  text,
    symbol           text             NOT NULL,
    side             text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity         double precision NOT NULL CHECK (quantity > 0),
    order_type       text             NOT NULL DEFAULT 'MKT',
    limit_price      double precision,
    status           text             NOT NULL,       -- recorded | submitted | filled | ...
    filled_quantity  double precision NOT NULL DEFAULT 0,
    decision_ts      timestamptz,
    reason           text
);
CREATE INDEX orders_symbol_created ON orders (symbol, created_at DESC);
CREATE INDEX orders_open ON orders (status) WHERE status NOT IN ('filled', 'cancelled', 'rejected');

CREATE TABLE fills (
    execution_id     text             PRIMARY KEY,     -- broker execution id: a fill is stored once
    client_order_id  text             NOT NULL REFERENCES orders (client_order_id),
    ts               timestamptz      NOT NULL,
    account          text             NOT NULL,
    symbol           text             NOT NULL,
    side             text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity         double precision NOT NULL CHECK (quantity > 0),
    price            double precision NOT NULL CHECK (price > 0),
    commission       double precision NOT NULL DEFAULT 0,
    recorded_at      timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX fills_symbol_ts ON fills (symbol, ts DESC);

CREATE TABLE positions (
    account       text             NOT NULL,
    symbol        text             NOT NULL,
    quantity      double precision NOT NULL,
    avg_price     double precision NOT NULL DEFAULT 0,
    realized_pnl  double precision NOT NULL DEFAULT 0,
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (account, symbol)
);

CREATE TABLE portfolio_snapshots (
    ts              timestamptz      NOT NULL,
    account         text             NOT NULL,
    cash            double precision NOT NULL,
    equity          double precision NOT NULL,
    gross_exposure  double precision NOT NULL,
    realized_pnl    double precision NOT NULL,
    unrealized_pnl  double precision NOT NULL,
    PRIMARY KEY (account, ts)
);

CREATE TABLE price_checks (
    ts            timestamptz      NOT NULL,
    symbol        text             NOT NULL,
    feed_price    double precision,
    broker_price  double precision,
    diff_pct      double precision,
    ok            boolean          NOT NULL,
    detail        text,
    PRIMARY KEY (symbol, ts)
);

CREATE TABLE alerts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts          timestamptz NOT NULL DEFAULT now(),
    rule        text        NOT NULL,
    fingerprint text        NOT NULL,                -- dedupe key
    severity    text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state       text        NOT NULL CHECK (state IN ('firing', 'resolved')),
    message     text        NOT NULL,
    labels      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    notified    text[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX alerts_fingerprint_ts ON alerts (fingerprint, ts DESC);

CREATE TABLE gap_audit (
    audit_date  date        NOT NULL,
    symbol      text        NOT NULL,
    minute_ts   timestamptz NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('missing', 'mismatch', 'extra')),
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audit_date, symbol, minute_ts, kind)
);

-- Durable key/value state a service must keep across restarts (e.g. trading HALTED).
CREATE TABLE service_state (
    service     text        NOT NULL,
    key         text        NOT NULL,
    value       jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, key)
);
