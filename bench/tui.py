"""The interactive app in a real pseudo-terminal: launch to first paint, and typing latency
while a long answer streams in (both against the fake OpenAI-compatible server).

    python bench/tui.py [--runs 10] [--streams 2]

Run it from the repository root. Each `kimicode` gets its own pty (TERM=xterm-256color,
40x120), an isolated HOME and a fresh git repository as its workspace; the bench reads the
master side continuously so the app never blocks on a full terminal buffer.

- first paint: Popen until the status bar hint `shift+tab mode` is on the pty (the first full
  frame), for `python -m kimicode` and the `kimicode` console script; `python -c "import
  textual.app"` and `kimicode --help` show where the time goes. Target: < 400 ms median.
- typing: while a 2,000-line Markdown answer streams, a `~` (absent from the answer) is typed
  every 60 ms; latency is write -> the prompt line showing that many `~`s. Only keys typed
  before the answer's last line is on screen count. Target: < 50 ms.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import random
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes import openai_server as fake  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer, Reply  # noqa: E402

ROWS, COLS = 40, 120
PAINTED = b"shift+tab mode"  # status bar hint, drawn in the first full frame
MODEL = "kimi-k2-0905-preview"
KEY = b"~"
BEGIN, END = "BEGINOFANSWER", "ENDOFANSWER"
KEY_INTERVAL = 0.060  # s between typed keys
LINE_KEYS = 80  # keys per prompt line: it holds ~115 columns, past that runs would wrap
PLACEHOLDER = b"Enter to send"  # in the empty prompt's placeholder


# -- the long answer ------------------------------------------------------------------

WORDS = ("the agent reads files edits code runs tests and reports back to the user while "
         "streaming tokens from a model over a slow network with retries caching limits "
         "budget context window tool calls approval modes plan sessions checkpoints diff").split()


def long_answer(lines: int, rng: random.Random) -> str:
    """`lines` lines of ~60 chars: headings, paragraphs, bullet lists and fenced code."""
    def sentence() -> str:
        out = ""
        while len(out) < 56:
            out += rng.choice(WORDS) + " "
        return out.strip().capitalize() + "."

    body = [f"{BEGIN}: a long answer follows, rendered as Markdown."]
    section = 0
    while len(body) < lines - 1:
        kind = rng.random()
        if kind < 0.1:
            section += 1
            body += ["", f"## Section {section}: what changed and why", ""]
        elif kind < 0.5:
            body += [sentence() for _ in range(rng.randint(3, 6))] + [""]
        elif kind < 0.85:
            body += [f"- {sentence()[:54]}" for _ in range(rng.randint(3, 6))] + [""]
        else:
            code = [f"def step_{len(body)}(value: int) -> int:", "    total = value * 2 + 1"]
            code += [f"    total += helper_{i}(total)  # keep going" for i in range(rng.randint(2, 5))]
            body += ["```python", *code, "    return total", "```", ""]
    text = "\n".join(body[: lines - 1] + [f"The last line: {END} reached."])
    assert KEY.decode() not in text
    return text


# -- a terminal -----------------------------------------------------------------------

class Terminal:
    """One process on the slave side of a pty; the master side is read into `self.output`."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.master, self.output, self.closed = master, bytearray(), False
        self.reads: list[tuple[int, float]] = []  # (output length after a read, when it was read)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)

    def pump(self, timeout: float) -> bytes:
        """Read whatever arrives within `timeout` s (returns early on data)."""
        if self.closed:
            time.sleep(max(timeout, 0))
            return b""
        readable, _, _ = select.select([self.master], [], [], max(timeout, 0))
        if not readable:
            return b""
        try:
            data = os.read(self.master, 1 << 16)
        except OSError:  # EIO: the slave side is closed, the process is gone
            data = b""
        if not data:
            self.closed = True
        self.output += data
        self.reads.append((len(self.output), time.perf_counter()))
        return data

    def seen_at(self, marker: bytes, start: int = 0) -> float | None:
        """When `marker` (first occurring at or after offset `start`) was read, or None."""
        found = self.output.find(marker, start)
        if found < 0:
            return None
        end = found + len(marker)
        return next(at for length, at in self.reads if length >= end)

    def wait_for(self, marker: bytes, start: int = 0, timeout: float = 20.0) -> float:
        """perf_counter time at which `marker` first shows in the output after offset `start`."""
        deadline = time.perf_counter() + timeout
        while marker not in self.output[max(start - len(marker), 0):]:
            if time.perf_counter() > deadline or self.closed:
                tail = bytes(self.output[-600:])
                raise TimeoutError(f"{marker!r} not on the terminal after {timeout} s; last output: {tail!r}")
            self.pump(deadline - time.perf_counter())
        return time.perf_counter()

    def drain(self, seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            self.pump(left)

    def write(self, data: bytes) -> float:
        os.write(self.master, data)
        return time.perf_counter()

    def quit(self, presses: int = 2, timeout: float = 5.0) -> float | None:
        """Ctrl+C `presses` times, 50 ms apart (the first one interrupts a turn or clears a
        non-empty prompt); seconds from the last press to exit, None if it had to be killed."""
        for _ in range(presses - 1):
            self.write(b"\x03")
            self.drain(0.05)
        sent = self.write(b"\x03")
        deadline = sent + timeout
        while self.proc.poll() is None and time.perf_counter() < deadline:
            self.pump(0.02)
        return time.perf_counter() - sent if self.proc.poll() is not None else None

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        os.close(self.master)


# -- environment ----------------------------------------------------------------------

def make_workspace(tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / ".kimicode").mkdir(parents=True)
    (repo / ".kimicode" / "config.toml").write_text("auto_test = false\nrepo_map = false\n")
    (repo / "app.py").write_text("VALUE = 1\n")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True)
    return repo


