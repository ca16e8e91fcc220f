"""End to end: ``python -m devstack`` (``make run``) as a real process.

Runs the stack on a temporary data dir and free ports, submits the example
complaint, waits for its acknowledgement letter as an ``.eml`` file, stops the
stack with SIGINT, starts it again on the same data and checks the complaint is
still known. Every wait is bounded; the process group and every child process
are killed if anything goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import signal
import smtplib
import socket
import sys
import time
from email.parser import BytesHeaderParser
from pathlib import Path

import aiohttp

from complaints.ids import complaint_id_for_reference
from complaints.staff import StaffRole
from infra.signing import DEFAULT_KEY_FILE, read_key
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "complaint.json"
BANNER_END = "Press Ctrl-C to stop."


def _ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class DevStack:
    """One run of ``python -m devstack``."""

    def __init__(self, env: dict[str, str], stderr_path: Path) -> None:
        self.env, self.stderr_path = env, stderr_path
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.children: set[int] = set()
        self._reader: asyncio.Task[None] | None = None

    def output(self) -> str:
        err = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return "stdout:\n" + "\n".join(self.lines) + "\nstderr:\n" + err

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    async def start(self, timeout: float = 60) -> None:
        with open(self.stderr_path, "ab") as err:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "devstack", cwd=ROOT, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=err,
                start_new_session=True)
        self._reader = asyncio.create_task(self._read())
        deadline = time.monotonic() + timeout
        while BANNER_END not in self.lines:
            assert self.process.returncode is None, f"devstack exited early\n{self.output()}"
            assert time.monotonic() < deadline, f"no banner within {timeout} s\n{self.output()}"
            await asyncio.sleep(0.1)
        assert "Level Up complaints is running." in self.lines
        self.children = descendants(self.process.pid)
        assert self.children, "devstack started no child processes"

    async def stop(self, timeout: float = 30) -> int:
        """SIGINT (unless it already exited); its exit code once every child process is gone."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"devstack did not stop within {timeout} s\n{self.output()}") from None
        assert self._reader is not None
        await asyncio.wait_for(self._reader, 5)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in self.children) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = sorted(pid for pid in self.children if alive(pid))
        assert not left, f"child processes still running after stop: {left}\n{self.output()}"
        return code

    def kill(self) -> None:
        """Last resort (a failed test): nothing may survive."""
        if self.process is not None and self.process.returncode is None:
            self.children |= descendants(self.process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.cancel()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without settings that would point the stack or the starter elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TEMPORAL_", "SMTP_", "DATABASE_", "DEVSTACK_", "COMPLAINTS_", "MAILBOX_"))}
    return {**env, **extra}


async def namespace_retention(temporal_port: int) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "temporal"), "operator", "namespace", "describe",
        "--address", f"127.0.0.1:{temporal_port}", "--namespace", "default", "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return json.loads(out)["config"]["workflowExecutionRetentionTtl"]


