"""The one place that builds a Temporal client.

Worker, starter and admin CLI connect through :func:`connect`, so the data
converter (pydantic today; encryption codec and TLS later) is the same everywhere.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from complaints.config import Settings


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