def app_env(server: FakeOpenAIServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMICODE_", "MOONSHOT_", "OPENROUTER_", "OPENAI_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS),
               KIMICODE_PROVIDER="custom", KIMICODE_BASE_URL=server.base_url, KIMICODE_MODEL=MODEL)
    env.pop("NO_COLOR", None)
    # As users run it: bytecode is cached (the warm-up run writes what is missing), so each
    # launch does not recompile every module from source.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


# -- measurements ---------------------------------------------------------------------

def first_paint(command: list[str], repo: Path, env: dict[str, str]) -> tuple[float, float | None]:
    """(ms from Popen to the first full frame, s from Ctrl+C to exit or None if it had to be killed)."""
    term = Terminal(command, repo, env)
    try:
        painted = term.wait_for(PAINTED)
        term.wait_for(MODEL.encode())  # let the agent connect, so quitting also closes it
        return (painted - term.started) * 1e3, term.quit()
    finally:
        term.close()


BARE_APP = f"""
from textual.app import App
from textual.widgets import Static

class Bare(App):
    def compose(self):
        yield Static({PAINTED.decode()!r})

Bare().run()
"""


def bare_textual_paint(script: Path, repo: Path, env: dict[str, str]) -> float:
    """ms to the first frame of a one-widget Textual app: the floor any Textual app starts from."""
    term = Terminal([sys.executable, str(script)], repo, env)
    try:
        return (term.wait_for(PAINTED) - term.started) * 1e3
    finally:
        term.close()


def ctrl_d_quits(command: list[str], repo: Path, env: dict[str, str]) -> bool:
    """Does Ctrl+D on an empty prompt end the app (its binding says so)?"""
    term = Terminal(command, repo, env)
    try:
        term.wait_for(MODEL.encode())
        term.write(b"\x04")
        deadline = time.perf_counter() + 2.0
        while term.proc.poll() is None and time.perf_counter() < deadline:
            term.pump(0.02)
        return term.proc.poll() is not None
    finally:
        term.close()


def plain_ms(command: list[str], runs: int, env: dict[str, str], cwd: Path) -> list[float]:
    subprocess.run(command, capture_output=True, env=env, cwd=cwd, check=True)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, env=env, cwd=cwd, check=True)
        times.append((time.perf_counter() - started) * 1e3)
    return times


class Stream:
    """What one streamed answer looked like from the keyboard."""

    def __init__(self) -> None:
        self.idle: list[float] = []  # ms, keys typed before the prompt was sent: the floor
        self.during: list[float] = []  # ms, keys typed before the answer's last line was on screen
        self.during_at: list[float] = []  # s after the answer began showing, per `during` sample
        self.after: list[float] = []
        self.missed = 0  # keys whose `~` never showed
        self.render_s = self.sent_s = self.duration_s = 0.0


