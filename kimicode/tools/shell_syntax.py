"""Find every simple command a bash script would run.

The approval policy matches rules such as "allow `git status`" against single
commands, so it must see *all* of them: `git status; rm -rf ~` and
`git status $(curl x | sh)` each hide a second command. `split_commands` is a
small recursive-descent parser for the bash that coding agents write: lists,
pipelines, subshells, groups, `if`/`for`/`while`/`case`, functions, `[[ ]]`,
`(( ))`, quoting, command and process substitution and here-documents. It then
looks through commands that run other commands (`bash -c`, `eval`, `env`,
`sudo`, `xargs`, `find -exec`, ...).

It fails closed: whatever it cannot analyse with confidence raises
`ShellSyntaxError`, which callers treat as "needs explicit approval".
Words get quote removal and brace expansion (`{a,b}` is two words); other
expansions (`$HOME`, `${x}`, `$(...)`, globs, `~`) stay literal, except that
an empty `$()` or `<()` vanishes as it does in bash.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = [
    "Redirect",
    "ShellSyntaxError",
    "SimpleCommand",
    "command_name",
    "inner_commands",
    "shell_input",
    "split_commands",
]

# Nesting deeper than this (subshells, loops, $( $( ... ) ), bash -c "...")
# is refused rather than risking Python's recursion limit.
_MAX_DEPTH = 40


class ShellSyntaxError(ValueError):
    """The script uses syntax that cannot be analysed with confidence."""


@dataclass(frozen=True, slots=True)
class Redirect:
    op: str  # operator with any fd prefix: ">", "2>>", "2>&", "<<", "<<<", ...
    target: str  # after quote removal; the delimiter word for here-documents


@dataclass(frozen=True, slots=True)
class SimpleCommand:
    # After quote removal, leading VAR=value assignments dropped. Empty for a
    # bare redirection (`> file`), redirections on a compound command, or a
    # bare assignment (`PATH=x`, which changes how later commands run).
    words: tuple[str, ...]
    redirects: tuple[Redirect, ...] = ()
    # The dropped assignments, for risk checks (`PATH=. git status`); left out
    # of equality so that commands compare by what they run.
    assignments: tuple[str, ...] = field(default=(), compare=False)


def split_commands(script: str) -> list[SimpleCommand]:
    """Every simple command `script` may run, in source order.

    A command comes before the commands of substitutions in its words, and
    before the commands it runs itself (see `inner_commands`).
    """
    result: list[SimpleCommand] = []
    try:
        for command in _Parser(script).parse():
            result.append(command)
            result.extend(inner_commands(command))
    except RecursionError:  # a last resort; the depth limits should come first
        raise ShellSyntaxError("commands are nested too deeply to analyse") from None
    return result


def inner_commands(command: SimpleCommand, *, recursive: bool = True) -> list[SimpleCommand]:
    """Commands that `command` itself runs: the command after a wrapper such as
    `env`/`sudo`/`xargs`, `find -exec` commands, and the script of `bash -c`
    or `eval` -- each followed by its own inner commands unless `recursive`
    is false."""
    return _inner(command, depth=1, recursive=recursive)


def command_name(command: SimpleCommand) -> str:
    """The program name without its directory: `/usr/bin/git` -> `git`."""
    return command.words[0].rsplit("/", 1)[-1] if command.words else ""


# --------------------------------------------------------------------------
# Tokens

_META = frozenset(" \t\n;&|<>()")
_BLANKS = " \t"
# Longest first, so that ";;&" wins over ";;" and ";".
_OPERATORS = sorted(
    ";;& ;; ;& ; && &>> &> & || |& | <<< <<- << <> <& < >> >& >| > ( )".split(),
    key=len,
    reverse=True,
)
_REDIRECT_OP = re.compile(r"(?:\d+|\{[A-Za-z_]\w*\})?(?:<<<|<<-|<<|<>|<&|<|>>|>&|>\||>|&>>|&>)")
_FD_PREFIX = re.compile(r"\d+|\{[A-Za-z_]\w*\}")
_SUBSCRIPT_START = re.compile(r"[A-Za-z_]\w*\[")
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*(?:\[(?:[^][]|\[[^]]*\])*\])?\+?=")
_ANSI_C_ESCAPE = re.compile(
    r"\\(?:([abeEfnrtv\\'\"?])|([0-7]{1,3})|x([0-9a-fA-F]{1,2})|u([0-9a-fA-F]{1,4})|U([0-9a-fA-F]{1,8})|c(.))",
    re.DOTALL,
)
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n",
                   "r": "\r", "t": "\t", "v": "\v"}  # fmt: skip
_COMPOUND_STARTS = frozenset({"{", "if", "while", "until", "for", "select", "case", "[[", "function"})
_MISPLACED_WORDS = frozenset({"then", "elif", "else", "fi", "do", "done", "esac", "}", "]]"})
_CASE_ENDS = frozenset({";;", ";&", ";;&"})


@dataclass(frozen=True, slots=True)
class _Op:
    value: str  # "" marks the end of the script


_EOF = _Op("")
_NEWLINE = _Op("\n")


@dataclass(slots=True)
class _Word:
    value: str  # after quote removal
    fields: list[str]  # after brace expansion too: what it contributes to a command's words
    quoted: bool  # any quoting: `""` is still a word, a quoted heredoc delimiter stops expansion
    raw: str
    commands: list[SimpleCommand]  # from substitutions inside it


class _WordBuilder:
    """Collects a word's text, which characters are unquoted (only those take
    part in brace expansion), and the commands its substitutions run."""

    def __init__(self) -> None:
        self.chars: list[tuple[str, bool]] = []  # (character, unquoted)
        self.quoted = False
        self.commands: list[SimpleCommand] = []

    def add(self, text: str, *, unquoted: bool = False) -> None:
        self.chars += [(char, unquoted) for char in text]

    def text(self) -> str:
        return "".join(char for char, _ in self.chars)


@dataclass(slots=True)
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool
    level: int  # the $( ) nesting it was opened in


class _NotArithmetic(Exception):
    """`((` / `$((` turned out to open nested subshells instead."""


def _is_redirect(token: _Op | _Word) -> bool:
    return isinstance(token, _Op) and token != _EOF and _REDIRECT_OP.fullmatch(token.value) is not None


def _describe(token: _Op | _Word) -> str:
    if token == _EOF:
        return "end of script"
    if token == _NEWLINE:
        return "newline"
    return repr(token.value)


# --------------------------------------------------------------------------
# Parser


class _Parser:
    """Recursive descent over `text` with an on-demand lexer.

    Commands are appended to `self.out` as they complete; substitutions parse
    their contents with the same parser (they share position and pending
    here-documents) into a fresh `out` list.
    """

    def __init__(self, text: str, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise ShellSyntaxError("commands are nested too deeply to analyse")
        if "\0" in text:
            raise ShellSyntaxError("the script contains a NUL byte")
        self.text = text
        self.pos = 0
        self.depth = depth  # nesting of every kind, against runaway recursion
        self.substitution = 0  # nesting of $( ) and <( ), which here-documents may not cross
        self.out: list[SimpleCommand] = []
        self.pending: list[_Heredoc] = []
        self.lookahead: _Op | _Word | None = None

    def parse(self) -> list[SimpleCommand]:
        self._parse_list(frozenset())
        token = self._peek()
        if token != _EOF:
            raise ShellSyntaxError(f"unexpected {_describe(token)}")
        if self.pending:
            raise ShellSyntaxError(f"unterminated here-document (no line {self.pending[0].delimiter!r})")
        return self.out

    # ---- token stream

    def _peek(self) -> _Op | _Word:
        if self.lookahead is None:
            self.lookahead = self._lex()
        return self.lookahead

    def _next(self) -> _Op | _Word:
        token = self._peek()
        self.lookahead = None
        if token == _NEWLINE and self.pending:
            self._read_heredocs()
        return token

    def _skip_newlines(self) -> None:
        while self._peek() == _NEWLINE:
            self._next()

    def _is_op(self, token: _Op | _Word, *values: str) -> bool:
        return isinstance(token, _Op) and token != _EOF and token.value in values

    def _is_keyword(self, token: _Op | _Word, *values: str) -> bool:
        # Only the bare word is a keyword: not `\if`, `"if"` or `$()if`.
        return isinstance(token, _Word) and token.raw in values

    def _expect_keyword(self, keyword: str, construct: str) -> None:
        token = self._next()
        if not self._is_keyword(token, keyword):
            raise ShellSyntaxError(f"expected {keyword!r} in {construct}, found {_describe(token)}")

    def _expect_op(self, op: str, construct: str) -> None:
        token = self._next()
        if not self._is_op(token, op):
            raise ShellSyntaxError(f"expected {op!r} to close {construct}, found {_describe(token)}")

    # ---- grammar

    def _parse_list(self, stops: frozenset[str]) -> None:
        """Pipelines joined by ;, &, &&, || and newlines, up to a stop token."""
        while True:
            self._skip_newlines()
            token = self._peek()
            if token == _EOF or self._is_op(token, *stops) or self._is_keyword(token, *stops):
                return
            self._parse_and_or()
            if not self._is_op(self._peek(), ";", "&", "\n"):
                return
            self._next()

    def _parse_and_or(self) -> None:
        self._parse_pipeline()
        while self._is_op(self._peek(), "&&", "||"):
            self._next()
            self._skip_newlines()
            self._parse_pipeline()

    def _parse_pipeline(self) -> None:
        if self._is_keyword(self._peek(), "!"):
            self._next()
        self._parse_command()
        while self._is_op(self._peek(), "|", "|&"):
            self._next()
            self._skip_newlines()
            self._parse_command()

    @contextmanager
    def _deeper(self) -> Iterator[None]:
        if self.depth >= _MAX_DEPTH:
            raise ShellSyntaxError("commands are nested too deeply to analyse")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def _parse_command(self) -> None:
        token = self._peek()
        if self._is_keyword(token, "coproc"):
            raise ShellSyntaxError("coproc is not supported")
        word = isinstance(token, _Word) and not self._is_keyword(token, *_MISPLACED_WORDS)
        if not (word or _is_redirect(token) or self._is_op(token, "(")):
            raise ShellSyntaxError(f"unexpected {_describe(token)}")
        with self._deeper():
            if self._is_op(token, "("):
                self._next()
                self._parse_paren_command()
                self._parse_trailing_redirects()
            elif self._is_keyword(token, *_COMPOUND_STARTS):
                self._parse_compound(token.value)
                self._parse_trailing_redirects()
            elif self._is_keyword(token, "time"):
                self._parse_time()
            else:
                self._parse_simple_command([])

    def _parse_compound(self, keyword: str) -> None:
        self._next()
        if keyword == "{":
            self._parse_list(frozenset({"}"}))
            self._expect_keyword("}", "a { } group")
        elif keyword == "if":
            self._parse_if()
        elif keyword in ("while", "until"):
            self._parse_list(frozenset({"do"}))
            self._parse_do_done(keyword)
        elif keyword in ("for", "select"):
            self._parse_for(keyword)
        elif keyword == "case":
            self._parse_case()
        elif keyword == "[[":
            self._parse_conditional()
        else:
            self._parse_function_keyword()

    def _parse_paren_command(self) -> None:
        """After `(`: an arithmetic `(( ))` or a subshell."""
        after_paren = self.pos
        if self.text.startswith("(", self.pos):
            self.pos += 1
            try:
                self.out.extend(self._scan_arithmetic())
                return
            except _NotArithmetic:
                self.pos = after_paren  # `((a); b)`: nested subshells, as bash retries
        self._parse_list(frozenset({")"}))
        self._expect_op(")", "a ( ) subshell")

    def _parse_do_done(self, construct: str) -> None:
        self._expect_keyword("do", f"a {construct} loop")
        self._parse_list(frozenset({"done"}))
        self._expect_keyword("done", f"a {construct} loop")

    def _parse_if(self) -> None:
        self._parse_list(frozenset({"then"}))
        self._expect_keyword("then", "an if")
        self._parse_list(frozenset({"elif", "else", "fi"}))
        while True:
            token = self._next()
            if self._is_keyword(token, "elif"):
                self._parse_list(frozenset({"then"}))
                self._expect_keyword("then", "an elif")
                self._parse_list(frozenset({"elif", "else", "fi"}))
            elif self._is_keyword(token, "else"):
                self._parse_list(frozenset({"fi"}))
                self._expect_keyword("fi", "an if")
                return
            elif self._is_keyword(token, "fi"):
                return
            else:
                raise ShellSyntaxError(f"expected 'fi' to close an if, found {_describe(token)}")

    def _parse_for(self, keyword: str) -> None:
        if self._is_op(self._peek(), "("):
            self._next()
            if not self.text.startswith("(", self.pos):
                raise ShellSyntaxError(f"expected a name or (( after {keyword!r}")
            self.pos += 1
            try:
                self.out.extend(self._scan_arithmetic())
            except _NotArithmetic:
                raise ShellSyntaxError(f"malformed (( )) in a {keyword} loop") from None
        else:
            name = self._next()
            if not isinstance(name, _Word):
                raise ShellSyntaxError(f"expected a variable name after {keyword!r}, found {_describe(name)}")
            self._skip_newlines()
            if self._is_keyword(self._peek(), "in"):
                self._next()
                while isinstance(self._peek(), _Word):
                    self.out.extend(self._next().commands)
        if self._is_op(self._peek(), ";"):
            self._next()
        self._skip_newlines()
        self._parse_do_done(keyword)

    def _parse_case(self) -> None:
        subject = self._next()
        if not isinstance(subject, _Word):
            raise ShellSyntaxError(f"expected a word after 'case', found {_describe(subject)}")
        self.out.extend(subject.commands)
        self._skip_newlines()
        self._expect_keyword("in", "a case")
        while True:
            self._skip_newlines()
            token = self._peek()
            if self._is_keyword(token, "esac"):
                self._next()
                return
            if token == _EOF:
                raise ShellSyntaxError("expected 'esac' to close a case")
            self._parse_case_patterns()
            self._parse_list(_CASE_ENDS | {"esac"})
            if self._is_op(self._peek(), *_CASE_ENDS):
                self._next()
            elif not self._is_keyword(self._peek(), "esac"):
                raise ShellSyntaxError(f"expected ';;' or 'esac' in a case, found {_describe(self._peek())}")

    def _parse_case_patterns(self) -> None:
        """`[(] pattern [| pattern]... )`"""
        if self._is_op(self._peek(), "("):
            self._next()
        while True:
            pattern = self._next()
            if not isinstance(pattern, _Word):
                raise ShellSyntaxError(f"expected a case pattern, found {_describe(pattern)}")
            self.out.extend(pattern.commands)
            if not self._is_op(self._peek(), "|"):
                break
            self._next()
        self._expect_op(")", "a case pattern")

    def _parse_conditional(self) -> None:
        """`[[ ... ]]` is a test, not a command; only substitutions in it run."""
        while True:
            token = self._next()
            if isinstance(token, _Word):
                self.out.extend(token.commands)
                if self._is_keyword(token, "]]"):
                    return
                if self._is_keyword(token, "=~"):
                    self._scan_regex()
            elif token == _EOF:
                raise ShellSyntaxError("expected ']]' to close [[")
            elif token.value not in ("(", ")", "&&", "||", "<", ">", "\n"):
                raise ShellSyntaxError(f"unexpected {_describe(token)} inside [[ ]]")

    def _parse_function_keyword(self) -> None:
        name = self._next()
        if not isinstance(name, _Word):
            raise ShellSyntaxError(f"expected a function name, found {_describe(name)}")
        if self._is_op(self._peek(), "("):
            self._next()
            self._expect_op(")", "a function definition")
        self._parse_function_body()

    def _parse_function_body(self) -> None:
        # A definition runs nothing yet, but its body may run later.
        self._skip_newlines()
        token = self._peek()
        if not (self._is_op(token, "(") or self._is_keyword(token, *_COMPOUND_STARTS - {"function"})):
            raise ShellSyntaxError(f"expected a function body, found {_describe(token)}")
        self._parse_command()

    def _parse_time(self) -> None:
        """`time` is a keyword that may time a compound command; before a
        simple command it is kept as a word, like the other wrappers."""
        words = [self._next().value]
        if self._is_keyword(self._peek(), "-p"):
            words.append(self._next().value)
        if self._is_keyword(self._peek(), "!"):
            self._next()  # `time ! cmd` negates the pipeline it times
        token = self._peek()
        if self._is_op(token, "(") or self._is_keyword(token, *_COMPOUND_STARTS):
            self._parse_command()
        else:
            self._parse_simple_command(words)

    def _parse_simple_command(self, words: list[str]) -> None:
        redirects: list[Redirect] = []
        assignments: list[str] = []
        found: list[SimpleCommand] = []  # substitutions' commands, emitted after this one
        assigning = True  # `time x=1 cmd` assigns too
        while True:
            token = self._peek()
            if isinstance(token, _Word):
                self._next()
                found.extend(token.commands)
                if assigning and _ASSIGNMENT.match(token.raw):
                    assignments.append(token.value)
                    continue
                assigning = False
                words.extend(token.fields)
                if len(words) == 1 and self._is_op(self._peek(), "("):
                    self._next()
                    self._expect_op(")", "a function definition")
                    self.out.extend(found)
                    self._parse_function_body()
                    return
            elif _is_redirect(token):
                self._next()
                redirects.append(self._parse_redirect(token.value, found))
            else:
                break
        if words or redirects or assignments:  # not for a lone `$()`
            self.out.append(SimpleCommand(tuple(words), tuple(redirects), tuple(assignments)))
        self.out.extend(found)

    def _parse_redirect(self, op: str, found: list[SimpleCommand]) -> Redirect:
        target = self._next()
        if not isinstance(target, _Word):
            raise ShellSyntaxError(f"expected a file name after {op!r}, found {_describe(target)}")
        found.extend(target.commands)
        prefix = _FD_PREFIX.match(op)
        base = op[prefix.end() :] if prefix else op
        if base in ("<<", "<<-"):
            self.pending.append(_Heredoc(target.value, target.quoted, base == "<<-", self.substitution))
        return Redirect(op, target.value)

    def _parse_trailing_redirects(self) -> None:
        """Redirections after a compound command, reported as a wordless command."""
        redirects: list[Redirect] = []
        found: list[SimpleCommand] = []
        while _is_redirect(token := self._peek()):
            self._next()
            redirects.append(self._parse_redirect(token.value, found))
        if redirects:
            self.out.append(SimpleCommand((), tuple(redirects)))
        self.out.extend(found)

    def _parse_nested(self, closer: str, construct: str) -> list[SimpleCommand]:
        """Parse a `$( )` / `<( )` body at the current position, through `closer`."""
        saved_out, self.out = self.out, []
        self.substitution += 1
        try:
            with self._deeper():
                self._parse_list(frozenset({closer}))
                self._expect_op(closer, construct)
            if any(doc.level == self.substitution for doc in self.pending):
                raise ShellSyntaxError(f"here-document inside {construct} is not closed inside it")
            return self.out
        finally:
            self.out = saved_out
            self.substitution -= 1

    # ---- here-documents

    def _read_heredocs(self) -> None:
        """Consume the bodies of here-documents started on the line just ended."""
        if any(doc.level != self.substitution for doc in self.pending):
            raise ShellSyntaxError("a here-document body is interleaved with a command substitution")
        docs, self.pending = self.pending, []
        for doc in docs:
            body = self._read_heredoc_body(doc)
            if not doc.quoted:  # an unquoted body still expands $( ) and backticks
                self.out.extend(_Parser(body, self.depth + 1).scan_expansions())

    def _read_heredoc_body(self, doc: _Heredoc) -> str:
        lines: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise ShellSyntaxError(f"unterminated here-document (no line {doc.delimiter!r})")
            line = self._read_line()
            while not doc.quoted and _ends_in_continuation(line) and self.pos < len(self.text):
                line = line[:-1] + self._read_line()
            if doc.strip_tabs:
                line = line.lstrip("\t")
            if line == doc.delimiter:
                return "\n".join(lines)
            lines.append(line)

    def _read_line(self) -> str:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end == -1 else end
        line = self.text[self.pos : end]
        self.pos = end + 1
        return line

    def scan_expansions(self) -> list[SimpleCommand]:
        """Commands run by substitutions in here-document text."""
        builder = _WordBuilder()
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                self.pos += 2
            elif char == "$":
                self._read_dollar(builder, in_double_quotes=True)
            elif char == "`":
                self._read_backticks(builder, in_double_quotes=False)
            else:
                self.pos += 1
        return builder.commands

    # ---- lexer

    def _lex(self) -> _Op | _Word:
        self._skip_blanks_and_comments()
        if self.pos >= len(self.text):
            return _EOF
        char = self.text[self.pos]
        if char == "\n":
            self.pos += 1
            return _NEWLINE
        if char in _META and not self._at_process_substitution():
            return self._read_operator()
        return self._read_word()

    def _skip_blanks_and_comments(self) -> None:
        text = self.text
        while self.pos < len(text):
            if text[self.pos] in _BLANKS:
                self.pos += 1
            elif text.startswith("\\\n", self.pos):
                self.pos += 2
            elif text[self.pos] == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end == -1 else end
            else:
                return

    def _at_process_substitution(self) -> bool:
        return self.text[self.pos] in "<>" and self.text.startswith("(", self.pos + 1)

    def _read_operator(self) -> _Op:
        for op in _OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return _Op(op)
        raise AssertionError("unreachable: every metacharacter starts an operator")

    def _read_word(self) -> _Op | _Word:
        start = self.pos
        builder = _WordBuilder()
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if self._at_process_substitution():
                self._read_process_substitution(builder)
            elif char == "(" and _ASSIGNMENT.fullmatch(self.text, start, self.pos):
                self._read_array_assignment(builder)
            elif char in _META:
                break
            else:
                self._read_word_part(builder)
        raw = self.text[start : self.pos]
        if not builder.quoted and _FD_PREFIX.fullmatch(raw) and self._at_redirect():
            return _Op(raw + self._read_operator().value)  # `2>`, `{fd}>&`
        if _SUBSCRIPT_START.match(raw) and not _closes_subscript(builder.chars):
            # Where an assignment may stand, bash reads `name[` on to the
            # matching `]`, blanks and all; elsewhere it does not.
            raise ShellSyntaxError(f"cannot tell where the word starting {raw!r} ends")
        # An unquoted word that expands to nothing (`$()`) is no word at all.
        fields = _brace_fields(builder.chars) if builder.chars or builder.quoted else []
        return _Word(builder.text(), fields, builder.quoted, raw, builder.commands)

    def _at_redirect(self) -> bool:
        return self.pos < len(self.text) and self.text[self.pos] in "<>" and not self._at_process_substitution()

    def _read_word_part(self, builder: _WordBuilder) -> None:
        """One unquoted character, escape, quoted string or expansion."""
        text, char = self.text, self.text[self.pos]
        if char == "\\":
            if text.startswith("\n", self.pos + 1):
                self.pos += 2  # line continuation
                return
            builder.quoted = True
            builder.add(text[self.pos + 1 : self.pos + 2] or "\\")
            self.pos += 2
        elif char == "'":
            end = text.find("'", self.pos + 1)
            if end == -1:
                raise ShellSyntaxError("unterminated single quote")
            builder.quoted = True
            builder.add(text[self.pos + 1 : end])
            self.pos = end + 1
        elif char == '"':
            builder.quoted = True
            self.pos += 1
            self._read_double_quoted(builder)
        elif char == "$":
            self._read_dollar(builder, in_double_quotes=False)
        elif char == "`":
            self._read_backticks(builder, in_double_quotes=False)
        else:
            builder.add(char, unquoted=True)
            self.pos += 1

    def _read_double_quoted(self, builder: _WordBuilder) -> None:
        text = self.text
        while True:
            if self.pos >= len(text):
                raise ShellSyntaxError("unterminated double quote")
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return
            if char == "\\":
                escaped = text[self.pos + 1 : self.pos + 2]
                if escaped in ("$", "`", '"', "\\"):
                    builder.add(escaped)
                elif escaped != "\n":  # backslash-newline is a continuation
                    builder.add("\\" + escaped)
                self.pos += 2
            elif char == "$":
                self._read_dollar(builder, in_double_quotes=True)
            elif char == "`":
                self._read_backticks(builder, in_double_quotes=True)
            else:
                builder.add(char)
                self.pos += 1

    def _read_dollar(self, builder: _WordBuilder, *, in_double_quotes: bool) -> None:
        """`$'..'`, `$"..."`, `$(( ))`, `$( )`, `${ }` or a plain `$`."""
        with self._deeper():
            self._read_dollar_here(builder, in_double_quotes)

    def _read_dollar_here(self, builder: _WordBuilder, in_double_quotes: bool) -> None:
        start, text = self.pos, self.text
        after = text[self.pos + 1 : self.pos + 2]
        if after == "'" and not in_double_quotes:
            self._read_ansi_c(builder)
        elif after == '"' and not in_double_quotes:
            builder.quoted = True
            self.pos += 2
            self._read_double_quoted(builder)
        elif after == "(":
            self.pos += 2
            if self._at_empty_substitution():
                return  # `$()` expands to nothing: `$()rm` runs rm
            builder.commands.extend(self._read_paren_expansion())
            builder.add(text[start : self.pos])
        elif after == "{":
            self._read_braced_parameter(builder)
            builder.add(text[start : self.pos])
        else:
            builder.add("$", unquoted=not in_double_quotes)
            self.pos += 1

    def _read_paren_expansion(self) -> list[SimpleCommand]:
        """After `$(`: arithmetic `$(( ))` if it parses as one, else `$( )`."""
        after_paren = self.pos
        if self.text.startswith("(", self.pos):
            self.pos += 1
            try:
                return self._scan_arithmetic()
            except _NotArithmetic:
                self.pos = after_paren
        return self._parse_nested(")", "$( )")

    def _read_process_substitution(self, builder: _WordBuilder) -> None:
        start = self.pos
        self.pos += 2
        if self._at_empty_substitution():
            return  # like `$()`, an empty `<()` expands to nothing
        builder.commands.extend(self._parse_nested(")", f"{self.text[start]}( )"))
        builder.add(self.text[start : self.pos])

    def _at_empty_substitution(self) -> bool:
        """Skip the `)` of a substitution with nothing but blanks and comments in it."""
        saved = self.pos
        while True:
            self._skip_blanks_and_comments()
            if not self.text.startswith("\n", self.pos):
                break
            self.pos += 1
        if self.text.startswith(")", self.pos):
            self.pos += 1
            return True
        self.pos = saved
        return False

    def _read_array_assignment(self, builder: _WordBuilder) -> None:
        """`name=(a b $(c))`: the parenthesised words belong to the assignment."""
        start = self.pos
        self.pos += 1
        while True:
            token = self._lex()
            if self._is_op(token, ")"):
                break
            if token == _NEWLINE and not self.pending:
                continue
            if not isinstance(token, _Word):
                raise ShellSyntaxError(f"unexpected {_describe(token)} in an array assignment")
            builder.commands.extend(token.commands)
        builder.add(self.text[start : self.pos])

    def _read_braced_parameter(self, builder: _WordBuilder) -> None:
        """`${...}` up to the first unquoted `}` -- bash does not count nested
        braces, so `${x:-{a};rm y}` ends before `;` -- with quotes and
        substitutions (`${x:-$(y)}`) inside."""
        self.pos += 2
        inner = _WordBuilder()
        while not self.text.startswith("}", self.pos):
            if self.pos >= len(self.text):
                raise ShellSyntaxError("unterminated ${")
            if self.text[self.pos] in "\\'\"$`":
                self._read_word_part(inner)
            else:
                self.pos += 1
        self.pos += 1
        builder.commands.extend(inner.commands)

    def _read_ansi_c(self, builder: _WordBuilder) -> None:
        """`$'...'` with its C-style escapes decoded."""
        builder.quoted = True
        self.pos += 2
        text = self.text
        while True:
            if self.pos >= len(text):
                raise ShellSyntaxError("unterminated $'...' string")
            char = text[self.pos]
            if char == "'":
                self.pos += 1
                return
            match = _ANSI_C_ESCAPE.match(text, self.pos) if char == "\\" else None
            if match:
                builder.add(_decode_ansi_c(match))
                self.pos = match.end()
            else:
                builder.add(text[self.pos : self.pos + 2] if char == "\\" else char)
                self.pos += 2 if char == "\\" else 1

    def _read_backticks(self, builder: _WordBuilder, *, in_double_quotes: bool) -> None:
        """`` `...` ``: undo the backslash escapes, then parse the inside."""
        start, text = self.pos, self.text
        self.pos += 1
        inner: list[str] = []
        while True:
            if self.pos >= len(text):
                raise ShellSyntaxError("unterminated backquote")
            char = text[self.pos]
            if char == "`":
                self.pos += 1
                break
            escaped = text[self.pos + 1 : self.pos + 2]
            if char == "\\" and (escaped in ("$", "`", "\\") or (in_double_quotes and escaped == '"')):
                inner.append(escaped)
                self.pos += 2
            else:
                inner.append(char)
                self.pos += 1
        builder.commands.extend(_Parser("".join(inner), self.depth + 1).parse())
        builder.add(text[start : self.pos])

    def _scan_arithmetic(self) -> list[SimpleCommand]:
        """After `((` or `$((`: skip to the closing `))`, keeping substitutions.

        Raises _NotArithmetic when a `)` closes the first paren alone, which
        means the text was nested subshells after all.
        """
        depth, inner = 0, _WordBuilder()
        while True:
            if self.pos >= len(self.text):
                raise _NotArithmetic
            char = self.text[self.pos]
            if char == ")":
                if depth == 0:
                    if not self.text.startswith(")", self.pos + 1):
                        raise _NotArithmetic
                    self.pos += 2
                    return inner.commands
                depth -= 1
                self.pos += 1
            elif char == "(":
                depth += 1
                self.pos += 1
            elif char in "\\'\"$`":
                self._read_word_part(inner)
            else:
                self.pos += 1

    def _scan_regex(self) -> None:
        """The right side of `=~`: bash reads it as one word in which `|` and
        balanced parentheses (which may hold blanks) are literal."""
        while self.pos < len(self.text) and self.text[self.pos] in _BLANKS:
            self.pos += 1
        depth, inner = 0, _WordBuilder()
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if depth == 0 and (char in " \t\n;&<>" or char == ")"):
                break
            if char in "()":
                depth += 1 if char == "(" else -1
                self.pos += 1
            elif char in "\\'\"$`":
                self._read_word_part(inner)
            else:
                self.pos += 1
        if depth:
            raise ShellSyntaxError("unbalanced parentheses in a [[ =~ ]] pattern")
        self.out.extend(inner.commands)


# Brace expansion that would make more words than this is refused.
_MAX_BRACE_WORDS = 256
_SEQUENCE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?|([a-zA-Z])\.\.([a-zA-Z])(?:\.\.(-?\d+))?")


def _brace_fields(chars: list[tuple[str, bool]]) -> list[str]:
    """The words a word becomes after brace expansion, within a budget."""
    expansions = 0
    estimate = 1
    for start, (end, commas) in _brace_pairs(chars).items():
        alternatives = len(commas) + 1 if commas else len(_brace_sequence_at(chars, start, end) or ())
        if alternatives:
            expansions += 1
            estimate *= alternatives
        if expansions > 16 or estimate > _MAX_BRACE_WORDS:
            raise ShellSyntaxError("brace expansion makes too many words to analyse")
    return _expand_braces(chars)


def _expand_braces(chars: list[tuple[str, bool]]) -> list[str]:
    """Bash brace expansion on the unquoted parts of a word: `{rm,-rf}` is two
    words, `f{,.bak}` is `f f.bak`."""
    for start, (end, commas) in sorted(_brace_pairs(chars).items()):
        if commas:
            bounds = [start, *commas, end]
            alternatives = [chars[a + 1 : b] for a, b in itertools.pairwise(bounds)]
        else:
            sequence = _brace_sequence_at(chars, start, end)
            if sequence is None:
                continue
            alternatives = [[(char, False) for char in item] for item in sequence]
        words: list[str] = []
        for alternative in alternatives:
            words += _expand_braces(chars[:start] + alternative + chars[end + 1 :])
        return words
    return ["".join(char for char, _ in chars)]


def _brace_pairs(chars: list[tuple[str, bool]]) -> dict[int, tuple[int, list[int]]]:
    """Each unquoted `{` with its matching `}` and the commas directly inside."""
    pairs: dict[int, tuple[int, list[int]]] = {}
    open_braces: list[tuple[int, list[int]]] = []
    for index, (char, unquoted) in enumerate(chars):
        if not unquoted:
            continue
        if char == "{":
            open_braces.append((index, []))
        elif char == "}" and open_braces:
            start, commas = open_braces.pop()
            pairs[start] = (index, commas)
        elif char == "," and open_braces:
            open_braces[-1][1].append(index)
    return pairs


def _brace_sequence_at(chars: list[tuple[str, bool]], start: int, end: int) -> list[str] | None:
    inner = chars[start + 1 : end] if end - start <= 40 else []  # a sequence is short
    if not inner or not all(unquoted for _, unquoted in inner):
        return None
    return _brace_sequence("".join(char for char, _ in inner))


def _brace_sequence(text: str) -> list[str] | None:
    """`1..5`, `01..10..2` or `a..e` as a list of items."""
    match = _SEQUENCE.fullmatch(text)
    if not match:
        return None
    first, last, step, first_letter, last_letter, letter_step = match.groups()
    if first_letter:
        first, last, step = str(ord(first_letter)), str(ord(last_letter)), letter_step
    start, stop, stride = int(first), int(last), abs(int(step or 1)) or 1
    if abs(stop - start) // stride >= _MAX_BRACE_WORDS:
        raise ShellSyntaxError("brace expansion makes too many words to analyse")
    numbers = range(start, stop + (1 if stop >= start else -1), stride if stop >= start else -stride)
    if first_letter:
        return [chr(n) for n in numbers]
    padded = any(len(n.lstrip("-")) > 1 and n.lstrip("-").startswith("0") for n in (first, last))
    width = max(len(first), len(last)) if padded else 0
    return [str(n).zfill(width) for n in numbers]


def _closes_subscript(chars: list[tuple[str, bool]]) -> bool:
    """Whether the `[` after the leading name is closed within the word."""
    depth = 0
    for char, unquoted in chars:
        if unquoted and char == "[":
            depth += 1
        elif unquoted and char == "]" and depth:
            depth -= 1
            if depth == 0:
                return True
    return False


def _ends_in_continuation(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _decode_ansi_c(match: re.Match[str]) -> str:
    simple, octal, hex2, hex4, hex8, control = match.groups()
    if simple:
        return _SIMPLE_ESCAPES.get(simple, simple)
    if control:
        return chr(ord(control) & 0x1F)
    code = int(octal, 8) if octal else int(hex2 or hex4 or hex8, 16)
    if code == 0 or code > 0x10FFFF:
        # bash cuts the string at a NUL; refuse rather than guess.
        raise ShellSyntaxError("$'...' string with a NUL or invalid character")
    return chr(code)


# --------------------------------------------------------------------------
# Commands that run other commands


@dataclass(frozen=True, slots=True)
class _Wrapper:
    """How to find the command inside `env ... cmd`, `sudo ... cmd`, ..."""

    value_options: frozenset[str] = frozenset()  # options that take the next word
    operands: int = 0  # words between the options and the command (timeout's DURATION)
    assignments: bool = False  # NAME=value words may precede the command
    no_command: frozenset[str] = frozenset()  # options that mean nothing is run
    unsupported: frozenset[str] = frozenset()  # options we cannot follow


def _options(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WRAPPERS = {
    "env": _Wrapper(_options("-u --unset -C --chdir"), assignments=True,
                    unsupported=_options("-S --split-string")),
    "nohup": _Wrapper(),
    "time": _Wrapper(_options("-f --format -o --output")),
    "nice": _Wrapper(_options("-n --adjustment")),
    "timeout": _Wrapper(_options("-s --signal -k --kill-after"), operands=1),
    "command": _Wrapper(no_command=_options("-v -V")),
    "exec": _Wrapper(_options("-a")),
    "xargs": _Wrapper(_options("-a --arg-file -d --delimiter -E -I -L --max-lines -n --max-args "
                               "-P --max-procs -s --max-chars --process-slot-var")),
    "sudo": _Wrapper(_options("-u --user -g --group -C --close-from -D --chdir -h --host -p --prompt "
                              "-r --role -t --type -T --command-timeout -U --other-user"),
                     assignments=True,
                     no_command=_options("-l --list -v --validate -K --remove-timestamp -e --edit")),
    "doas": _Wrapper(_options("-u -C"), no_command=_options("-L")),
    "stdbuf": _Wrapper(_options("-i --input -o --output -e --error")),
    "builtin": _Wrapper(),
    "setsid": _Wrapper(),
    "unbuffer": _Wrapper(),
    "ionice": _Wrapper(_options("-c --class -n --classdata"), no_command=_options("-p --pid -P --pgid -u --uid")),
    "taskset": _Wrapper(operands=1, no_command=_options("-p --pid")),
    "chroot": _Wrapper(_options("--userspec --groups"), operands=1),
    "flock": _Wrapper(_options("-w --wait --timeout -E --conflict-exit-code"), operands=1,
                      unsupported=_options("-c --command")),
    "strace": _Wrapper(_options("-e -o -p -s -u -a -b -E -I -O -P -S -X")),
    "ltrace": _Wrapper(_options("-e -o -p -s -u -a -A -D -F -l -n -x")),
    "valgrind": _Wrapper(),
}  # fmt: skip
# watch joins its operands and runs them with `sh -c`
_WATCH = _Wrapper(_options("-n --interval -q --equexit"),
                  unsupported=_options("-x --exec"))  # fmt: skip
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "mksh"})
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})


def _inner(command: SimpleCommand, depth: int, recursive: bool) -> list[SimpleCommand]:
    if depth > _MAX_DEPTH:
        raise ShellSyntaxError("commands are nested too deeply to analyse")
    name = command_name(command)
    direct: list[SimpleCommand] = []
    if name in _WRAPPERS:
        wrapped = _unwrap(command.words, _WRAPPERS[name])
        direct += [wrapped] if wrapped else []
    elif name == "find":
        direct += _find_exec_commands(command.words)
    script = _nested_script(command)
    if script is not None:
        direct += _Parser(script, depth).parse()
    if not recursive:
        return direct
    result: list[SimpleCommand] = []
    for inner in direct:
        result.append(inner)
        result.extend(_inner(inner, depth + 1, recursive))
    return result


def _unwrap(words: tuple[str, ...], wrapper: _Wrapper) -> SimpleCommand | None:
    """The wrapped command, or None when the wrapper runs nothing."""
    i = 1
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        if word.startswith("-") and len(word) > 1:
            options, takes_next = _option_word(word, wrapper)
            if options & wrapper.unsupported:
                raise ShellSyntaxError(f"cannot tell what {words[0]} {word} runs")
            if options & wrapper.no_command:
                return None
            i += 2 if takes_next else 1
        elif word == "-":
            i += 1  # `env -` clears the environment
        else:
            break
    while wrapper.assignments and i < len(words) and _ASSIGNMENT.match(words[i]):
        i += 1
    command = i + wrapper.operands
    if command >= len(words):
        return None
    assignments = tuple(word for word in words[1:command] if _ASSIGNMENT.match(word)) if wrapper.assignments else ()
    return SimpleCommand(words[command:], (), assignments)


def _option_word(word: str, wrapper: _Wrapper) -> tuple[set[str], bool]:
    """The options in `--name[=value]` or a cluster like `-rn5`, and whether
    the next word is the last option's value."""
    if word.startswith("--"):
        name = word.split("=", 1)[0]
        return {name}, name in wrapper.value_options and "=" not in word
    options: set[str] = set()
    for index, letter in enumerate(word[1:], start=1):
        options.add(f"-{letter}")
        if f"-{letter}" in wrapper.value_options:
            return options, index == len(word) - 1  # else the value is attached
    return options, False


