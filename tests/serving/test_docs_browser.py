"""The docs page in headless Chromium with every request off 127.0.0.1 refused: it loads
(local Swagger UI, no tag manager), "Authorize" takes a key, and "Try it out" on /score
gets a 200 shown in the page.

Chromium is driven over the DevTools protocol (aiohttp's websocket client): the `Fetch`
domain pauses every request, lets those to the service through and fails the others,
which are recorded; `--host-resolver-rules` also maps every other host to nowhere.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from processes import stop_process_group

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--window-size=1280,2000",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--remote-debugging-port=0"]
LOCAL = "127.0.0.1"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: "
                                "apt-get install -y chromium (CI installs it)")


class Page:
    """One Chromium tab over the DevTools protocol; requests off 127.0.0.1 are refused and kept in `refused`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.refused: list[str] = []
        self.console_errors: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            event = json.loads(message.data)
            if "id" in event and event["id"] in self.pending:
                self.pending.pop(event["id"]).set_result(event)
            elif event.get("method") == "Fetch.requestPaused":
                asyncio.create_task(self._gate(event["params"]))
            elif event.get("method") == "Runtime.exceptionThrown":
                self.console_errors.append(json.dumps(event["params"]["exceptionDetails"])[:500])

    async def _gate(self, params: dict) -> None:
        url = params["request"]["url"]
        if urlsplit(url).hostname == LOCAL or url.startswith(("data:", "file:")):
            await self.send("Fetch.continueRequest", requestId=params["requestId"])
        else:
            self.refused.append(url)
            await self.send("Fetch.failRequest", requestId=params["requestId"], errorReason="BlockedByClient")

    async def send(self, method: str, **params) -> dict:
        key = next(self.ids)
        self.pending[key] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps({"id": key, "method": method, "params": params}))
        reply = await asyncio.wait_for(self.pending[key], 30)
        assert "error" not in reply, reply
        return reply.get("result", {})

    async def js(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 60):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {expression}")

    async def click(self, selector: str) -> None:
        await self.wait_for(f"!!document.querySelector({json.dumps(selector)})")
        await self.js(f"document.querySelector({json.dumps(selector)}).click()")

    async def type_into(self, selector: str, text: str) -> None:
        """Real keyboard input (React sees it), into the element `selector`."""
        await self.wait_for(f"!!document.querySelector({json.dumps(selector)})")
        await self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Chromium with a free DevTools port; returns (process, browser's HTTP endpoint)."""
    proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process_group(proc)
            pytest.fail("Chromium did not open its DevTools port")
        time.sleep(0.2)
    return proc, f"http://{LOCAL}:{port_file.read_text().split()[0]}"


@contextlib.asynccontextmanager
async def new_page(devtools: str):
    """A new tab of the browser at `devtools`, every request it makes paused for the gate."""
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{devtools}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
            await page.send("Page.enable")
            yield page


async def try_score_in_swagger(devtools: str, docs_url: str, api_key: str) -> dict:
    async with new_page(devtools) as page:
        await page.send("Runtime.enable")
        await page.send("Page.navigate", url=docs_url)
        await page.wait_for("document.querySelectorAll('.opblock').length >= 3")
        operations = await page.js("[...document.querySelectorAll('.opblock-summary-path')].map(e => e.innerText)")
        await page.click(".auth-wrapper .authorize")
        await page.type_into(".modal-ux input[type=text], .modal-ux input[type=password]", api_key)
        await page.click(".modal-ux .auth-btn-wrapper .authorize")
        await page.wait_for("!!document.querySelector('.modal-ux .auth-btn-wrapper .btn-done')")
        await page.click(".modal-ux .btn-done")
        await page.click("#operations-API-score .opblock-summary-control")
        await page.click("#operations-API-score .try-out__btn")
        await page.click("#operations-API-score .execute")
        status = await page.wait_for(
            "(document.querySelector('#operations-API-score .live-responses-table tbody .response-col_status') "
            "|| {}).innerText")
        body = await page.js("(document.querySelector('#operations-API-score .live-responses-table "
                             ".response-col_description pre') || {}).innerText")
        curl = await page.js("(document.querySelector('#operations-API-score .curl-command') || {}).innerText")
        page.reader.cancel()
        return {"operations": operations, "status": status.strip(), "body": body, "curl": curl,
                "refused": page.refused, "errors": page.console_errors}


def test_docs_authorize_and_try_score_offline(served, tmp_path):
    proc, devtools = start_chromium(tmp_path / "profile")
    try:
        seen = asyncio.run(try_score_in_swagger(devtools, served["url"] + "/docs", served["api_key"]))
    finally:
        stop_process_group(proc)
    assert seen["status"] == "200", seen
    assert json.loads(seen["body"])["deals"][0]["deal_id"] == "D-1001"
    assert f"Bearer {served['api_key']}" in seen["curl"]
    assert seen["refused"] == [] and seen["errors"] == []  # nothing from outside, no script error
    assert [op.replace("\u200b", "") for op in seen["operations"][:3]] == ["/score", "/forecast", "/pipeline"]
    assert not any("/ping" in op for op in seen["operations"])


def test_the_blocking_can_fail(tmp_path):
    """The gate above refuses a request off 127.0.0.1 and records it: a page that loads a
    tracker (BentoML's own page, still in its package) is caught."""
    bentoml_page = tmp_path / "bentoml.html"
    from bentoml._internal.server.http_app import DEFAULT_INDEX_HTML

    bentoml_page.write_text(DEFAULT_INDEX_HTML)

    async def load() -> list[str]:
        async with new_page(devtools) as page:
            await page.send("Page.navigate", url=bentoml_page.as_uri())
            deadline = time.monotonic() + 30
            while not page.refused and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            page.reader.cancel()
            return page.refused

    proc, devtools = start_chromium(tmp_path / "profile")
    try:
        refused = asyncio.run(load())
    finally:
        stop_process_group(proc)
    assert any("googletagmanager.com" in url for url in refused)
