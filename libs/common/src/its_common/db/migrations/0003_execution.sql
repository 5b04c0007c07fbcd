-- Execution (issue 7): risk decisions of the trader and the simulated paper broker's own books.
-- The sim_* tables are the SimBroker's state (its "exchange side"): the trader's orders, fills
-- and positions tables are rebuilt from them after a restart, exactly as from IB.

CREATE TABLE risk_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts               timestamptz      NOT NULL DEFAULT now(),
    decision_ts      timestamptz,
    model_version    text,
    action           smallint,
    symbol           text,
    side             text,
    quantity         double precision,
    outcome          text             NOT NULL CHECK (outcome IN ('allowed', 'denied', 'halt')),
    reason           text,                             -- its_trader.risk.RiskReason value
    detail           text
);
CREATE INDEX risk_events_ts ON risk_events (ts DESC);
CREATE INDEX risk_events_reason_ts ON risk_events (reason, ts DESC);

CREATE TABLE sim_accounts (
    account       text             PRIMARY KEY,
    cash          double precision NOT NULL,
    initial_cash  double precision NOT NULL,
    realized_pnl  double precision NOT NULL DEFAULT 0,
    commissions   double precision NOT NULL DEFAULT 0,
    updated_at    timestamptz      NOT NULL DEFAULT now()
);

CREATE TABLE sim_orders (
    broker_order_id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account          text             NOT NULL REFERENCES sim_accounts (account),
    client_order_id  text             NOT NULL UNIQUE, -- idempotent submission
    symbol           text             NOT NULL,
    side             text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity         double precision NOT NULL CHECK (quantity > 0),
    status           text             NOT NULL CHECK (status IN ('open', 'filled', 'cancelled', 'rejected')),
    filled_quantity  double precision NOT NULL DEFAULT 0,
    after_entry_id   text             NOT NULL,       -- trades stream id when placed: fill after it
    not_before_ms    bigint           NOT NULL,       -- market time: no trade before this fills it
    created_at       timestamptz      NOT NULL DEFAULT now(),
    updated_at       timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX sim_orders_open ON sim_orders (account) WHERE status = 'open';

CREATE TABLE sim_executions (
    execution_id     text             PRIMARY KEY,
    account          text             NOT NULL,
    broker_order_id  bigint           NOT NULL REFERENCES sim_orders (broker_order_id),
    client_order_id  text             NOT NULL,
    symbol           text             NOT NULL,
    side             text             NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity         double precision NOT NULL CHECK (quantity > 0),
    price            double precision NOT NULL CHECK (price > 0),
    trade_price      double precision NOT NULL,       -- the feed trade it filled at, before slippage
    trade_entry_id   text             NOT NULL,
    commission       double precision NOT NULL,
    ts_ms            bigint           NOT NULL,
    recorded_at      timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX sim_executions_account_ts ON sim_executions (account, ts_ms);

CREATE TABLE sim_positions (
    account       text             NOT NULL REFERENCES sim_accounts (account),
    symbol        text             NOT NULL,
    quantity      double precision NOT NULL,
    avg_price     double precision NOT NULL DEFAULT 0,
    realized_pnl  double precision NOT NULL DEFAULT 0,
    mark_price    double precision,
    mark_ts_ms    bigint,
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (account, symbol)
);
