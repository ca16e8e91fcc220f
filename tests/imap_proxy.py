"""A TCP proxy in front of the test IMAP server that breaks things on purpose: it cuts the connection
in the middle of a mail's bytes and then refuses connections for a while (what a server restart looks
like to the client), or calls back when the client sends a command (to kill the worker right then)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable


class ImapProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        #: Cut the connection half-way through the next mail's bytes (BODY[]), then refuse this long.
        self.cut_next_fetch_for: float | None = None
        #: Called with each line the client sends; returning True drops that line and the connection.
        self.on_command: Callable[[bytes], bool] | None = None
        self.cuts = 0
        self._refusing_until = 0.0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> ImapProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._refusing_until:
            client_writer.transport.abort()  # the server is "down"
            return
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        def cut() -> None:
            client_writer.transport.abort()
            server_writer.transport.abort()

        async def upstream() -> None:
            while line := await client_reader.readline():
                if self.on_command is not None and self.on_command(line):
                    cut()
                    return
                server_writer.write(line)
                await server_writer.drain()

        async def downstream() -> None:
            while chunk := await server_reader.read(65536):
                if self.cut_next_fetch_for is not None and b"BODY[] {" in chunk:
                    refuse, self.cut_next_fetch_for = self.cut_next_fetch_for, None
                    client_writer.write(chunk[: len(chunk) // 2])
                    await client_writer.drain()
                    self.cuts += 1
                    self._refusing_until = loop.time() + refuse
                    cut()
                    return
                client_writer.write(chunk)
                await client_writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            with contextlib.suppress(Exception):
                cut()
