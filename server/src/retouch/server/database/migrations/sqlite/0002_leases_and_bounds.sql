-- Jobs held by a replica under a lease, bounded by a deadline, cancellable by any replica.
ALTER TABLE jobs ADD COLUMN replica_id TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN deadline_at REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state IN ('queued', 'running');

-- Balances and held credits stay below 2^62, so no sum of two of them overflows a
-- 64-bit integer. SQLite adds CHECK constraints only by rebuilding the table.
CREATE TABLE accounts_bounded (
    owner TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available BETWEEN 0 AND 4611686018427387904),
    held INTEGER NOT NULL CHECK (held BETWEEN 0 AND 4611686018427387904)
);
INSERT INTO accounts_bounded (owner, available, held) SELECT owner, available, held FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_bounded RENAME TO accounts;
