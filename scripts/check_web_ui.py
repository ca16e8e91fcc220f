"""``make ui-check``: the Temporal Web UI, in a real browser, shows a complaint decrypted.

Starts ``python -m devstack`` on a temporary data dir and free ports, submits
``examples/complaint.json`` with the starter, waits for the acknowledgement letter, then drives
headless Chromium over the DevTools protocol (the UI is a JavaScript app: the page only holds
the data once its own fetches ran, so every check polls the rendered text):

1. the workflow list, filtered on ``ComplaintPhase = "formal"`` and with a ComplaintPhase
   column, lists the complaint id with its phase;
2. the complaint's workflow page shows the workflow input in clear (product, complainant's
   name): Temporal only holds ciphertext, so this passes only if the UI decoded the payloads
   through the codec server;
3. its Search Attributes tab shows ``"ComplaintPhase": "formal"``.

It saves a screenshot of the workflow page as ``docs/web-ui.png``, prints one PASS/FAIL line
per check and exits 0 only if all pass (1 on a failure, 2 if Chromium is missing). Needs
Chromium: ``apt-get install -y chromium`` (Debian/Ubuntu), or set ``CHROMIUM`` to a
Chrome/Chromium binary.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "complaint.json"
SCREENSHOT = ROOT / "docs" / "web-ui.png"
PRODUCT = "Leiderschapstraject Teamleiders 2026"
COMPLAINANT = "Marieke van den Berg"
PHASE_QUERY = 'ComplaintPhase = "formal"'
WIDTH, HEIGHT = 1400, 900
#: The list's columns (the UI keeps them in localStorage), with the complaint's phase and product.
COLUMNS = [{"label": label, "pinned": label in ("Status", "Workflow ID")}
           for label in ("Status", "Workflow ID", "ComplaintPhase", "ComplaintProduct", "Type", "Start")]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-port=0"]


class CheckFailed(Exception):
    pass


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (path := shutil.which(name)):
            return path
    return None


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.add(s.getsockname()[1])
    return sorted(ports)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TEMPORAL_", "SMTP_", "DATABASE_", "DEVSTACK_", "COMPLAINTS_", "CODEC_"))}
    return {**env, **extra}


async def poll(what: str, probe: Callable[[], Awaitable[Any]], timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if result := await probe():
            return result
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.5)


class Stack:
    """``python -m devstack`` as a process group of its own."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log, "wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "devstack", cwd=ROOT, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)

        async def ready() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                raise CheckFailed(f"devstack exited (code {self.process.returncode}):\n{self.output()}")
            return "Press Ctrl-C to stop." in self.output()
        await poll("the dev stack's banner", ready, timeout=90)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.process.wait(), 45)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        return self.process.returncode


