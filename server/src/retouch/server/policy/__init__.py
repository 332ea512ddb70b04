"""Policy and money: plans, token buckets, the quota and credit ledger. The shared
engines' classes (``postgres_ledger``, ``redis_ratelimit``) are imported only where a
URL names them."""

from .engine import EditIntent, Policy, check_pixels
from .ledger import MAX_CREDITS, Balance, Ledger, Reservation
from .plans import DEFAULT_PLAN, Plan, PlanBook, PlanError
from .ratelimit import (
    AdaptiveRate,
    Bucket,
    BucketSnapshot,
    Decision,
    MemoryRateLimiter,
    RateLimiter,
)
from .sqlite_ledger import SqliteLedger

__all__ = [
    "DEFAULT_PLAN",
    "MAX_CREDITS",
    "AdaptiveRate",
    "Balance",
    "Bucket",
    "BucketSnapshot",
    "Decision",
    "EditIntent",
    "Ledger",
    "MemoryRateLimiter",
    "Plan",
    "PlanBook",
    "PlanError",
    "Policy",
    "RateLimiter",
    "Reservation",
    "SqliteLedger",
    "check_pixels",
]
