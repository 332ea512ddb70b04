"""gRPC servicers: thin adapters from the contract to the server's parts."""

from .account import AccountService
from .image_edit import ImageEditService
from .providers import ProvidersService

__all__ = ["AccountService", "ImageEditService", "ProvidersService"]
