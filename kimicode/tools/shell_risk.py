"""How risky a shell command is, for the approval policy.

Four levels, worst first:

- forbidden: never run, whatever the mode (`rm -rf ~`, writes outside the
  workspace, disk formatting, shutdown);
- destructive: loses work or reaches beyond the machine, so it needs explicit
  approval (`git reset --hard`, `git push`, `rm -r`, `curl ... | sh`);
- normal: changes things inside the workspace or runs code (`pytest`, `make`);
- read_only: only looks (`ls`, `grep`, `git status`).

`assess` rates every simple command that `split_commands` finds and keeps the
worst. A script that cannot be parsed is "destructive": it can still run, but
only with explicit approval. Paths are judged as written, relative to the
workspace or to any directory the script `cd`s into; `~` and `$HOME` count as
outside, other expansions as unknown.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

from kimicode.tools.shell_syntax import (
    ShellSyntaxError,
    SimpleCommand,
    command_name,
    inner_commands,
    shell_input,
    split_commands,
)

Risk = Literal["read_only", "normal", "destructive", "forbidden"]
_RANK: dict[Risk, int] = {"read_only": 0, "normal": 1, "destructive": 2, "forbidden": 3}
# `:(){ :|:& };:` -- a function piping itself into itself in the background.
# (The lookbehind keeps the search linear on long words.)
_FORK_BOMB = re.compile(r"(?<![\w:.-])([\w:.-]{1,64})\s*\(\s*\)\s*\{\s*\1\s*\|\s*\1\s*&\s*;?\s*\}")


@dataclass(frozen=True, slots=True)
class Assessment:
    risk: Risk
    reason: str  # one sentence naming the command, shown to the user and the model
    command: SimpleCommand | None = None


def assess(script: str, workspace: Path) -> Assessment:
    """The worst assessment over every command `script` may run."""
    if _FORK_BOMB.search(script):
        return Assessment("forbidden", "this is a fork bomb")
    try:
        commands = split_commands(script)
    except ShellSyntaxError as error:
        return Assessment("destructive", f"could not parse: {error}")
    context = _Context.for_script(commands, workspace)
    found = [_assess(command, context) for command in commands]
    found.append(_downloaded_code(commands))
    return _worst(found) or Assessment("read_only", "the script runs no commands")


def assess_command(cmd: SimpleCommand, workspace: Path) -> Assessment:
    """The assessment of one command, including the commands it runs itself."""
    return _assess(cmd, _Context.for_script([cmd], workspace))


def _worst(assessments: Iterable[Assessment | None]) -> Assessment | None:
    worst = None
    for assessment in assessments:
        if assessment and (worst is None or _RANK[assessment.risk] > _RANK[worst.risk]):
            worst = assessment
    return worst


# --------------------------------------------------------------------------
# Where paths point


class _Place(Enum):
    INSIDE = "inside the workspace"
    ROOT = "the workspace root"
    GIT = "inside .git"
    SCRATCH = "a scratch location"
    UNKNOWN = "a path only known at runtime"
    OUTSIDE = "outside the workspace"
    AROUND = "a directory containing the workspace"


_FD_PREFIX = re.compile(r"^(\d+|\{\w+\})")
_ESCAPES = frozenset({_Place.OUTSIDE, _Place.AROUND})
_SCRATCH_FILES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
_FD_FILE = re.compile(r"/dev/fd/\d+|/proc/self/fd/\d+")
_HOME = re.compile(r"~|\$HOME\b|\$\{HOME\}")
_TMPDIR = re.compile(r"\$TMPDIR\b|\$\{TMPDIR\}")
_BLOCK_DEVICE = re.compile(r"/dev/(sd|hd|vd|xvd|nvme|mmcblk|disk|dm-|md|loop|sr)")
_MAX_CWDS = 32


@dataclass(frozen=True, slots=True)
class _Context:
    workspace: Path
    # Every directory a command may run in: the workspace plus any `cd`
    # target, since the flattened command list no longer says which `cd`
    # (in which subshell or loop) applies to which command.
    cwds: frozenset[Path | _Place]
    scratch: tuple[tuple[Path, Path | None], ...] = field(default=())  # (temp root, subtree to exclude)

    @classmethod
    def for_script(cls, commands: list[SimpleCommand], workspace: Path) -> _Context:
        root = Path(os.path.realpath(workspace))
        cwds: set[Path | _Place] = {root}
        # With CDPATH set, `cd name` may go anywhere.
        cdpath = any("CDPATH" in word for command in commands for word in (*command.assignments, *command.words))
        for command in commands:
            if target := _cd_target(command):
                if cdpath and not target.startswith(("/", ".")):
                    target = "$CDPATH"
                cwds |= {_change_dir(cwd, target) for cwd in cwds}
            if len(cwds) > _MAX_CWDS:
                cwds = {root, _Place.UNKNOWN}
        return cls(root, frozenset(cwds), _scratch_dirs(root))

    def places(self, path: str) -> set[_Place]:
        """Where `path` may point, once for each possible working directory."""
        if path in _SCRATCH_FILES or _FD_FILE.fullmatch(path):
            return {_Place.SCRATCH}
        if _HOME.match(path):
            return {_Place.OUTSIDE}
        if any(_may_match_parent(part) for part in path.split("/")):
            return {_Place.AROUND}
        if _TMPDIR.match(path):
            path = _TMPDIR.sub(lambda _: _temp_dir(), path, count=1)
        if "$" in path or "`" in path:
            return {_Place.UNKNOWN}
        if path.startswith("/"):
            return {self._classify(Path(path))}
        return {cwd if isinstance(cwd, _Place) else self._classify(cwd / path) for cwd in self.cwds}

    def _classify(self, path: Path) -> _Place:
        real = Path(os.path.realpath(path))
        # A glob such as `../*` may match the workspace itself.
        fixed = _glob_free_parent(real) if _is_pattern(str(real)) else real
        if fixed != real and fixed in self.workspace.parents:
            return _Place.AROUND
        if real == self.workspace:
            return _Place.ROOT
        if self.workspace in real.parents:
            return _Place.GIT if real.relative_to(self.workspace).parts[0] == ".git" else _Place.INSIDE
        if real in self.workspace.parents:
            return _Place.AROUND
        for root, excluded in self.scratch:
            in_root = real == root or root in real.parents
            if in_root and not (excluded and (real == excluded or excluded in real.parents)):
                return _Place.SCRATCH
        return _Place.OUTSIDE


def _cd_target(command: SimpleCommand) -> str | None:
    """The directory a `cd`/`pushd` moves to ("~" for a bare `cd`), if any."""
    name, operands = command_name(command), [w for w in command.words[1:] if not w.startswith("-")]
    if name == "cd" or (name == "pushd" and operands):
        return operands[0] if operands else "~"
    return None  # `cd -` and `popd` return to a directory already seen


def _change_dir(cwd: Path | _Place, target: str) -> Path | _Place:
    if _HOME.match(target):
        return _Place.OUTSIDE
    if "$" in target or "`" in target:
        return _Place.UNKNOWN
    if target.startswith("/"):
        return Path(os.path.realpath(target))
    return cwd if isinstance(cwd, _Place) else Path(os.path.realpath(cwd / target))


def _scratch_dirs(workspace: Path) -> tuple[tuple[Path, Path | None], ...]:
    """/tmp and $TMPDIR -- but not the tree the workspace itself lives in,
    so that `../other` from a workspace under /tmp still counts as outside."""
    roots = {Path(os.path.realpath(p)) for p in ("/tmp", _temp_dir())}
    return tuple(
        (root, root / workspace.relative_to(root).parts[0] if root in workspace.parents else None) for root in roots
    )


def _is_pattern(text: str) -> bool:
    """Whether bash would treat `text` as a glob (`*`, `?` or `[...]`)."""
    bracket = text.find("[")
    return "*" in text or "?" in text or (bracket != -1 and "]" in text[bracket + 2 :])


def _temp_dir() -> str:
    return os.environ.get("TMPDIR") or tempfile.gettempdir()


def _may_match_parent(part: str) -> bool:
    """`.*` or `.?` may match `..` (older bash, or with dotglob)."""
    return part.startswith(".") and _is_pattern(part) and fnmatch.fnmatchcase("..", part)


def _glob_free_parent(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if not _is_pattern(str(parent)):
            return parent
    return Path("/")


def _write_risk(path: str, action: str, cmd: SimpleCommand, ctx: _Context) -> Assessment | None:
    """`action` ("tee writes to") changes `path`: forbidden outside the
    workspace, destructive where unknown or inside .git, else None."""
    places = ctx.places(path)
    if _BLOCK_DEVICE.match(path):
        return Assessment("forbidden", f"{action} the block device {path}", cmd)
    if places & _ESCAPES:
        return Assessment("forbidden", f"{action} {path}, outside the workspace", cmd)
    if _Place.UNKNOWN in places:
        return Assessment("destructive", f"{action} {path}, a path only known at runtime", cmd)
    if _Place.GIT in places:
        return Assessment("destructive", f"{action} {path}, part of .git where hooks can run code", cmd)
    return None


def _writes_risk(paths: Iterable[str], action: str, cmd: SimpleCommand, ctx: _Context) -> Assessment | None:
    return _worst(_write_risk(path, action, cmd, ctx) for path in paths)


# --------------------------------------------------------------------------
# Arguments


@dataclass(slots=True)
class _Args:
    flags: set[str]  # "-r" for each letter of a cluster, "--name" for long options
    operands: list[str]
    values: dict[str, list[str]]  # option -> the values given to it

    def value(self, *options: str) -> list[str]:
        return [v for option in options for v in self.values.get(option, [])]


def _parse_args(args: Iterable[str], takes_value: str = "", swallows: str = "") -> _Args:
    """Split arguments into options and operands. `takes_value` lists options
    followed by a value (`-o FILE`, `-oFILE`, `--output=FILE`); `swallows`
    lists short options whose optional value is the rest of the cluster (`-i.bak`)."""
    value_options, swallow_options = set(takes_value.split()), set(swallows.split())
    parsed = _Args(set(), [], {})
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            parsed.operands += words[i + 1 :]
            break
        if word.startswith("--"):
            name, has_value, value = word.partition("=")
            parsed.flags.add(name)
            if name in value_options and not has_value:
                i += 1
                value = words[i] if i < len(words) else ""
            if name in value_options:
                parsed.values.setdefault(name, []).append(value)
        elif word.startswith("-") and len(word) > 1:
            for index, letter in enumerate(word[1:], start=1):
                option = f"-{letter}"
                parsed.flags.add(option)
                if option in swallow_options:
                    break
                if option in value_options:
                    value = word[index + 1 :]
                    if not value:
                        i += 1
                        value = words[i] if i < len(words) else ""
                    parsed.values.setdefault(option, []).append(value)
                    break
        else:
            parsed.operands.append(word)
        i += 1
    return parsed


# --------------------------------------------------------------------------
# Commands


def _assess(cmd: SimpleCommand, ctx: _Context) -> Assessment:
    found = [_redirect_risk(cmd, ctx), _assignment_risk(cmd)]
    if cmd.words:
        try:
            found.append(_program_risk(cmd, ctx))
        except ShellSyntaxError as error:
            found.append(Assessment("destructive", f"could not parse: {error}", cmd))
    return _worst(found) or Assessment("read_only", "the command only redirects input", cmd)


def _redirect_risk(cmd: SimpleCommand, ctx: _Context) -> Assessment | None:
    writes = []
    for redirect in cmd.redirects:
        op = _FD_PREFIX.sub("", redirect.op)
        if ">" not in op or redirect.target.startswith(("<(", ">(")):
            continue  # input, or a process substitution
        if op in (">&", "<&") and (redirect.target.isdigit() or redirect.target == "-"):
            continue  # fd duplication such as 2>&1
        writes.append(redirect.target)
    program = cmd.words[0] if cmd.words else "a redirection"
    risk = _writes_risk(writes, f"{program} writes to", cmd, ctx)
    # Even a scratch file is a write; only the null device and ttys are not.
    written = [path for path in writes if path not in _SCRATCH_FILES and not _FD_FILE.fullmatch(path)]
    return risk or (Assessment("normal", f"{program} writes to {written[0]}", cmd) if written else None)


# Variables whose value only changes formatting.
_HARMLESS_VARIABLES = re.compile(r"(LC_\w+|LANG|LANGUAGE|TZ|COLUMNS|LINES|NO_COLOR|FORCE_COLOR|CLICOLOR|TERM)=")
# Variables that change which programs later commands run, or what they do.
_CONTROL_VARIABLES = re.compile(
    r"(PATH|CDPATH|LD_\w+|DYLD_\w+|BASH_ENV|ENV|IFS|PROMPT_COMMAND|SHELLOPTS|BASHOPTS|GIT_\w+|PAGER|EDITOR|VISUAL|"
    r"PYTHON\w*|NODE_OPTIONS|PERL5\w*|RUBYOPT)\+?="
)


def _assignment_risk(cmd: SimpleCommand) -> Assessment | None:
    risky = [a for a in cmd.assignments if not _HARMLESS_VARIABLES.match(a)]
    if not risky:
        return None
    name = risky[0].split("=", 1)[0].rstrip("+")
    if cmd.words:
        return Assessment("normal", f"setting {name} may change what {cmd.words[0]} does", cmd)
    control = next((a.split("=", 1)[0].rstrip("+") for a in risky if _CONTROL_VARIABLES.match(a)), None)
    if control:
        return Assessment("normal", f"setting {control} changes how later commands run", cmd)
    return Assessment("read_only", f"setting {name} only changes a shell variable", cmd)


def _declare(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    """`export PATH=...` is an assignment that lasts."""
    assignments = tuple(arg for arg in args if "=" in arg and not arg.startswith("-"))
    risk = _assignment_risk(SimpleCommand((), (), assignments))
    return risk or Assessment("read_only", f"{name} only changes shell variables", cmd)


def _program_risk(cmd: SimpleCommand, ctx: _Context) -> Assessment:
    name, args = command_name(cmd), list(cmd.words[1:])
    if "$" in cmd.words[0] or "`" in cmd.words[0]:
        return Assessment("destructive", f"the program {cmd.words[0]} is only known at runtime", cmd)
    if _is_pattern(cmd.words[0]):
        return Assessment("destructive", f"the program {cmd.words[0]} is a pattern matched at runtime", cmd)
    if name.startswith("mkfs"):
        return Assessment("forbidden", f"{name} formats a disk", cmd)
    if name in _POWER or (name in ("init", "telinit") and args[:1] in (["0"], ["6"])):
        return Assessment("forbidden", f"{name} shuts down or restarts the machine", cmd)
    if name == "systemctl" and (action := next((a for a in args if a in _POWER), None)):
        return Assessment("forbidden", f"systemctl {action} shuts down or restarts the machine", cmd)
    # `python3.12` is python, `pip3.12` is pip
    family = re.sub(r"^(python|pip)[\d.]*$", r"\1", name)
    if family in _CHECKERS:
        return _CHECKERS[family](cmd, name, args, ctx)
    if name in _READ_ONLY:
        return _read_only(cmd, name, args, ctx)
    if name in _SHELL_STATE:
        return Assessment("read_only", f"{name} only changes the shell's own state", cmd)
    if name in _DESTRUCTIVE:
        return Assessment("destructive", f"{name} {_DESTRUCTIVE[name]}", cmd)
    return Assessment("normal", f"{name} may change files or run code", cmd)


_POWER = frozenset({"shutdown", "reboot", "halt", "poweroff", "kexec"})
_READ_ONLY = frozenset(
    "ls pwd cat head tail wc file stat du df tree grep egrep fgrep rg ag which type echo printf true false "
    "date whoami id uname printenv diff cmp sort uniq cut tr jq basename dirname realpath readlink "
    "test [ : sleep seq nl md5sum sha1sum sha256sum".split()
)
_SHELL_STATE = frozenset("cd pushd popd set shopt unset exit return break continue shift wait read".split())
_DESTRUCTIVE = {
    "su": "runs commands as another user",
    "kill": "stops running processes",
    "pkill": "stops running processes",
    "killall": "stops running processes",
    "shred": "destroys file contents",
    "wipefs": "erases disk signatures",
    "fdisk": "repartitions a disk",
    "parted": "repartitions a disk",
}
_INTERPRETERS = frozenset({"python", "node", "perl", "ruby", "php"})


def _read_only(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    """A looking command, unless an option makes it write a file or run a program."""
    runner = {"rg": "--pre", "ag": "--pager", "sort": "--compress-program"}.get(name)
    if runner and any(a.startswith(runner) for a in args):
        return Assessment("normal", f"{name} {runner} runs another program", cmd)
    if name == "date" and any(a.startswith(("-s", "--set")) for a in args):
        return Assessment("normal", "date --set changes the system clock", cmd)
    outputs = _parse_args(args, "-o --output").value("-o", "--output") if name in ("sort", "tree") else []
    if name == "uniq":
        outputs = _parse_args(args, "-f -s -w --skip-fields --skip-chars --check-chars").operands[1:2]
    if outputs:
        risk = _writes_risk(outputs, f"{name} writes to", cmd, ctx)
        return risk or Assessment("normal", f"{name} writes to {outputs[0]}", cmd)
    return Assessment("read_only", f"{name} only reads", cmd)


def _interpreter(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    if _interpreter_script(args).startswith(("<(", "/dev/fd/")):
        return Assessment("destructive", f"{name} runs code produced by another command", cmd)
    if args[:2] == ["-m", "pip"]:
        return _package_or_container(cmd, "pip", args[2:], ctx)
    return Assessment("normal", f"{name} runs code", cmd)


def _interpreter_script(args: list[str]) -> str:
    """The program file an interpreter runs: "" when given inline (`-c`, `-m`,
    `-e`), "-" when read from stdin."""
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg in ("-W", "-X", "-I", "-r", "--require"):
            skip_value = True  # the option's value follows
        elif arg.startswith("-") and arg != "-":
            if re.fullmatch(r"-[A-Za-z]*[cmeEp]", arg) or arg in ("--eval", "--print"):
                return ""
        else:
            return arg
    return "-"


def _downloaded_code(commands: list[SimpleCommand]) -> Assessment | None:
    """`curl URL | python`: an interpreter reading its program from stdin in a
    script that downloads something."""
    fetcher = next((command_name(c) for c in commands if command_name(c) in ("curl", "wget")), None)
    if fetcher is None:
        return None
    for cmd in commands:
        name = command_name(cmd)
        interpreter = re.sub(r"^python[\d.]*$", "python", name) in _INTERPRETERS
        if interpreter and _interpreter_script(list(cmd.words[1:])) == "-":
            return Assessment("destructive", f"{name} runs code downloaded by {fetcher}", cmd)
    return None


# ---- file-changing commands

_FILE_CHANGERS = frozenset(
    "rm unlink mv cp touch mkdir rmdir ln tee truncate chmod chown chgrp sed install dd shred rsync".split()
)


def _rm(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    parsed = _parse_args(args)
    recursive = bool(parsed.flags & {"-r", "-R", "--recursive"})
    label = "rm -r" if recursive else name
    for path in parsed.operands:
        places = ctx.places(path)
        if recursive and places & (_ESCAPES | {_Place.ROOT}):
            where = next(p for p in (_Place.AROUND, _Place.ROOT, _Place.OUTSIDE) if p in places)
            return Assessment("forbidden", f"rm -r of {path} would delete {where.value}", cmd)
    risk = _writes_risk(parsed.operands, f"{label} deletes", cmd, ctx)
    if risk:
        return risk
    if recursive:
        return Assessment("destructive", "rm -r deletes directories and everything in them", cmd)
    pattern = next((p for p in parsed.operands if _is_pattern(p)), None)
    if pattern:
        return Assessment("destructive", f"rm {pattern} deletes every file matching a pattern", cmd)
    return Assessment("normal", f"{name} deletes files in the workspace", cmd)


# How each command names the paths it changes: options that take a value,
# options whose value is a changed path, and which operands it changes.
@dataclass(frozen=True, slots=True)
class _Writer:
    takes_value: str = ""
    target_options: tuple[str, ...] = ()
    operands: Literal["all", "last", "after_first"] = "all"
    risk: Risk = "normal"
    verb: str = "changes files in the workspace"


_WRITERS = {
    "mv": _Writer("-t -S --target-directory --suffix", ("-t", "--target-directory"), verb="moves files"),
    "cp": _Writer("-t -S --target-directory --suffix", ("-t", "--target-directory"), "last", verb="copies files"),
    "ln": _Writer("-t -S --target-directory --suffix", ("-t", "--target-directory"), "last", verb="creates links"),
    "install": _Writer("-m -o -g -S -t --mode --owner --group --suffix --target-directory",
                       ("-t", "--target-directory"), "last", verb="installs files"),
    "touch": _Writer("-d -r -t --date --reference", verb="creates or updates files"),
    "mkdir": _Writer("-m --mode", verb="creates directories"),
    "rmdir": _Writer(verb="removes directories"),
    "tee": _Writer(verb="writes files"),
    "truncate": _Writer("-s -r --size --reference", risk="destructive", verb="cuts files to a size"),
    "shred": _Writer("-n -s --iterations --size --random-source", risk="destructive", verb="destroys file contents"),
    "chmod": _Writer("--reference", operands="after_first", verb="changes permissions"),
    "chown": _Writer("--reference --from", operands="after_first", risk="destructive", verb="changes file ownership"),
    "chgrp": _Writer("--reference", operands="after_first", risk="destructive", verb="changes file ownership"),
    "rsync": _Writer("-e --rsh --exclude --include --filter -f --exclude-from --include-from --files-from",
                     operands="last", verb="copies files"),
}  # fmt: skip


def _file_writer(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    writer = _WRITERS[name]
    # `chmod -x f`: the mode looks like an option
    dash_mode = name == "chmod" and any(re.fullmatch(r"-[rwxXst]+", a) for a in args)
    parsed = _parse_args([a for a in args if not (dash_mode and re.fullmatch(r"-[rwxXst]+", a))], writer.takes_value)
    operands = parsed.operands
    if writer.operands == "after_first":
        operands = operands if parsed.value("--reference") or dash_mode else operands[1:]
    elif writer.operands == "last" and not (name == "install" and "-d" in parsed.flags):
        operands = [] if parsed.value(*writer.target_options) or len(operands) < 2 else operands[-1:]
        operands = [p for p in operands if not re.match(r"[^/:]+:", p)]  # rsync [user@]host:path
    targets = operands + parsed.value(*writer.target_options)
    label = f"{name} -R" if parsed.flags & {"-R", "--recursive"} and name in ("chmod", "chown", "chgrp") else name
    risk = _writes_risk(targets, f"{label} changes", cmd, ctx)
    if risk:
        return risk
    if label == "chmod -R":
        return Assessment("destructive", "chmod -R changes permissions recursively", cmd)
    if name == "rsync" and any(f.startswith("--delete") for f in parsed.flags):
        return Assessment("destructive", "rsync --delete removes files missing from the source", cmd)
    return Assessment(writer.risk, f"{name} {writer.verb}", cmd)


def _sed(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    parsed = _parse_args(args, "-e -f -l --expression --file --line-length", swallows="-i")
    if not parsed.flags & {"-i", "--in-place"}:
        return Assessment("normal", "sed edits text (no files are changed in place)", cmd)
    files = parsed.operands if parsed.value("-e", "-f", "--expression", "--file") else parsed.operands[1:]
    return _writes_risk(files, "sed -i changes", cmd, ctx) or Assessment("normal", "sed -i edits files in place", cmd)


def _dd(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    outputs = [a.removeprefix("of=") for a in args if a.startswith("of=")]
    return _writes_risk(outputs, "dd writes to", cmd, ctx) or Assessment(
        "destructive", "dd copies raw data and can overwrite files", cmd
    )


def _find(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    starts = []
    for arg in args:
        if arg.startswith(("-", "(", "!")):
            break
        starts.append(arg)
    escapes = any(ctx.places(start) & _ESCAPES for start in starts or ["."])
    outputs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-fprint", "-fprint0", "-fprintf", "-fls")]
    changers = [command_name(c) for c in inner_commands(cmd) if command_name(c) in _FILE_CHANGERS]
    if "-delete" in args or changers:
        action = "-delete" if "-delete" in args else f"-exec {changers[0]}"
        if escapes:
            return Assessment("forbidden", f"find {action} changes files outside the workspace", cmd)
        return Assessment("destructive", f"find {action} changes every file it matches", cmd)
    risk = _writes_risk(outputs, "find writes to", cmd, ctx)
    if risk or outputs:
        return risk or Assessment("normal", f"find writes to {outputs[0]}", cmd)
    if set(args) & {"-exec", "-execdir", "-ok", "-okdir"}:
        return Assessment("normal", "find -exec runs a command on every file it finds", cmd)
    return Assessment("read_only", "find only lists files", cmd)


# ---- commands that run other commands


def _wrapper(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    """`env`, `sudo`, `xargs`, `eval`, `trap`, ...: at least as risky as what they run."""
    inner = inner_commands(cmd, recursive=False)
    own = None
    if name in ("sudo", "doas"):
        own = Assessment("destructive", f"{name} runs a command as root", cmd)
    elif name == "xargs":
        nested = inner_commands(cmd)
        changer = next((command_name(c) for c in nested if command_name(c) in _FILE_CHANGERS), None)
        if changer:
            own = Assessment("destructive", f"xargs passes paths it reads from input to {changer}", cmd)
    elif name == "env" and not inner:
        own = Assessment("read_only", "env only prints the environment", cmd)
    elif outputs := _wrapper_outputs(name, args, inner):
        own = _writes_risk(outputs, f"{name} writes to", cmd, ctx) or Assessment(
            "normal", f"{name} writes to {outputs[0]}", cmd
        )
    found = [own, *(_assess(inner_cmd, ctx) for inner_cmd in inner)]
    return _worst(found) or Assessment("read_only", f"{name} runs no other command", cmd)


# Wrappers that also write a file of their own: their output or lock file.
_WRAPPER_OUTPUTS = {
    "time": "-o --output",
    "strace": "-o --output",
    "ltrace": "-o --output",
    "valgrind": "--log-file --xml-file",
}


def _wrapper_outputs(name: str, args: list[str], inner: list[SimpleCommand]) -> list[str]:
    own = args[: len(args) - len(inner[0].words)] if inner else args  # the words before the wrapped command
    if name == "flock":
        return _parse_args(own, "-w --wait --timeout -E --conflict-exit-code").operands[:1]
    options = _WRAPPER_OUTPUTS.get(name, "")
    return _parse_args(own, options).value(*options.split())


def _shell(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    source, script = shell_input(cmd) or ("stdin", "")
    if source == "stdin":
        return Assessment("destructive", f"{name} runs commands from its standard input", cmd)
    if source == "file" and script.startswith(("<(", "/dev/fd/", "/dev/stdin")):
        return Assessment("destructive", f"{name} runs a script produced by another command", cmd)
    if source == "file":
        return Assessment("normal", f"{name} runs the script {script}", cmd)
    risks = [_assess(inner_cmd, ctx) for inner_cmd in inner_commands(cmd, recursive=False)]
    return _worst(risks) or Assessment("read_only", f"{name} -c runs no command", cmd)


def _source(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    script = args[0] if args else ""
    if script.startswith(("<(", "/dev/fd/", "/dev/stdin")):
        return Assessment("destructive", f"{name} runs code produced by another command", cmd)
    return Assessment("normal", f"{name} runs the script {script}", cmd)


# ---- version control, packages, containers

_GIT_READ_ONLY = frozenset(
    "status diff log show rev-parse ls-files blame grep describe shortlog ls-tree cat-file show-ref "
    "merge-base help version whatchanged".split()
)
# Config keys whose values git runs as programs.
_GIT_CODE_KEYS = re.compile(
    r"core\.(pager|editor|sshcommand|fsmonitor|hookspath|askpass|gitproxy)|pager\..*|alias\..*|"
    r"sequence\.editor|diff\.external|filter\..*|credential\..*|uploadpack\..*|include\..*|includeif\..*|"
    r".*\.(textconv|command|driver|helper|cmd|program|process)",
    re.IGNORECASE,
)
_GIT_GLOBAL_VALUES = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--config-env"})


def _git(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    i, configs = 0, []
    while i < len(args) and args[i].startswith("-"):
        option = args[i].split("=", 1)[0]
        if option in _GIT_GLOBAL_VALUES and "=" not in args[i]:
            i += 1
            if option in ("-c", "--config-env") and i < len(args):
                configs.append(args[i])
        elif option == "--config-env":
            configs.append(args[i].split("=", 1)[1])
        i += 1
    code_key = next((c.split("=", 1)[0] for c in configs if _GIT_CODE_KEYS.fullmatch(c.split("=", 1)[0])), None)
    if code_key:
        return Assessment("destructive", f"git -c {code_key} can make git run any program", cmd)
    if any(arg.startswith("--exec-path=") for arg in args[:i]):
        return Assessment("destructive", "git --exec-path= runs git's programs from another directory", cmd)
    if i >= len(args):
        return Assessment("read_only", "git without a subcommand only prints help or its version", cmd)
    return _git_subcommand(cmd, args[i], args[i + 1 :], ctx)


def _git_subcommand(cmd: SimpleCommand, sub: str, args: list[str], ctx: _Context) -> Assessment:
    parsed = _parse_args(
        args,
        "-m -F -C -c -b -B -u --message --file --output --format --pretty --sort --contains --no-contains "
        "--merged --no-merged --points-at",
    )
    flags, operands = parsed.flags, parsed.operands

    def verdict(risk: Risk, what: str) -> Assessment:
        return Assessment(risk, f"git {sub} {what}", cmd)

    if outputs := parsed.value("--output"):
        return _writes_risk(outputs, f"git {sub} writes to", cmd, ctx) or verdict("normal", f"writes to {outputs[0]}")
    if sub == "push":
        return verdict("destructive", "changes a remote")
    if sub in ("rebase", "filter-branch", "filter-repo"):
        return verdict("destructive", "rewrites commit history")
    if sub == "reset" and "--hard" in flags:
        return verdict("destructive", "--hard discards uncommitted changes")
    if sub == "clean" and flags & {"-f", "--force"}:
        return verdict("destructive", "-f deletes untracked files")
    if sub == "checkout" and ("--" in args or "." in operands or flags & {"-f", "--force"}):
        return verdict("destructive", "overwrites uncommitted changes")
    if sub == "switch" and flags & {"-f", "--force", "--discard-changes"}:
        return verdict("destructive", "discards uncommitted changes")
    if sub == "restore" and (not flags & {"-S", "--staged"} or flags & {"-W", "--worktree"}):
        return verdict("destructive", "overwrites uncommitted changes")
    if sub == "commit" and "--amend" in flags:
        return verdict("destructive", "--amend rewrites the last commit")
    if sub == "branch" and ("-D" in flags or (flags & {"-d", "--delete"} and flags & {"-f", "--force"})):
        return verdict("destructive", "-D deletes a branch even if it is not merged")
    if sub == "stash" and operands[:1] in (["drop"], ["clear"]):
        return verdict("destructive", f"{operands[0]} deletes stashed changes")
    if sub == "config" and (key := next((o for o in operands if _GIT_CODE_KEYS.fullmatch(o)), None)):
        return verdict("destructive", f"{key} can make git run any program")
    if sub == "config" and flags & {"--global", "--system"} and not _git_only_looks(sub, flags, operands):
        return verdict("destructive", "changes settings outside the workspace")
    if sub == "grep" and any(a.startswith(("-O", "--open-files-in-pager")) for a in args):
        return verdict("normal", "-O runs a program on the matches")
    if _git_only_looks(sub, flags, operands):
        return verdict("read_only", "only reads the repository")
    return verdict("normal", "changes the repository")


def _git_only_looks(sub: str, flags: set[str], operands: list[str]) -> bool:
    if sub in _GIT_READ_ONLY:
        return True
    if sub in ("branch", "tag"):  # listing, not creating or deleting
        changes = _GIT_BRANCH_CHANGES if sub == "branch" else _GIT_TAG_CHANGES
        return bool(not operands or flags & {"-l", "--list"}) and not flags & changes
    if sub == "remote":
        return operands[:1] in ([], ["show"], ["get-url"])
    if sub == "stash":
        return operands[:1] in (["list"], ["show"])
    if sub == "config":
        return bool(flags & {"--get", "--get-all", "--get-regexp", "-l", "--list"}) or operands[:1] == ["get"]
    if sub == "reflog":
        return operands[:1] in ([], ["show"])
    return False


_GIT_BRANCH_CHANGES = frozenset(
    "-d -D --delete -m -M --move -c -C --copy -f --force -u --set-upstream-to --unset-upstream "
    "--edit-description".split()
)
_GIT_TAG_CHANGES = frozenset("-d --delete -a --annotate -s --sign -u -m -F -f --force".split())
_PUBLISHERS = {
    ("npm", "publish"), ("yarn", "publish"), ("pnpm", "publish"), ("cargo", "publish"),
    ("poetry", "publish"), ("twine", "upload"), ("gem", "push"), ("uv", "publish"),
}  # fmt: skip
_CONTAINER_CLEANUP = re.compile(r"(rm|rmi|kill|system prune|(container|image|volume|network|builder) (rm|prune))\b")


def _package_or_container(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    operands = _parse_args(args, "-H --host -c --context --config -l --log-level").operands
    release = next((verb for verb in operands if (name, verb) in _PUBLISHERS), None)
    if release:
        return Assessment("destructive", f"{name} {release} releases a package publicly", cmd)
    if name in ("docker", "podman") and _CONTAINER_CLEANUP.match(" ".join(operands[:2])):
        return Assessment("destructive", f"{name} {' '.join(operands[:2])} removes containers, images or data", cmd)
    if name == "uv" and operands[:2] == ["pip", "uninstall"]:
        return Assessment("destructive", "uv pip uninstall removes installed packages", cmd)
    if name.startswith("pip") and operands[:1] == ["uninstall"]:
        return Assessment("destructive", f"{name} uninstall removes installed packages", cmd)
    return Assessment("normal", f"{name} may change files or run code", cmd)


def _crontab(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    if args == ["-l"]:
        return Assessment("read_only", "crontab -l only lists scheduled jobs", cmd)
    return Assessment("destructive", "crontab changes scheduled jobs", cmd)


def _network_download(cmd: SimpleCommand, name: str, args: list[str], ctx: _Context) -> Assessment:
    if name == "curl":
        outputs = _parse_args(args, "-o --output -d --data -H --header -u --user -X --request -A -e").value(
            "-o", "--output"
        )
    else:
        parsed = _parse_args(args, "-O --output-document -P --directory-prefix -o --output-file")
        outputs = parsed.value("-O", "--output-document", "-P", "--directory-prefix", "-o", "--output-file")
    outputs = [o for o in outputs if o != "-"]
    return _writes_risk(outputs, f"{name} writes to", cmd, ctx) or Assessment(
        "normal", f"{name} downloads from the network", cmd
    )


_CHECKERS = {
    "rm": _rm,
    "unlink": _rm,
    **dict.fromkeys(_WRITERS, _file_writer),
    "sed": _sed,
    "dd": _dd,
    "find": _find,
    # everything split_commands looks through, so each is as risky as what it runs
    **dict.fromkeys(("env", "nohup", "time", "nice", "timeout", "command", "exec", "xargs", "sudo", "doas",
                     "stdbuf", "builtin", "setsid", "unbuffer", "ionice", "taskset", "chroot", "flock", "strace",
                     "ltrace", "valgrind", "eval", "trap", "watch", "alias"), _wrapper),
    **dict.fromkeys(("sh", "bash", "zsh", "dash", "ksh", "ash", "mksh"), _shell),
    **dict.fromkeys(("export", "declare", "typeset", "local", "readonly"), _declare),
    "source": _source,
    ".": _source,
    "git": _git,
    **dict.fromkeys(("npm", "yarn", "pnpm", "cargo", "poetry", "twine", "gem", "uv", "docker", "podman", "pip"),
                    _package_or_container),
    **dict.fromkeys(_INTERPRETERS, _interpreter),
    "crontab": _crontab,
    "curl": _network_download,
    "wget": _network_download,
}  # fmt: skip
