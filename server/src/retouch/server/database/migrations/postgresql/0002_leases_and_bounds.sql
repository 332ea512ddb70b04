-- Jobs held by a replica under a lease, bounded by a deadline, cancellable by any replica.
-- (The balance bounds SQLite adds here were in PostgreSQL's schema from the start.)
ALTER TABLE jobs
    ADD COLUMN replica_id TEXT NOT NULL DEFAULT '',
    ADD COLUMN lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN deadline_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state IN ('queued', 'running');
