"""The local backend: the in-process engine behind the same `Backend` contract as the API.

It renders the K2 chat format itself, keeps the previous request's KV cache (only
the tokens after the longest shared prefix are prefilled), streams reasoning, text
and tool calls as the API backend does, and guards tool sections: inside one, only
tokens that keep the section valid are taken, so every call names a declared tool
and carries a well-formed JSON object.
"""

from __future__ import annotations

import asyncio
import codecs
import copy
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kimicode.backends.base import BackendError, ChatEvent, ChatRequest, Finish, ModelInfo, ToolCallDone, Usage
from kimicode.backends.k2.chat import TOOL_CALL_BEGIN, TOOL_SECTION_BEGIN, StreamParser, render_segments
from kimicode.backends.k2.engine import Engine, PrefillStopped
from kimicode.backends.k2.generate import make_generator, sample
from kimicode.backends.k2.guard import ToolCallGuard
from kimicode.backends.k2.tokenizer import Tokenizer

GUARD_CANDIDATES = 64  # most-likely tokens tried inside a tool section before forcing one
# Near the end of max_tokens an open tool section is closed (a long call is cut short as
# valid JSON, never truncated), and no new section opens in the last tokens a whole call
# needs (at least CLOSING_RESERVE; more for tools with many required keys).
CLOSING_RESERVE = 24
CLOSING_MARGIN = 4  # one token can lengthen the closing text by a bracket or two


@dataclass(frozen=True, slots=True)
class LocalOptions:
    device: str = "auto"
    dtype: str = "bfloat16"
    quant: str = "auto"
    experts_on_cpu: bool = False
    top_p: float = 0.95
    seed: int | None = None


