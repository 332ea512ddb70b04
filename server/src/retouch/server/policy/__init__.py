"""Policy and money: plans, token buckets, the quota and credit ledger."""

from .engine import EditIntent, Policy, check_pixels
from .ledger import Balance, Ledger, Reservation, SqliteLedger
from .plans import DEFAULT_PLAN, Plan, PlanBook, PlanError
from .ratelimit import AdaptiveRate, BucketSnapshot, Decision, MemoryRateLimiter, RateLimiter

__all__ = [
    "DEFAULT_PLAN",
    "AdaptiveRate",
    "Balance",
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
