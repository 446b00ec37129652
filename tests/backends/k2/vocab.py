"""A small tokenizer folder in K2's file format, for tests that cannot have the real one.

The vocabulary is a tiny byte-level BPE trained here, deterministically, on a
short corpus of English, Python, JSON and a little Chinese: all 256 bytes are
ranks 0..255, each learned merge takes the next rank, so every token can be
reached by merging (what tiktoken needs).
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

NUM_MERGES = 300

# Special names at their offsets from the first special id, as in the real K2 config.
K2_SPECIAL_OFFSETS = {
    "[BOS]": 0,
    "[EOS]": 1,
    "<|im_end|>": 2,
    "<|im_user|>": 3,
    "<|im_assistant|>": 4,
    "<|start_header_id|>": 6,
    "<|end_header_id|>": 7,
    "[EOT]": 9,
    "<|im_system|>": 10,
    "<|tool_calls_section_begin|>": 11,
    "<|tool_calls_section_end|>": 12,
    "<|tool_call_begin|>": 13,
    "<|tool_call_argument_begin|>": 14,
    "<|tool_call_end|>": 15,
    "<|im_middle|>": 17,
    "<think>": 22,
    "</think>": 23,
    "[UNK]": 254,
    "[PAD]": 255,
}

CORPUS = """\
You are Kimi, an AI assistant created by Moonshot AI. The user asks the assistant
to read the file and then to fix the failing test. The assistant reads the file,
runs the tests, and returns the result of the tool call to the user.
system user assistant tool tool_declare functions Return of
def read_file(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()

class Config:
    def __init__(self, name: str, value: int = 0) -> None:
        self.name = name
        self.value = value

for index, line in enumerate(lines):
    if line.startswith("import ") or line.startswith("from "):
        print(index, line)
{"path": "src/main.py", "pattern": "def ", "command": "pytest -q", "content": "hello"}
{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
中文 你好，世界。 这是一个测试。 中文 中文
The quick brown fox jumps over the lazy dog. It's what they're doing, isn't it?
"""


def write_tokenizer_dir(path: str | Path, extra_texts: Iterable[str] = ()) -> int:
    """Write `tiktoken.model` and `tokenizer_config.json` into `path`; return the
    number of base tokens (the first special id)."""
    return write_vocab(path, train_bpe([CORPUS, *extra_texts], NUM_MERGES))


def write_vocab(path: str | Path, tokens: list[bytes]) -> int:
    """Write `tokens` (in rank order) and the K2 special names after them."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "tiktoken.model", "wb") as out:
        for rank, token in enumerate(tokens):
            out.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
    base = len(tokens)
    decoder = {
        str(base + offset): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
        for name, offset in K2_SPECIAL_OFFSETS.items()
    }
    config = {"added_tokens_decoder": decoder, "bos_token": "[BOS]", "eos_token": "[EOS]"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return base


def train_bpe(texts: Iterable[str], num_merges: int) -> list[bytes]:
    """Tokens in rank order: the 256 bytes, then up to `num_merges` learned merges."""
    words: Counter[tuple[bytes, ...]] = Counter()
    for text in texts:
        for word in re.findall(r" ?\w+| ?[^\w\s]+|\s+", text):  # merges never cross words
            words[tuple(bytes([b]) for b in word.encode("utf-8"))] += 1
    tokens = [bytes([b]) for b in range(256)]
    known = set(tokens)
    for _ in range(num_merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        # Most frequent pair; ties go to the smaller bytes so the result is stable.
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        if pairs[best] < 2:
            break
        merged = best[0] + best[1]
        if merged not in known:
            known.add(merged)
            tokens.append(merged)
        words = Counter({_merge(word, best, merged): count for word, count in words.items()})
    return tokens


def _merge(word: tuple[bytes, ...], pair: tuple[bytes, bytes], merged: bytes) -> tuple[bytes, ...]:
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