class LocalBackend:
    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        info: ModelInfo,
        *,
        thinking: bool = False,
        top_p: float = 1.0,
        seed: int | None = None,
        logit_bias: dict[int, float] | None = None,
    ):
        if tokenizer.vocab_size > engine.config.vocab_size:
            raise BackendError(
                f"the tokenizer has {tokenizer.vocab_size} ids but the model only {engine.config.vocab_size}", kind="config"
            )
        self.engine, self.tokenizer, self.info = engine, tokenizer, info
        self.thinking, self.top_p, self.seed = thinking, top_p, seed
        self.logit_bias = dict(logit_bias or {})  # as OpenAI's logit_bias: added before sampling
        self._lock = threading.Lock()  # one generation at a time: there is one warm cache
        self._token_bytes: dict[int, bytes] = {}

    @classmethod
    def load(cls, path: str | Path, info: ModelInfo, options: LocalOptions = LocalOptions(), *, progress: bool = True) -> LocalBackend:
        dtype = getattr(torch, options.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise BackendError(f"unknown dtype {options.dtype!r} (bfloat16, float16 or float32)", kind="config")
        engine = Engine.from_pretrained(
            path, options.device, dtype, options.quant, experts_on_cpu=options.experts_on_cpu, progress=progress
        )
        return cls(engine, Tokenizer.from_dir(path), info, thinking=declares_thinking(path), top_p=options.top_p, seed=options.seed)

    async def aclose(self) -> None:
        return None

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """Generation runs on a worker thread so the event loop (the TUI, ACP) stays live;
        closing the stream early stops it at the next token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        done = object()

        def post(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the consumer's loop has closed: nobody is listening
                cancel.set()

        def work() -> None:
            try:
                with self._lock:
                    for event in self.generate_events(request, cancel):
                        post(event)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                post(exc)
            finally:
                post(done)

        threading.Thread(target=work, name="k2-generate", daemon=True).start()
        try:
            while (item := await queue.get()) is not done:
                if isinstance(item, BackendError):
                    raise item
                if isinstance(item, BaseException):
                    raise BackendError(f"the local engine failed: {item}") from item
                yield item
        finally:
            cancel.set()

    # ------------------------------------------------------------ generation (worker thread)

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        segments = render_segments(request.messages, request.tools or None, add_generation_prompt=True, thinking=self.thinking)
        return self.tokenizer.encode_segments(segments)

    def generate_events(self, request: ChatRequest, cancel: threading.Event | None = None) -> Iterator[ChatEvent]:
        names = [tool["function"]["name"] for tool in request.tools or []]
        try:
            ToolCallGuard(request.tools or [])  # a name the guard cannot express fails now, not mid-reply
        except ValueError as exc:
            raise BackendError(f"cannot guard tool calls: {exc}") from exc
        ids = self.prompt_ids(request)
        context = self.info.context_window
        if len(ids) >= context:
            raise BackendError(f"the conversation is {len(ids)} tokens; the model's context is {context}", kind="context")
        budget = min(request.max_tokens or self.info.max_output, context - len(ids))
        temperature = self.info.temperature if request.temperature is None else request.temperature
        try:
            logits, reused = self.engine.prefill(ids, cancel.is_set if cancel else None)
        except PrefillStopped:  # the reader has gone: free the engine for the next request now
            return
        generator = make_generator(self.seed, logits.device)
        openers = {self.tokenizer.id_of(TOOL_SECTION_BEGIN), self.tokenizer.id_of(TOOL_CALL_BEGIN)}
        parser, decoder = StreamParser(text_markers=False), self.tokenizer.stream_decoder()
        guard: _GuardedSection | None = None
        forced: list[int] = []
        produced, called, reason = 0, False, "length"
        next_call_index = _calls_in(request.messages)  # K2 numbers calls across the conversation
        reserve = self.closing_reserve(request.tools or [], next_call_index)
        while produced < budget and not (cancel and cancel.is_set()):
            if self.logit_bias:
                logits = _biased(logits, self.logit_bias)
            left = budget - produced
            if guard is None and (left <= reserve or not names):  # no tools: no tool section
                logits = _biased(logits, dict.fromkeys(openers, float("-inf")))
            elif guard is not None and not forced and left <= 4 * reserve:
                closing = guard.closing_tokens()
                if len(closing) + CLOSING_MARGIN >= left:
                    forced = closing
            if forced:
                token = forced.pop(0)
            elif guard is not None:
                token, forced = guard.choose(logits, temperature, generator)
            else:
                token = sample(logits, temperature, self.top_p, generator)
            produced += 1
            if guard is None and token in self.tokenizer.stop_ids:
                reason = "tool_calls" if called else "stop"
                break
            if guard is not None:
                guard.advance(token)
                if guard.done:
                    next_call_index += len(guard.guard.calls)
                    guard = None
            elif token in openers:
                guard = _GuardedSection(self, ToolCallGuard(request.tools or [], first_index=next_call_index))
                if token != self.tokenizer.id_of(TOOL_SECTION_BEGIN):
                    guard.advance(token)  # the model skipped the section token: the call opens it
            for piece in decoder.feed(token):
                for event in parser.feed(piece):
                    called = called or isinstance(event, ToolCallDone)
                    yield event
            if produced < budget:
                logits = self.engine.step(token)
        for piece in [decoder.finish()]:
            for event in parser.feed(piece):
                called = called or isinstance(event, ToolCallDone)
                yield event
        for event in parser.finish():
            called = called or isinstance(event, ToolCallDone)
            yield event
        if reason == "length" and cancel is not None and cancel.is_set():
            reason = "other"
        yield Usage(prompt_tokens=len(ids), completion_tokens=produced, cached_tokens=reused)
        yield Finish("tool_calls" if called and reason != "length" else reason)  # type: ignore[arg-type]

    def closing_reserve(self, tools: list[dict[str, Any]], first_index: int) -> int:
        """Tokens to keep for a section opened now to end with a whole, valid call: the
        longest forced call over the declared tools (their required keys included)."""
        longest = 0
        for tool in tools:
            fresh = _GuardedSection(self, ToolCallGuard([tool], first_index=first_index))
            longest = max(longest, 1 + len(fresh.closing_tokens()))  # + the section begin token
        return max(CLOSING_RESERVE, longest + CLOSING_MARGIN)

    def token_bytes(self, token: int) -> bytes:
        cached = self._token_bytes.get(token)
        if cached is None:
            cached = self._token_bytes[token] = self.tokenizer.token_bytes(token)
        return cached


class _GuardedSection:
    """Token-level driver of a ToolCallGuard: which candidate tokens keep the section valid."""

    def __init__(self, backend: LocalBackend, guard: ToolCallGuard):
        self.backend, self.guard = backend, guard
        self.utf8_tail = b""  # bytes of a character that later tokens complete

    @property
    def done(self) -> bool:
        return self.guard.done

    def _text(self, token: int, lenient: bool = False) -> tuple[str, bool, bytes] | None:
        """(text, is_special, leftover bytes) the token adds, or None if its bytes are not
        UTF-8. `lenient`: a forced token cut a character short; the guard sees U+FFFD."""
        tokenizer = self.backend.tokenizer
        if tokenizer.is_special(token):
            return tokenizer.name_of(token), True, b""
        raw = self.utf8_tail + self.backend.token_bytes(token)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            text = decoder.decode(raw, final=False)
        except UnicodeDecodeError:
            return (raw.decode("utf-8", errors="replace"), False, b"") if lenient else None
        return text, False, decoder.getstate()[0]

    def allows(self, token: int) -> bool:
        piece = self._text(token)
        if piece is None:
            return False
        text, special, tail = piece
        if not self.guard.allows(text, special=special):
            return False
        # An unfinished character is allowed only where any character would be (inside a
        # free string), so forcing can always finish it with bytes of its own choosing.
        return not tail or all(self.guard.allows(text + probe) for probe in _PROBE_CHARACTERS)

    def advance(self, token: int) -> None:
        piece = self._text(token, lenient=True)
        assert piece is not None
        text, special, self.utf8_tail = piece
        self.guard.advance(text, special=special)

    def choose(self, logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> tuple[int, list[int]]:
        """(token, tokens to force after it). The likeliest allowed candidates are
        sampled as usual; when none is allowed, the guard's forced text is emitted."""
        top = torch.topk(logits, min(GUARD_CANDIDATES, logits.shape[-1]))
        allowed = [i for i, token in enumerate(top.indices.tolist()) if self.allows(token)]
        if allowed:
            values = top.values[allowed]
            pick = sample(values, temperature, 1.0, generator)
            return int(top.indices[allowed[pick]]), []
        tokens = self.forced_tokens()
        return tokens[0], tokens[1:]

    def forced_tokens(self) -> list[int]:
        tokenizer = self.backend.tokenizer
        if self.utf8_tail:  # first finish the pending character, one byte token at a time
            return [tokenizer.byte_token(b) for b in _completing_bytes(self.utf8_tail)]
        text, special = self.guard.forced_text()
        return [tokenizer.id_of(text)] if special else tokenizer.encode(text)

    def closing_tokens(self) -> list[int]:
        """Every token that closes the section from here (at most a handful of steps)."""
        tokens: list[int] = []
        shadow = _GuardedSection(self.backend, copy.deepcopy(self.guard))
        shadow.utf8_tail = self.utf8_tail
        while not shadow.done:
            step = shadow.forced_tokens()
            for token in step:
                shadow.advance(token)
            tokens += step
        return tokens


_PROBE_CHARACTERS = ("\u00e9", "\u4e2d")  # two unlike characters: both fit only a free string


def _completing_bytes(tail: bytes) -> bytes:
    """Continuation bytes that turn `tail` (the start of a UTF-8 character) into a valid one."""
    for second in (0x80, 0xA0, 0x90):  # 0x80 unless the lead byte rules it out (overlong forms)
        for size in range(1, 4):
            candidate = bytes([second]) + b"\x80" * (size - 1)
            try:
                (tail + candidate).decode("utf-8")
            except UnicodeDecodeError:
                continue
            return candidate
    raise ValueError(f"{tail!r} does not begin a UTF-8 character")


def _biased(logits: torch.Tensor, bias: dict[int, float]) -> torch.Tensor:
    logits = logits.clone()
    for token, value in bias.items():
        logits[token] += value
    return logits


def _calls_in(messages: list[dict[str, Any]]) -> int:
    """Tool calls already in the history."""
    return sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")


def declares_thinking(path: str | Path) -> bool:
    """Thinking checkpoints (K2-Thinking, K2.5) ship a chat template that writes `<think>`."""
    try:
        config = json.loads((Path(path) / "tokenizer_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "<think>" in str(config.get("chat_template") or "")
