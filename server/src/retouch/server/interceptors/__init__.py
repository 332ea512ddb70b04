"""Server interceptors, applied to every RPC in the order listed in ``app.py``."""

from .access_log import AccessLogInterceptor
from .auth import AuthInterceptor

__all__ = ["AccessLogInterceptor", "AuthInterceptor"]