async def submit(temporal_port: int, data_dir: Path) -> dict[str, object]:
    env = clean_env(TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",
                    COMPLAINTS_ENCRYPTION_KEYS_FILE=str(data_dir / "encryption-keys"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "submit", str(EXAMPLE), "--json", cwd=ROOT, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = out.decode().strip().splitlines()
    assert proc.returncode == 0, err.decode(errors="replace")
    return json.loads(lines[-1])


async def check_codec_server(codec_port: int, ui_port: int) -> None:
    """The stack's codec server answers the Web UI's origin, and only it."""
    ui = f"http://localhost:{ui_port}"
    body = {"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "e30="}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        url = f"http://127.0.0.1:{codec_port}"
        async with http.post(f"{url}/encode", json=body, headers={"Origin": ui}) as resp:
            assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == ui
            sealed = await resp.json()
        assert sealed["payloads"][0]["metadata"]["encoding"] != body["payloads"][0]["metadata"]["encoding"]
        async with http.post(f"{url}/decode", json=sealed, headers={"Origin": ui}) as resp:
            assert resp.status == 200 and await resp.json() == body
        async with http.post(f"{url}/decode", json=sealed, headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403


async def wait_for_letter(mail_dir: Path, complaint_id: str, kind: str, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(mail_dir.glob("*.eml")):
            with contextlib.suppress(OSError):
                headers = BytesHeaderParser().parsebytes(path.read_bytes())
                if headers["X-Letter-Kind"] == kind and headers["X-Complaint-Id"] == complaint_id:
                    return path
        await asyncio.sleep(0.2)
    found = [p.name for p in mail_dir.glob("*.eml")] if mail_dir.exists() else []
    raise AssertionError(f"no {kind} letter for {complaint_id} within {timeout} s; mail: {found}")


def send_mail(smtp_port: int, raw: bytes, sender: str = "jan.devries@example.nl") -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.sendmail(sender, ["info@level-up.nl"], raw)


async def admin(temporal_port: int, pg_port: int, data_dir: Path, *args: str) -> str:
    env = clean_env(TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",
                    COMPLAINTS_ENCRYPTION_KEYS_FILE=str(data_dir / "encryption-keys"),
                    DATABASE_URL=f"postgresql://postgres@127.0.0.1:{pg_port}/complaints",
                    XDG_CONFIG_HOME=str(data_dir.parent / "config"))  # the OS user's key, as make run made it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "admin.py", *args, cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode()


async def mail_walk_through(data_dir: Path, temporal_port: int, pg_port: int, smtp_port: int) -> None:
    """The README's walk through by mail: a complaint mailed to info@, its acknowledgement in the same
    conversation, a reply with the missing phone number, an out-of-office reply that changes nothing."""
    raw = (ROOT / "examples" / "complaint.eml").read_bytes()
    send_mail(smtp_port, raw)
    complaint_id = complaint_id_for_reference("<klacht-voorbeeld-1@example.nl>")
    letter = BytesHeaderParser().parsebytes(
        (await wait_for_letter(data_dir / "mail", complaint_id, "acknowledgement", timeout=60)).read_bytes())
    assert letter["In-Reply-To"] == "<klacht-voorbeeld-1@example.nl>"
    shown = json.loads(await admin(temporal_port, pg_port, data_dir, "show", complaint_id, "--json"))
    assert shown["missing"] == ["phone"] and shown["channel"] == "email"
    listed = await admin(temporal_port, pg_port, data_dir, "list", "--incomplete")
    assert complaint_id in listed
    reply = (f"From: Jan de Vries <jan.devries@example.nl>\r\nTo: info@level-up.nl\r\n"
             f"Subject: Re: {letter['Subject']}\r\nMessage-ID: <antwoord-1@example.nl>\r\n"
             f"In-Reply-To: {letter['Message-ID']}\r\nReferences: {letter['Message-ID']}\r\n\r\n"
             "Hierbij mijn telefoonnummer.\r\n\r\nTelefoon: 06 12345678\r\n").encode()
    send_mail(smtp_port, reply)
    away = (f"From: Jan de Vries <jan.devries@example.nl>\r\nTo: info@level-up.nl\r\n"
            f"Subject: Automatisch antwoord: {letter['Subject']}\r\nMessage-ID: <afwezig-1@example.nl>\r\n"
            f"Auto-Submitted: auto-replied\r\nIn-Reply-To: {letter['Message-ID']}\r\n\r\n"
            "Ik ben afwezig tot maandag.\r\n").encode()
    send_mail(smtp_port, away)
    deadline = time.monotonic() + 60
    while True:
        shown = json.loads(await admin(temporal_port, pg_port, data_dir, "show", complaint_id, "--json"))
        if shown["missing"] == [] and len(shown["messages"]) == 2:
            break
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.5)
    assert [m["kind"] for m in shown["messages"]] == ["reply", "auto-reply"]
    messages = await admin(temporal_port, pg_port, data_dir, "messages", complaint_id)
    assert "reply" in messages and "Re: Ontvangstbevestiging" in messages
    assert "06 12345678" in await admin(temporal_port, pg_port, data_dir, "message", complaint_id, "2")

    # The walk-through's staff action, with no step of one's own: make run made the OS user's director
    # key and a register holding it, so the decision is signed, accepted and audited under that name.
    decided = await admin(temporal_port, pg_port, data_dir, "decide", complaint_id, "--outcome", "upheld",
                          "--motivation", "Terecht; wij plannen opnieuw in.")
    assert decided.strip() == f"{complaint_id} decided: upheld; phase decided"
    key = read_key(data_dir.parent / "config" / DEFAULT_KEY_FILE)
    assert (key.name, key.role) == (getpass.getuser(), StaffRole.DIRECTOR)
    deadline = time.monotonic() + 30
    while f"decide by {key.name} (key {key.key_id})" not in await admin(temporal_port, pg_port, data_dir, "audit",
                                                                       complaint_id):
        assert time.monotonic() < deadline, "the decision is not in the audit trail"
        await asyncio.sleep(0.5)


async def test_devstack_runs_the_system_and_keeps_complaints_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    temporal_port, ui_port, pg_port, smtp_port, codec_port, imap_port = _ports(6)
    env = clean_env(DEVSTACK_DATA_DIR=str(data_dir), XDG_CONFIG_HOME=str(tmp_path / "config"),
                    DEVSTACK_TEMPORAL_PORT=str(temporal_port),
                    DEVSTACK_UI_PORT=str(ui_port), DEVSTACK_POSTGRES_PORT=str(pg_port),
                    DEVSTACK_SMTP_PORT=str(smtp_port), DEVSTACK_CODEC_PORT=str(codec_port),
                    DEVSTACK_IMAP_PORT=str(imap_port))

    first = DevStack(env, tmp_path / "first.stderr")
    try:
        await first.start()
        assert any(f"http://localhost:{ui_port}" in line for line in first.lines)
        assert any(f"Codec server: http://localhost:{codec_port}" in line for line in first.lines)
        await check_codec_server(codec_port, ui_port)
        assert await namespace_retention(temporal_port) == "2592000s"  # closed runs kept 30 days
        result = await submit(temporal_port, data_dir)
        assert result["created"] is True
        complaint_id = str(result["complaint_id"])
        await wait_for_letter(data_dir / "mail", complaint_id, "acknowledgement")
        await mail_walk_through(data_dir, temporal_port, pg_port, smtp_port)
        assert await first.stop() == 0, first.output()
    finally:
        first.kill()
    assert "Traceback" not in first.output(), first.output()
    assert (data_dir / "temporal.db").exists() and (data_dir / "postgres" / "PG_VERSION").exists()

    second = DevStack(env, tmp_path / "second.stderr")
    try:
        await second.start()
        again = await submit(temporal_port, data_dir)
        assert again == {"complaint_id": complaint_id, "created": False}
        assert await second.stop() == 0, second.output()
    finally:
        second.kill()
    assert "Traceback" not in second.output(), second.output()

    third = DevStack(env, tmp_path / "third.stderr")
    try:
        await third.start()
        worker = [pid for pid in third.children if "worker.py" in _cmdline(pid)]
        assert len(worker) == 1, third.output()
        os.kill(worker[0], signal.SIGKILL)
        assert third.process is not None
        code = await asyncio.wait_for(third.process.wait(), 30)
        assert code == 1, third.output()
        assert "the worker exited unexpectedly" in third.output()
        assert await third.stop() == 1
    finally:
        third.kill()


async def test_devstack_names_a_port_that_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(DEVSTACK_DATA_DIR=str(tmp_path / "data"), DEVSTACK_TEMPORAL_PORT=str(port))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devstack", cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0], err.decode()
    assert not (tmp_path / "data" / "postgres").exists()