async def submit(temporal_port: int, keys_file: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "submit", str(EXAMPLE), "--json", cwd=ROOT,
        env=clean_env(TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",
                      COMPLAINTS_ENCRYPTION_KEYS_FILE=str(keys_file)),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if proc.returncode != 0:
        raise CheckFailed(f"starter exited {proc.returncode}: {err.decode(errors='replace').strip()}")
    return str(json.loads(out.decode().strip().splitlines()[-1])["complaint_id"])


async def acknowledgement(mail_dir: Path, complaint_id: str) -> Path | None:
    for path in sorted(mail_dir.glob("*.eml")):
        with contextlib.suppress(OSError):
            headers = BytesHeaderParser().parsebytes(path.read_bytes())
            if headers["X-Letter-Kind"] == "acknowledgement" and headers["X-Complaint-Id"] == complaint_id:
                return path
    return None


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary, self.profile = binary, profile
        self.process: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ids = itertools.count(1)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"

        async def port() -> str | None:
            assert self.process is not None
            if self.process.returncode is not None:
                raise CheckFailed(f"{self.binary} exited at start (code {self.process.returncode})")
            text = port_file.read_text() if port_file.exists() else ""
            return text.split()[0] if text.strip() else None
        devtools = await poll("Chromium's DevTools port", port, timeout=30)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self.http.get(f"http://127.0.0.1:{devtools}/json/list") as resp:
            page = next(t for t in await resp.json() if t["type"] == "page")
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        await self.call("Page.enable")
        await self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                        deviceScaleFactor=1, mobile=False)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        async for message in self.ws:
            data = json.loads(message.data)
            if data.get("id") == call_id:
                if "error" in data:
                    raise CheckFailed(f"DevTools {method}: {data['error'].get('message')}")
                return data["result"]
        raise CheckFailed("Chromium closed the DevTools connection")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def open(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def text(self) -> str:
        return await self.evaluate("document.body ? document.body.innerText : ''") or ""

    async def screenshot(self, path: Path) -> int:
        shot = await self.call("Page.captureScreenshot", format="png")
        data = base64.b64decode(shot["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return len(data)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()


def report(ok: bool, what: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}: {what}", flush=True)
    return ok


async def check_ui(browser: Browser, ui: str, complaint_id: str) -> bool:
    ok = True
    # 1. The list, filtered on the phase, with the phase as a column.
    await browser.call("Page.addScriptToEvaluateOnNewDocument", source=(
        "localStorage.setItem('namespace-workflow-table-columns', "
        f"JSON.stringify({json.dumps({'default': COLUMNS})}));"))
    await browser.open(f"{ui}/namespaces/default/workflows?query={quote(PHASE_QUERY)}")
    row_js = ("(() => { const row = [...document.querySelectorAll('tr')]"
              f".find(r => r.innerText.includes({json.dumps(complaint_id)})); return row ? row.innerText : ''; }})()")
    last_row = ""

    async def listed() -> bool:
        nonlocal last_row
        last_row = await browser.evaluate(row_js) or ""
        return "formal" in last_row.split() and PRODUCT in last_row
    try:
        await poll(f"{complaint_id} with phase formal in the workflow list", listed)
        report(True, f"workflow list ({PHASE_QUERY}) lists {complaint_id} with phase formal")
    except CheckFailed as err:
        return report(False, f"{err} (its row: {' | '.join(last_row.split()) or 'none'})")

    # 2. The workflow page, reached from the list: the input decoded through the codec server.
    link_js = ("(() => { const a = [...document.querySelectorAll('a')].find(a => a.href.includes("
               f"'/workflows/' + {json.dumps(complaint_id)} + '/')); return a ? a.href : ''; }})()")
    page = await browser.evaluate(link_js)
    if not report(bool(page), "the list links to the complaint's workflow page"):
        return False
    page = page.split("#")[0].split("?")[0].rstrip("/")
    if not page.endswith(("/history", "/timeline")):
        page += "/history"
    await browser.open(page)

    async def decoded() -> bool:
        text = await browser.text()
        return "Input" in text and PRODUCT in text and COMPLAINANT in text
    try:
        await poll("the decoded workflow input", decoded)
        ok &= report(True, f"workflow page shows the decoded input ({PRODUCT!r}, {COMPLAINANT!r})")
    except CheckFailed as err:
        unreachable = "Codec Server could not connect" in await browser.text()
        hint = " (the UI could not reach the codec server)" if unreachable else " (still encrypted?)"
        ok &= report(False, f"workflow page: {err}{hint}")
    await asyncio.sleep(1)  # let the JSON viewer finish laying out before the screenshot
    shot = SCREENSHOT if ok else Path(tempfile.gettempdir()) / "complaints-web-ui-failed.png"
    size = await browser.screenshot(shot)  # a failure never replaces the committed screenshot
    ok &= report(size < 500_000, f"screenshot {shot.relative_to(ROOT) if ok else shot} ({size // 1024} KB)")

    # 3. The search attributes tab.
    await browser.open(page.rsplit("/", 1)[0] + "/search-attributes")

    async def phase() -> bool:
        return '"ComplaintPhase": "formal"' in await browser.text()
    try:
        await poll("ComplaintPhase on the search attributes tab", phase)
        ok &= report(True, 'search attributes tab shows "ComplaintPhase": "formal"')
    except CheckFailed as err:
        ok &= report(False, f"search attributes tab: {err}")
    return ok


async def main() -> int:
    chromium = find_chromium()
    if chromium is None:
        print("FAIL: Chromium not found: install it (Debian/Ubuntu: apt-get install -y chromium) "
              "or set CHROMIUM to a Chrome/Chromium binary", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="complaints-ui-check-") as tmp:
        tmp_dir = Path(tmp)
        data_dir = tmp_dir / "data"
        temporal_port, ui_port, pg_port, smtp_port, codec_port = free_ports(5)
        stack = Stack(clean_env(DEVSTACK_DATA_DIR=str(data_dir), DEVSTACK_TEMPORAL_PORT=str(temporal_port),
                                DEVSTACK_UI_PORT=str(ui_port), DEVSTACK_POSTGRES_PORT=str(pg_port),
                                DEVSTACK_SMTP_PORT=str(smtp_port), DEVSTACK_CODEC_PORT=str(codec_port)),
                      tmp_dir / "devstack.log")
        browser = Browser(chromium, tmp_dir / "chromium")
        ok = False
        try:
            await stack.start()
            report(True, f"dev stack running (Web UI http://localhost:{ui_port}, codec server :{codec_port})")
            complaint_id = await submit(temporal_port, data_dir / "encryption-keys")
            await poll("the acknowledgement letter", lambda: acknowledgement(data_dir / "mail", complaint_id))
            report(True, f"submitted {complaint_id}; acknowledgement letter sent")
            await browser.start()
            ok = await check_ui(browser, f"http://localhost:{ui_port}", complaint_id)
        except CheckFailed as err:
            report(False, str(err))
        finally:
            await browser.close()
            code = await stack.stop()
            if code not in (0, None):
                ok = report(False, f"dev stack exited {code} on stop:\n{stack.output()}") and ok
        print("PASS" if ok else "FAIL", flush=True)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