def _find_exec_commands(words: tuple[str, ...]) -> list[SimpleCommand]:
    """The commands of `find ... -exec CMD ... {} ;` (or `+`)."""
    found, i = [], 1
    while i < len(words):
        if words[i] in _FIND_EXEC:
            end = i + 1
            while end < len(words) and not (words[end] == ";" or (words[end] == "+" and words[end - 1] == "{}")):
                end += 1
            if end >= len(words) or end == i + 1:
                raise ShellSyntaxError(f"find {words[i]} needs a command and a closing ';' or '+'")
            found.append(SimpleCommand(words[i + 1 : end]))
            i = end
        i += 1
    return found


def shell_input(command: SimpleCommand) -> tuple[str, str] | None:
    """Where a shell (`sh`, `bash`, ...) reads its commands from:
    ("string", SCRIPT) for `-c`, ("file", PATH), or ("stdin", ""); None for
    other programs."""
    if command_name(command) not in _SHELLS:
        return None
    args = command.words[1:]
    reads_string, i = False, 0
    while i < len(args):
        arg = args[i]
        if arg in ("-", "--"):
            i += 1
            break
        if arg[:1] not in ("-", "+") or len(arg) == 1:
            break
        short = not arg.startswith("--")
        reads_string = reads_string or (short and arg[0] == "-" and "c" in arg)
        # `-o pipefail`, `-O extglob`, `--rcfile FILE` take the next word
        takes_value = arg in ("--rcfile", "--init-file") or (short and arg[-1] in "oO")
        i += 2 if takes_value else 1
    if reads_string:
        if i >= len(args):
            raise ShellSyntaxError(f"{command.words[0]} -c without a command string")
        return "string", args[i]
    if "s" in "".join(arg for arg in args[:i] if arg[:1] == "-" and arg[1:2] != "-") or i >= len(args):
        return "stdin", ""
    return "file", args[i]


def _nested_script(command: SimpleCommand) -> str | None:
    """The script string of `bash -c STR`, `eval ARGS...`, `trap STR SIGNAL`,
    `watch CMD...` or `alias NAME=STR` (aliases do expand once enabled)."""
    name, args = command_name(command), command.words[1:]
    if name == "eval":
        return " ".join(args) or None
    if name == "alias":
        return "\n".join(arg.split("=", 1)[1] for arg in args if "=" in arg) or None
    if name == "trap":
        operands = [arg for arg in args if arg not in ("-l", "-p", "--")]
        return operands[0] if len(operands) > 1 and operands[0] != "-" else None
    if name == "watch":
        operands = _unwrap(command.words, _WATCH)
        return " ".join(operands.words) if operands else None
    source = shell_input(command)
    return source[1] if source and source[0] == "string" else None