def type_keys(term: Terminal, max_keys: int, stop: bytes | None = None, timeout: float = 180.0,
              ) -> tuple[list[float], list[float | None], float | None]:
    """Type KEY every KEY_INTERVAL s, `max_keys` times or, with `stop`, until it shows on the terminal.

    The prompt holds only our keys, so after the k-th key the terminal shows a run of k KEYs
    once the app has handled it; a repaint of an older state (cursor blink) shows a shorter
    run and cannot count. Every LINE_KEYS keys the prompt is emptied (Ctrl+U) and typing
    resumes once the placeholder is back, so runs never wrap. Returns (write times, when
    each key first showed or None, when `stop` showed or None)."""
    typed: list[float] = []
    shown: list[float | None] = []
    stopped: float | None = None
    runs = re.compile(re.escape(KEY) + b"+")
    deadline = time.perf_counter() + timeout
    floor = scan_from = len(term.output)

    def watch(scan_from: int, base: int) -> int:
        """Account for the output read since `scan_from`; keys before `base` are done."""
        nonlocal stopped
        at = time.perf_counter()
        window = term.output[max(scan_from - 256, floor):]
        longest = max((len(m) for m in runs.findall(window)), default=0)
        while len(shown) < min(base + longest, len(typed)):
            shown.append(at)
        if stop is not None and stopped is None:
            stopped = term.seen_at(stop, max(scan_from - len(stop), start))
        return len(term.output)

    start = len(term.output)
    while stopped is None and len(typed) < max_keys and time.perf_counter() < deadline:
        base = len(typed)  # a new line of keys, on an empty prompt
        floor = scan_from = len(term.output)
        while stopped is None and len(typed) < min(max_keys, base + LINE_KEYS):
            due = typed[-1] + KEY_INTERVAL if typed else 0.0
            if time.perf_counter() >= due:
                typed.append(term.write(KEY))
            elif term.pump(due - time.perf_counter()):
                scan_from = watch(scan_from, base)
            elif term.closed:
                raise RuntimeError("kimicode exited while typing")
        settle = time.perf_counter() + 3.0  # let this line's keys show
        while len(shown) < len(typed) and time.perf_counter() < settle and not term.closed:
            if term.pump(settle - time.perf_counter()):
                scan_from = watch(scan_from, base)
        shown += [None] * (len(typed) - len(shown))  # never showed
        if stopped is None and len(typed) < max_keys:
            mark = term.output.rfind(KEY)
            term.write(b"\x15")  # Ctrl+U: delete to the start of the line
            term.wait_for(PLACEHOLDER, mark + 1)
            if stop is not None:
                stopped = term.seen_at(stop, max(scan_from - len(stop), start))
            scan_from = len(term.output)
    while stop is not None and stopped is None and time.perf_counter() < deadline:
        if term.pump(deadline - time.perf_counter()):
            scan_from = watch(scan_from, len(typed))
        elif term.closed:
            raise RuntimeError("kimicode exited while typing")
    return typed, shown, stopped


