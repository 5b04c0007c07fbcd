-- Leader election (issue 13): the highest fencing token seen per lease. The trader records an
-- order only in a transaction that first raises this row to its own token; a holder whose token
-- is lower (an old leader that was paused and lost its lease) is refused there.
CREATE TABLE leader_fence (
    name        text        PRIMARY KEY,
    token       bigint      NOT NULL CHECK (token >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The fencing token under which an order was recorded (NULL: leader election off).
ALTER TABLE orders ADD COLUMN fence_token bigint;
