-- wangban schema v3: what the parties' signed callbacks leave behind
-- nonces of accepted callbacks: a callback carrying a nonce seen before is a replay
CREATE TABLE callback_nonces (
    party    TEXT NOT NULL,
    nonce    TEXT NOT NULL,
    seen_at  BIGINT NOT NULL,
    PRIMARY KEY (party, nonce)
);
CREATE INDEX callback_nonces_by_time ON callback_nonces (seen_at);

-- money received for no case we know: kept for refund, never lost
CREATE TABLE unmatched_payments (
    payment_id   TEXT PRIMARY KEY,
    reference    TEXT NOT NULL,
    amount_cny   BIGINT NOT NULL,
    status       TEXT NOT NULL,
    why          TEXT NOT NULL,
    received_at  BIGINT NOT NULL
);