def typing_while_streaming(server: FakeOpenAIServer, answer: str, chunk: int, delay: float,
                           command: list[str], repo: Path, env: dict[str, str], sent: list[float]) -> Stream:
    server.script(Reply(text=answer, chunk_size=chunk, delay=delay))
    result = Stream()
    term = Terminal(command, repo, env)
    try:
        term.wait_for(MODEL.encode())  # connected
        typed, shown, _ = type_keys(term, 20)  # idle: what the measurement itself costs
        result.idle = [(seen - written) * 1e3 for written, seen in zip(typed, shown) if seen is not None]
        mark = term.output.rfind(KEY)
        term.write(b"\x15")  # Ctrl+U: empty the prompt again
        term.wait_for(PLACEHOLDER, mark + 1)
        mark = len(term.output)
        entered = term.write(b"write the long report\r")
        # The turn has started once the status bar says how to interrupt it (the answer's first
        # line may scroll past before a frame shows it when the answer streams in fast).
        started = term.wait_for(b"esc to interrupt", mark)
        typed, shown, ended = type_keys(term, 10**6, stop=END.encode())
        if ended is None:
            raise TimeoutError(f"{END} never showed on the terminal")
        for written, seen in zip(typed, shown):
            if seen is None:
                result.missed += 1
            elif written < ended:
                result.during.append((seen - written) * 1e3)
                result.during_at.append(written - started)
            else:
                result.after.append((seen - written) * 1e3)
        result.render_s = ended - entered
        result.duration_s = ended - started
        result.sent_s = (sent[-1] - entered) if sent and sent[-1] > entered else float("nan")
        term.quit(presses=3)
        return result
    finally:
        term.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="launches per first-paint variant")
    parser.add_argument("--streams", type=int, default=2, help="streamed answers to type over")
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--chunk", type=int, default=40)
    parser.add_argument("--delay", type=float, default=0.002)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip() or "?"
    answer = long_answer(args.lines, random.Random(0))
    module = [sys.executable, "-m", "kimicode"]
    script = Path(sys.executable).with_name("kimicode")
    variants = {"python -m kimicode": module}
    if script.exists():
        variants["kimicode (console script)"] = [str(script)]

    sent: list[float] = []  # when the fake server finished writing each streamed reply
    stream_reply = fake._Handler._stream

    def timed_stream(self, *a, **k):
        try:
            return stream_reply(self, *a, **k)
        finally:
            sent.append(time.perf_counter())

    fake._Handler._stream = timed_stream
    rows: list[tuple[str, str, str, str, str]] = []
    notes: list[str] = []
    with FakeOpenAIServer() as server, tempfile.TemporaryDirectory() as tmp:
        repo, env = make_workspace(Path(tmp)), app_env(server, Path(tmp) / "home")
        first_paint(module, repo, env)  # warm-up: file cache, bytecode, first-run dirs
        for name, command in variants.items():
            paints, quits = [], []
            for _ in range(args.runs):
                painted, quit_s = first_paint(command, repo, env)
                paints.append(painted)
                quits.append(quit_s)
            rows.append((f"first paint, {name} (ms)", f"{statistics.median(paints):.0f}", f"{min(paints):.0f}",
                         f"{max(paints):.0f}", "< 400"))
            exited = [q * 1e3 for q in quits if q is not None]
            if exited:
                rows.append((f"  Ctrl+C Ctrl+C -> exit, {name} (ms)", f"{statistics.median(exited):.0f}",
                             f"{min(exited):.0f}", f"{max(exited):.0f}", ""))
            if len(exited) < len(quits):
                notes.append(f"{name}: {len(quits) - len(exited)} of {len(quits)} runs did not exit on Ctrl+C; killed")
        bare = Path(tmp) / "bare_app.py"
        bare.write_text(BARE_APP)
        bare_textual_paint(bare, repo, env)  # warm-up
        paints = [bare_textual_paint(bare, repo, env) for _ in range(args.runs)]
        rows.append(("  context: first paint, one-widget Textual app (ms)", f"{statistics.median(paints):.0f}",
                     f"{min(paints):.0f}", f"{max(paints):.0f}", ""))
        for name, command in (("python -c 'import textual.app'", [sys.executable, "-c", "import textual.app"]),
                              ("python -m kimicode --help", [*module, "--help"])):
            times = plain_ms(command, args.runs, env, repo)
            rows.append((f"  context: {name} (ms)", f"{statistics.median(times):.0f}", f"{min(times):.0f}",
                         f"{max(times):.0f}", ""))
        if not ctrl_d_quits(module, repo, env):
            notes.append("Ctrl+D on an empty prompt did not quit within 2 s (the app binds it to quit)")

        typing_while_streaming(server, long_answer(200, random.Random(1)), args.chunk, args.delay,
                               module, repo, env, sent)  # warm-up
        streams = [typing_while_streaming(server, answer, args.chunk, args.delay, module, repo, env, sent)
                   for _ in range(args.streams)]
    idle = [ms for s in streams for ms in s.idle]
    during = [ms for s in streams for ms in s.during]
    after = [ms for s in streams for ms in s.after]
    missed = sum(s.missed for s in streams)
    rows.append(("typing latency during stream (ms)", f"{statistics.median(during):.1f}" if during else "-",
                 f"{pct(during, 0.95):.1f}", f"{max(during, default=float('nan')):.1f}", "< 50"))
    rows.append(("  typing latency, idle prompt (ms)", f"{statistics.median(idle):.1f}" if idle else "-",
                 f"{pct(idle, 0.95):.1f}", f"{max(idle, default=float('nan')):.1f}", ""))
    renders = [s.render_s for s in streams]
    rows.append(("  Enter -> last line on screen (s)", f"{statistics.median(renders):.2f}", f"{min(renders):.2f}",
                 f"{max(renders):.2f}", ""))
    sends = [s.sent_s for s in streams]
    rows.append(("  Enter -> server done sending (s)", f"{statistics.median(sends):.2f}", f"{min(sends):.2f}",
                 f"{max(sends):.2f}", ""))
    samples = (f"typing samples: {len(during)} during the stream, {len(after)} after it (not counted), "
               f"{missed} never shown; streams on screen for "
               + ", ".join(f"{s.duration_s:.1f}" for s in streams) + " s")
    thirds: list[list[float]] = [[], [], []]  # does typing get slower as the answer grows?
    for s in streams:
        for ms, at in zip(s.during, s.during_at):
            thirds[min(2, int(3 * at / s.duration_s))].append(ms)
    samples += "; median per third of the stream: " + " / ".join(
        f"{statistics.median(t):.0f}" if t else "-" for t in thirds) + " ms"
    if len(during) < 40:
        notes.append(f"only {len(during)} samples during the stream (want >= 40): raise --lines or --delay")

    header = ("metric", "median", "p95/min", "max", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print("(first paint and context rows: min in the p95/min column; typing rows: p95)")
    print(samples)
    print(f"answer: {args.lines} lines, {len(answer):,} chars, chunks of {args.chunk} every {args.delay * 1e3:g} ms; "
          f"keys every {KEY_INTERVAL * 1e3:.0f} ms; terminal {COLS}x{ROWS} TERM=xterm-256color")
    for note in notes:
        print(f"note: {note}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {load}, commit {commit}, {args.runs} launches per variant, {args.streams} streams")


if __name__ == "__main__":
    main()
