-- Jobs, their events, results, uploads, plans and the ledger: what SQLite holds embedded.
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    subject TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    operation TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    seed BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    result_id TEXT NOT NULL,
    error_code TEXT NOT NULL,
    error_message TEXT NOT NULL,
    final_status BYTEA NOT NULL,
    last_seq INTEGER NOT NULL,
    cost_credits BIGINT NOT NULL
);
CREATE UNIQUE INDEX jobs_request ON jobs (owner, request_id) WHERE request_id <> '';
CREATE INDEX jobs_owner ON jobs (owner, job_id);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('queued', 'running');
CREATE TABLE job_events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BYTEA NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE results (
    result_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    object_key TEXT NOT NULL,
    content_type TEXT NOT NULL,
    format TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX results_expiry ON results (expires_at) WHERE expires_at > 0;
CREATE TABLE uploads (
    upload_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX uploads_expiry ON uploads (expires_at);
CREATE TABLE subjects (
    owner TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
-- Balances and held credits stay below 2^62, so no sum of two of them overflows BIGINT.
CREATE TABLE accounts (
    owner TEXT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available BETWEEN 0 AND 4611686018427387904),
    held BIGINT NOT NULL CHECK (held BETWEEN 0 AND 4611686018427387904)
);
CREATE TABLE quota_usage (
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    used BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (owner, period)
);
CREATE TABLE reservations (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    credits BIGINT NOT NULL CHECK (credits >= 0),
    jobs INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'committed', 'released')),
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX reservations_held ON reservations (state) WHERE state = 'held';
CREATE TABLE ledger (
    entry_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT NOT NULL,
    period TEXT NOT NULL,
    available_delta BIGINT NOT NULL,
    held_delta BIGINT NOT NULL,
    jobs_delta INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX ledger_owner ON ledger (owner);
CREATE UNIQUE INDEX ledger_grants
    ON ledger (owner, request_id) WHERE kind = 'grant' AND request_id <> '';
