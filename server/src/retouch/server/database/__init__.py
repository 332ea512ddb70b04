"""The database behind jobs, events, results, uploads, the ledger, plans and idempotency
keys, chosen by URL: ``sqlite:///path`` (embedded, one replica) or
``postgresql://user@host:port/db`` (shared by several replicas).

``backends`` opens one by URL; ``migrations`` ships and applies the schema; ``sqlite``
and ``postgres`` hold the connection plumbing; ``signals`` the in-process wake-ups.
"""
