"""The lifecycle every service here shares: ``async with`` starts it and stops it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Service(ABC):
    """A service started with :meth:`start` and stopped with :meth:`stop`.

    Subclasses refuse a second start and make :meth:`stop` idempotent; this
    base only gives them ``async with``.
    """

    @abstractmethod
    async def start(self) -> None:
        """Start the service."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop the service, cancelling what it runs."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
