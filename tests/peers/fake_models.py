"""Fake model APIs on 127.0.0.1 that drive a real agent to call an MCP tool: the OpenAI Responses API (for
Codex), the Anthropic Messages API (for Claude Code) and the Gemini API (for Gemini CLI). The "model" calls
every offered tool named `tool` (one per MCP server; Claude names it `mcp__SERVER__tool`), `rounds` times over
(one call per turn, `pause_s` before each answer so a session can outlive short token lifetimes), then answers
with every tool output it was given, so the test reads what the MCP servers returned.

Served from a thread with its own event loop, so synchronous tests can run the agent as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

START_TIMEOUT_S = 10


@dataclass
class _FakeApi:
    tool: str
    rounds: int = 1
    pause_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # what each tool call returned, as the agent sent it
    offered_tools: list[str] = field(default_factory=list)
    base_url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None
    path = "/v1/responses"

    def start(self) -> Any:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(START_TIMEOUT_S)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_S)

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post(self.path, self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}{self.path.rsplit('/', 1)[0]}"
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


@dataclass
class FakeResponsesApi(_FakeApi):
    """OpenAI's Responses API, streamed: `base_url` is Codex's `model_providers.X.base_url`."""

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        offered = _functions(body.get("tools") or [])
        self.offered_tools = [f"{namespace}/{name}" if namespace else name for namespace, name in offered]
        items = [i for i in body.get("input") or [] if isinstance(i, dict)]
        outputs = [i for i in items if i.get("type") == "function_call_output"]
        self.outputs = [_text_of(i.get("output")) for i in outputs]
        await asyncio.sleep(self.pause_s)
        matching = [(namespace, name) for namespace, name in offered if name == self.tool]
        if matching and len(outputs) < self.rounds * len(matching):
            namespace, name = matching[len(outputs) % len(matching)]
            item: dict[str, Any] = {
                "type": "function_call",
                "id": f"fc_{len(outputs)}",
                "call_id": f"call_{len(outputs)}",
                "name": name,
                "arguments": "{}",
                "status": "completed",
            }
            if namespace:
                item["namespace"] = namespace  # Codex offers each MCP server's tools as a namespace
        else:
            text = "tool said: " + " | ".join(self.outputs) if matching else "no such tool offered"
            item = {
                "type": "message",
                "id": f"msg_{len(outputs)}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        return await _stream(request, len(self.requests), item)


def _functions(tools: list[Any]) -> list[tuple[str | None, str]]:
    """(namespace, name) of every function offered, inside namespaces too."""
    found: list[tuple[str | None, str]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace":
            found += [(tool.get("name"), inner.get("name") or "") for inner in tool.get("tools") or []]
        elif tool.get("name"):
            found.append((None, tool["name"]))
    return found


def _text_of(output: Any) -> str:
    if isinstance(output, str):
        return output
    return json.dumps(output)


async def _stream(request: web.Request, number: int, item: dict[str, Any]) -> web.StreamResponse:
    """One streamed response holding `item`, in the Responses API's server-sent events."""
    response = {"id": f"resp_{number}", "object": "response", "status": "in_progress", "output": []}
    usage = {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}
    events = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.completed",
            "response": {**response, "status": "completed", "output": [item], "usage": usage},
        },
    ]
    return await _send_events(request, events)


async def _send_events(request: web.Request, events: list[dict[str, Any]]) -> web.StreamResponse:
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await stream.prepare(request)
    for event in events:
        await stream.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    await stream.write_eof()
    return stream


@dataclass
class FakeMessagesApi(_FakeApi):
    """Anthropic's Messages API, streamed: `base_url` is Claude Code's ANTHROPIC_BASE_URL. A request that
    offers no such tool (Claude's own side requests) gets a short text answer."""

    path = "/v1/messages"

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        names = [t.get("name") or "" for t in body.get("tools") or [] if isinstance(t, dict)]
        matching = [n for n in names if n.startswith("mcp__") and n.endswith(f"__{self.tool}")]
        if matching:
            self.offered_tools = names
        results = [
            block
            for message in body.get("messages") or []
            if isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
        if matching:
            self.outputs = [_text_of(r.get("content")) for r in results]
            await asyncio.sleep(self.pause_s)
        if matching and len(results) < self.rounds * len(matching):
            name = matching[len(results) % len(matching)]
            block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{len(results)}", "name": name, "input": {}}
            delta: dict[str, Any] = {"type": "input_json_delta", "partial_json": "{}"}
            stop = "tool_use"
        else:
            text = "tool said: " + " | ".join(self.outputs) if matching else "ok"
            block, delta, stop = {"type": "text", "text": ""}, {"type": "text_delta", "text": text}, "end_turn"
        message = {
            "id": f"msg_{len(self.requests)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        events = [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": block},
            {"type": "content_block_delta", "index": 0, "delta": delta},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 1}},
            {"type": "message_stop"},
        ]
        return await _send_events(request, events)


@dataclass
class FakeGeminiApi(_FakeApi):
    """The Gemini API (`models/M:streamGenerateContent`, `:generateContent`, `:countTokens`): `base_url`
    without `/v1beta` is Gemini CLI's GOOGLE_GEMINI_BASE_URL."""

    path = "/v1beta/models/{call:.*}"

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        call = request.match_info["call"]
        body = await request.json()
        self.requests.append(body)
        if call.endswith(":countTokens"):
            return web.json_response({"totalTokens": 1})
        names = [d.get("name") or "" for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        matching = [n for n in names if n.endswith(self.tool)]
        if matching:
            self.offered_tools = names
        responses = [
            part["functionResponse"]
            for content in body.get("contents") or []
            for part in content.get("parts") or []
            if "functionResponse" in part
        ]
        if matching:
            self.outputs = [_text_of((r.get("response") or {}).get("output", r.get("response"))) for r in responses]
            await asyncio.sleep(self.pause_s)
        part: dict[str, Any]
        if matching and len(responses) < self.rounds * len(matching):
            part = {"functionCall": {"name": matching[len(responses) % len(matching)], "args": {}}}
        else:
            part = {"text": "tool said: " + " | ".join(self.outputs) if matching else "ok"}
        chunk = {
            "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
        }
        if ":streamGenerateContent" not in call:
            return web.json_response(chunk)
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        await stream.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
        await stream.write_eof()
        return stream
