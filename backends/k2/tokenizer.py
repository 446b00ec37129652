"""The K2 tokenizer: tiktoken BPE over `tiktoken.model`, 256 special ids after it.

Plain text is always encoded as text: a special-token string inside a file or a
tool result becomes ordinary tokens. Only `Special` pieces from
`chat.render_segments` become special ids.
"""

from __future__ import annotations

import base64
import codecs
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kimicode.backends.k2.chat import Special

NUM_SPECIAL_SLOTS = 256

# K2's pre-tokenizer, one alternative per line. Letter classes exclude Han, which is
# split into runs of its own (`&&` is class intersection; tiktoken's regex has it).
_NOT_HAN_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]"
_NOT_HAN_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]"
_CONTRACTION = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
_ONE_SYMBOL = r"[^\r\n\p{L}\p{N}]?"
PRETOKENIZE_PATTERN = "|".join([
    r"[\p{Han}]+",
    _ONE_SYMBOL + _NOT_HAN_UPPER + "*" + _NOT_HAN_LOWER + "+" + _CONTRACTION,  # "Hello", " world's"
    _ONE_SYMBOL + _NOT_HAN_UPPER + "+" + _NOT_HAN_LOWER + "*" + _CONTRACTION,  # "HTTP", " THEY'RE"
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])


class Tokenizer:
    def __init__(self, ranks: dict[bytes, int], special_names: dict[int, str]):
        import tiktoken  # the engine extra; the rest of kimicode never needs it

        self.num_base_tokens = len(ranks)
        self.vocab_size = self.num_base_tokens + NUM_SPECIAL_SLOTS
        self.special_ids = {
            special_names.get(i, f"<|reserved_token_{i}|>"): i
            for i in range(self.num_base_tokens, self.vocab_size)
        }
        if len(self.special_ids) != NUM_SPECIAL_SLOTS:
            raise ValueError("tokenizer_config.json names two special ids alike")
        self._special_names = {i: name for name, i in self.special_ids.items()}
        self._encoding = tiktoken.Encoding(
            "kimi-k2", pat_str=PRETOKENIZE_PATTERN, mergeable_ranks=ranks, special_tokens=self.special_ids
        )
        self.bos_id = self.id_of("[BOS]")
        self.eos_id = self.id_of("[EOS]")
        self.im_end_id = self.id_of("<|im_end|>")
        self.stop_ids = frozenset({self.im_end_id, self.eos_id})

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load `tiktoken.model` and `tokenizer_config.json` from a checkpoint folder."""
        folder = Path(path)
        ranks = _read_ranks(folder / "tiktoken.model")
        return cls(ranks, _read_special_names(folder / "tokenizer_config.json", len(ranks)))

    def id_of(self, special_name: str) -> int:
        try:
            return self.special_ids[special_name]
        except KeyError:
            raise ValueError(f"unknown special token {special_name!r}") from None

    def is_special(self, token_id: int) -> bool:
        return self.num_base_tokens <= token_id < self.vocab_size

    def name_of(self, special_id: int) -> str:
        """The name of a special id, e.g. 163586 -> "<|im_end|>"."""
        if not self.is_special(special_id):
            raise ValueError(f"token id {special_id} is not a special id")
        return self._special_names[special_id]

    def byte_token(self, value: int) -> int:
        """The id of the single byte `value` (byte-level BPE has one for each of the 256)."""
        return self._encoding.encode_single_token(bytes([value]))

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes_of([token_id])

    def encode(self, text: str) -> list[int]:
        """Plain text only: special-token strings inside it become ordinary tokens."""
        return self._encoding.encode_ordinary(text)

    def encode_segments(self, pieces: Iterable[str]) -> list[int]:
        """`chat.render_segments` output: Special pieces -> their ids, the rest as text."""
        ids: list[int] = []
        for piece in pieces:
            if isinstance(piece, Special):
                ids.append(self.id_of(piece))
            else:
                ids += self.encode(piece)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special ids decode to their names; broken UTF-8 becomes U+FFFD."""
        return self._bytes_of(ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    def _bytes_of(self, ids: Iterable[int]) -> bytes:
        ids = list(ids)
        for token_id in ids:
            self._check(token_id)
        return self._encoding.decode_bytes(ids)

    def _check(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")


class StreamDecoder:
    """Decodes ids one at a time for streaming, never splitting a UTF-8 character:
    bytes of an unfinished character wait for the tokens that complete it."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: int | Iterable[int]) -> list[str]:
        """New pieces: plain text, and a `Special` for each special id (feed them to
        `chat.StreamParser(text_markers=False)`, or join them for plain text)."""
        pieces: list[str] = []
        for token_id in [ids] if isinstance(ids, int) else ids:
            if self._tokenizer.is_special(token_id):
                pieces += [self.finish(), Special(self._tokenizer.name_of(token_id))]
            else:
                pieces.append(self._utf8.decode(self._tokenizer.token_bytes(token_id)))
        return _merge_text(pieces)

    def finish(self) -> str:
        """Whatever is held back; an unfinished character becomes U+FFFD."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text


def _merge_text(pieces: list[str]) -> list[str]:
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, Special):
            out.append(piece)
        elif piece and out and not isinstance(out[-1], Special):
            out[-1] += piece
        elif piece:
            out.append(piece)
    return out


def _read_ranks(path: Path) -> dict[bytes, int]:
    # Parsed here rather than by tiktoken.load.load_tiktoken_bpe: that one keeps a
    # copy in a temp cache keyed by the path and would keep serving it after the
    # file at that path is replaced.
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer vocabulary not found: {path}")
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: expected 'base64-token rank', got {line[:80]!r}") from exc
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks must be 0..{len(ranks) - 1}, each once")
    return ranks


def _read_special_names(path: Path, num_base_tokens: int) -> dict[int, str]:
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer config not found: {path}")
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON: {exc}") from exc
    names = {}
    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        token_id = int(key)
        if not num_base_tokens <= token_id < num_base_tokens + NUM_SPECIAL_SLOTS:
            raise ValueError(
                f"{path}: special id {token_id} ({entry.get('content')!r}) is outside the special range "
                f"{num_base_tokens}..{num_base_tokens + NUM_SPECIAL_SLOTS - 1}; does tiktoken.model match?"
            )
        names[token_id] = entry["content"]
    return names
