-- The schema every SQLite database had before versioned migrations; IF NOT EXISTS lets
-- it adopt a database created by an older retouch.
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    subject TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    result_id TEXT NOT NULL,
    error_code TEXT NOT NULL,
    error_message TEXT NOT NULL,
    final_status BLOB NOT NULL,
    last_seq INTEGER NOT NULL,
    cost_credits INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_request ON jobs (owner, request_id) WHERE request_id != '';
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, job_id);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (state) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    result_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    object_key TEXT NOT NULL,
    content_type TEXT NOT NULL,
    format TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_expiry ON results (expires_at) WHERE expires_at > 0;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    object_key TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content_type TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_expiry ON uploads (expires_at);
CREATE TABLE IF NOT EXISTS subjects (
    owner TEXT PRIMARY KEY,
    plan TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    owner TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0),
    held INTEGER NOT NULL CHECK (held >= 0)
);
CREATE TABLE IF NOT EXISTS quota_usage (
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    used INTEGER NOT NULL CHECK (used >= 0),
    PRIMARY KEY (owner, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    job_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    period TEXT NOT NULL,
    credits INTEGER NOT NULL,
    jobs INTEGER NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_held ON reservations (state) WHERE state = 'held';
CREATE TABLE IF NOT EXISTS ledger (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT NOT NULL,
    period TEXT NOT NULL,
    available_delta INTEGER NOT NULL,
    held_delta INTEGER NOT NULL,
    jobs_delta INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_owner ON ledger (owner);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_grants
    ON ledger (owner, request_id) WHERE kind = 'grant' AND request_id != '';
