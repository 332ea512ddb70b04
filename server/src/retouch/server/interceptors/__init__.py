"""Server interceptors, applied to every RPC in the order listed in ``app.py``."""

from .auth import AuthInterceptor

__all__ = ["AuthInterceptor"]
