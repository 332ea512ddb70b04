"""Server interceptors, applied to every RPC in the order listed in ``app.py``."""

from .access_log import AccessLogInterceptor
from .auth import AuthInterceptor
from .decoding import RequestDecodingInterceptor

__all__ = ["AccessLogInterceptor", "AuthInterceptor", "RequestDecodingInterceptor"]
