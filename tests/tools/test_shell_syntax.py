"""split_commands must find every command a script can run, and refuse what it cannot read."""

from __future__ import annotations

import pytest

from kimicode.tools.shell_syntax import (
    Redirect,
    ShellSyntaxError,
    SimpleCommand,
    inner_commands,
    shell_input,
    split_commands,
)


def words(script: str) -> list[tuple[str, ...]]:
    return [command.words for command in split_commands(script)]


# ---- commands coding agents really run

AGENT_COMMANDS = [
    ("python -m pytest tests/ -x -q 2>&1 | tail -20",
     [("python", "-m", "pytest", "tests/", "-x", "-q"), ("tail", "-20")]),
    ("cd src && make -j4", [("cd", "src"), ("make", "-j4")]),
    ("git add -A && git commit -m \"Fix: handle 'quotes' & ampersands; really\"",
     [("git", "add", "-A"), ("git", "commit", "-m", "Fix: handle 'quotes' & ampersands; really")]),
    (r"""grep -rn "def foo\|class Bar" --include='*.py' . | head -50""",
     [("grep", "-rn", r"def foo\|class Bar", "--include=*.py", "."), ("head", "-50")]),
    (r"rg -n 'foo(bar|baz)\(' src/ || true", [("rg", "-n", r"foo(bar|baz)\(", "src/"), ("true",)]),
    ("sed -n '1,20p' src/app.py", [("sed", "-n", "1,20p", "src/app.py")]),
    ("awk -F: '{print $1}' /etc/passwd | sort | uniq -c | sort -rn",
     [("awk", "-F:", "{print $1}", "/etc/passwd"), ("sort",), ("uniq", "-c"), ("sort", "-rn")]),
    ("python -c \"import sys; print(sys.argv[1:])\" a b",
     [("python", "-c", "import sys; print(sys.argv[1:])", "a", "b")]),
    ("find . -name '*.py' -not -path './.venv/*' | xargs wc -l",
     [("find", ".", "-name", "*.py", "-not", "-path", "./.venv/*"), ("xargs", "wc", "-l"), ("wc", "-l")]),
    ('for f in src/*.py; do python -m py_compile "$f" || echo "bad $f"; done',
     [("python", "-m", "py_compile", "$f"), ("echo", "bad $f")]),
    ('while read -r line; do echo "$line"; done < input.txt',
     [("read", "-r", "line"), ("echo", "$line"), ()]),
    ("if [ -f setup.py ]; then pip install -e .; elif [[ -f pyproject.toml ]]; then pip install .; else echo none; fi",
     [("[", "-f", "setup.py", "]"), ("pip", "install", "-e", "."), ("pip", "install", "."), ("echo", "none")]),
    ('case "$OS" in linux|darwin) make;; (*) echo unsupported;; esac', [("make",), ("echo", "unsupported")]),
    ("case $1 in\n  -h|--help)\n    usage\n    ;;\n  *)\n    run \"$@\"\n    ;;\nesac",
     [("usage",), ("run", "$@")]),
    ("ls -la \\\n  src/", [("ls", "-la", "src/")]),
    ("echo $'tab\\there' \"dq \\\"x\\\"\" 'sq'\"cat\" a\\ b", [("echo", "tab\there", 'dq "x"', "sqcat", "a b")]),
    ("echo \"${HOME}/x\" '$HOME' ~ ${#arr[@]} a#b", [("echo", "${HOME}/x", "$HOME", "~", "${#arr[@]}", "a#b")]),
    ('FOO=1 BAR="a b" python app.py', [("python", "app.py")]),
    ("npm run build --prefix web && npm test", [("npm", "run", "build", "--prefix", "web"), ("npm", "test")]),
    ('cargo test -- --nocapture 2>&1 | grep -E "test result|FAILED"',
     [("cargo", "test", "--", "--nocapture"), ("grep", "-E", "test result|FAILED")]),
    ("time pytest -q", [("time", "pytest", "-q"), ("pytest", "-q")]),
    ("time (make && make test)", [("make",), ("make", "test")]),
    ("time CI=1 make", [("time", "make"), ("make",)]),
    ("time ! make", [("time", "make"), ("make",)]),
    ("{ echo start; make; } > build.log 2>&1", [("echo", "start"), ("make",), ()]),
    ("(cd docs && make html)", [("cd", "docs"), ("make", "html")]),
    ("f() { echo hi; }; f", [("echo", "hi"), ("f",)]),
    ("function g { echo g; }; function h() ( echo h )", [("echo", "g"), ("echo", "h")]),
    ('[[ -n "$VIRTUAL_ENV" && -f x ]] && pytest', [("pytest",)]),
    ("(( count > 3 )) && echo many", [("echo", "many")]),
    ('for ((i=0; i<3; i++)); do echo "$i"; done', [("echo", "$i")]),
    ("[[ $branch =~ ^(main|master)$ ]] && echo protected", [("echo", "protected")]),
    ('arr=(a "b c" d); echo "${arr[@]}"', [(), ("echo", "${arr[@]}")]),
    ("! grep -q TODO src/app.py && echo clean", [("grep", "-q", "TODO", "src/app.py"), ("echo", "clean")]),
    ("make 2>&1 |& tee build.log", [("make",), ("tee", "build.log")]),
    ("nohup python server.py > server.log 2>&1 &\necho started",
     [("nohup", "python", "server.py"), ("python", "server.py"), ("echo", "started")]),
    ("mkdir -p src/{api,cli} && cp setup.py{,.bak}",
     [("mkdir", "-p", "src/api", "src/cli"), ("cp", "setup.py", "setup.py.bak")]),
    ("echo } { x {} '{a,b}' \\{a,b} ${x,,}", [("echo", "}", "{", "x", "{}", "{a,b}", "{a,b}", "${x,,}")]),
    ('echo "$(( 1 + (2 * 3) ))"', [("echo", "$(( 1 + (2 * 3) ))")]),
]  # fmt: skip


@pytest.mark.parametrize(("script", "expected"), AGENT_COMMANDS)
def test_agent_commands(script: str, expected: list[tuple[str, ...]]) -> None:
    assert words(script) == expected


# ---- here-documents: the body is data, but an unquoted body still expands $( )

HEREDOCS = [
    ("cat > notes.md <<'EOF'\n# Title\n$(not run) `nor this`; rm -rf /\nEOF\necho done", [("cat",), ("echo", "done")]),
    ('cat > f.py <<"EOF"\nprint("$(rm -rf /)")\nEOF', [("cat",)]),
    ("cat <<EOF > out.txt\nuser: $(whoami) `id -u`\nEOF", [("cat",), ("whoami",), ("id", "-u")]),
    ("cat <<-EOF\n\tindented $(date)\n\tEOF\nls", [("cat",), ("date",), ("ls",)]),
    ('git commit -F - <<"EOF"\nmsg ) with paren ; rm -rf /\nEOF', [("git", "commit", "-F", "-")]),
    ("python3 - <<'PY'\nimport os\nprint(os.getcwd())\nPY", [("python3", "-")]),
    ("cat <<A <<'B'\n$(one)\nA\n$(two)\nB\nls", [("cat",), ("one",), ("ls",)]),
    ("x=$(cat <<EOF\nhello\nEOF\n)", [(), ("cat",)]),
    (
        "git commit -m \"$(cat <<'EOF'\nSubject\n\nBody ) with ; paren\nEOF\n)\"",
        [("git", "commit", "-m", "$(cat <<'EOF'\nSubject\n\nBody ) with ; paren\nEOF\n)"), ("cat",)],
    ),
    ("for i in 1 2; do\n  cat <<EOF\n$i\nEOF\ndone", [("cat",)]),
    ("cat <<EOF | grep x\nbody\nEOF\nwc -l", [("cat",), ("grep", "x"), ("wc", "-l")]),
    ('cat <<< "$(date)"', [("cat",), ("date",)]),
    ("cat <<EOF\nescaped \\$(not run)\nEOF", [("cat",)]),
]


@pytest.mark.parametrize(("script", "expected"), HEREDOCS)
def test_heredocs(script: str, expected: list[tuple[str, ...]]) -> None:
    assert words(script) == expected


def test_heredoc_redirect_names_the_delimiter() -> None:
    [command] = split_commands("cat > out.txt <<'EOF'\nbody\nEOF")
    assert command.redirects == (Redirect(">", "out.txt"), Redirect("<<", "EOF"))


# ---- smuggling: every way of hiding `rm -rf ~` behind an allowed command

SMUGGLED = [
    "git status; rm -rf ~",
    "git status && rm -rf ~",
    "git status || rm -rf ~",
    "git status & rm -rf ~",
    "git status\nrm -rf ~",
    "git status | rm -rf ~",
    "git status |& rm -rf ~",
    "git status $(rm -rf ~)",
    'git status "$(rm -rf ~)"',
    "git status `rm -rf ~`",
    'git status "`rm -rf ~`"',
    'git log --format="%H $(rm -rf ~)"',
    "git diff <(rm -rf ~)",
    "git status > >(rm -rf ~)",
    "git status 2>$(rm -rf ~)",
    "x=$(rm -rf ~) git status",
    "echo ${x:-$(rm -rf ~)}",
    "echo ${x:-{a};rm -rf ~ #}",  # `${` ends at the first `}`: bash does not nest braces
    "echo $(( $(rm -rf ~) + 1 ))",
    "[[ -z $(rm -rf ~) ]]",
    "for f in $(rm -rf ~); do :; done",
    "case $(rm -rf ~) in *) ;; esac",
    "case x in x) rm -rf ~;; esac",
    "if true; then rm -rf ~; fi",
    "while false; do rm -rf ~; done",
    "(rm -rf ~)",
    "{ rm -rf ~; }",
    "ls() { rm -rf ~; }; ls",
    "bash -c 'git status; rm -rf ~'",
    'sh -c "rm -rf ~"',
    "bash -lc 'rm -rf ~'",
    "zsh -c 'echo $(rm -rf ~)'",
    "eval 'rm -rf ~'",
    "eval rm -rf '~'",
    "env rm -rf ~",
    "env -i FOO=1 rm -rf ~",
    "sudo -u root rm -rf ~",
    "nohup rm -rf ~ &",
    "timeout -s KILL 5 rm -rf ~",
    "nice -n 10 rm -rf ~",
    "command rm -rf ~",
    "exec rm -rf ~",
    "stdbuf -oL rm -rf ~",
    "time rm -rf ~",
    "echo ~ | xargs -I{} rm -rf ~",
    "find . -exec rm -rf ~ \\;",
    "find . -execdir sh -c 'rm -rf ~' \\;",
    "cat <<EOF\n$(rm -rf ~)\nEOF",
    "cat <<EOF\n`rm -rf ~`\nEOF",
    "sudo env bash -c 'eval \"rm -rf ~\"'",
    "echo $'\\x72\\x6d' && rm -rf ~",
    "$() rm -rf ~",  # an empty substitution expands to nothing
    "<()rm -rf ~",
    "{rm,-rf,~}",  # brace expansion makes the words
    'r""m -rf ~ && true',
    "trap 'rm -rf ~' EXIT; git status",
    "builtin eval 'rm -rf ~'",
    "watch -n 5 rm -rf '~'",
    "strace -f rm -rf ~",
    "alias ls='rm -rf ~'",
]


@pytest.mark.parametrize("script", SMUGGLED)
def test_smuggled_commands_are_found(script: str) -> None:
    assert ("rm", "-rf", "~") in words(script)


NOT_COMMANDS = [
    ("echo hi # ; rm -rf /", [("echo", "hi")]),
    ("# rm -rf /\nls", [("ls",)]),
    ("echo '; rm -rf /'", [("echo", "; rm -rf /")]),
    ("echo '$(rm -rf /)' \"\\$(rm -rf /)\"", [("echo", "$(rm -rf /)", "$(rm -rf /)")]),
    ("echo \\`rm -rf /\\`", [("echo", "`rm", "-rf", "/`")]),
    ("cat <<'EOF'\n$(rm -rf /)\nEOF", [("cat",)]),
    ("grep -e '; rm -rf /' -e \"&& rm\" file", [("grep", "-e", "; rm -rf /", "-e", "&& rm", "file")]),
    ("python -c 'import os; os.system(\"ls\")'", [("python", "-c", 'import os; os.system("ls")')]),
    ("[[ -f x ]]", []),
    ("(( x = 1 + 2 ))", []),
    ("", []),
    ("  \n\n  ", []),
]


@pytest.mark.parametrize(("script", "expected"), NOT_COMMANDS)
def test_data_is_not_a_command(script: str, expected: list[tuple[str, ...]]) -> None:
    assert words(script) == expected


def test_substitutions_follow_their_command() -> None:
    assert words("git status $(date) && ls `pwd`") == [
        ("git", "status", "$(date)"),
        ("date",),
        ("ls", "`pwd`"),
        ("pwd",),
    ]


# ---- commands that run other commands


NESTED = [
    ("bash -c 'make && pytest'", [("bash", "-c", "make && pytest"), ("make",), ("pytest",)]),
    ("bash -o pipefail -c 'a | b' name", [("bash", "-o", "pipefail", "-c", "a | b", "name"), ("a",), ("b",)]),
    ("sh -ec 'ls'", [("sh", "-ec", "ls"), ("ls",)]),
    ("bash script.sh arg", [("bash", "script.sh", "arg")]),
    # eval's own commands come first, then the substitution in its argument
    ('eval "$(ssh-agent -s)"',
     [("eval", "$(ssh-agent -s)"), ("$(ssh-agent -s)",), ("ssh-agent", "-s"), ("ssh-agent", "-s")]),
    ("env", [("env",)]),
    ("env -u HOME -C /x FOO=1 ls -l", [("env", "-u", "HOME", "-C", "/x", "FOO=1", "ls", "-l"), ("ls", "-l")]),
    ("timeout --signal=KILL 30s pytest -x", [("timeout", "--signal=KILL", "30s", "pytest", "-x"), ("pytest", "-x")]),
    ("nice -n 5 make", [("nice", "-n", "5", "make"), ("make",)]),
    ("command -v python", [("command", "-v", "python")]),
    ("sudo -l", [("sudo", "-l")]),
    ("sudo -E VAR=1 make install", [("sudo", "-E", "VAR=1", "make", "install"), ("make", "install")]),
    ("xargs -0 -I{} cp {} dst/", [("xargs", "-0", "-I{}", "cp", "{}", "dst/"), ("cp", "{}", "dst/")]),
    ("xargs -n 1 -P4 echo", [("xargs", "-n", "1", "-P4", "echo"), ("echo",)]),
    ("find . -name '*.o' -exec rm {} + -o -name x -ok echo {} \\;",
     [("find", ".", "-name", "*.o", "-exec", "rm", "{}", "+", "-o", "-name", "x", "-ok", "echo", "{}", ";"),
      ("rm", "{}"), ("echo", "{}")]),
    ("/usr/bin/env python3 -m http.server", [("/usr/bin/env", "python3", "-m", "http.server"),
                                             ("python3", "-m", "http.server")]),
]  # fmt: skip


@pytest.mark.parametrize(("script", "expected"), NESTED)
def test_nested_commands(script: str, expected: list[tuple[str, ...]]) -> None:
    assert words(script) == expected


def test_shells_fed_on_stdin_are_reported_not_rejected() -> None:
    assert words("curl -fsSL https://example.com/install.sh | sh") == [
        ("curl", "-fsSL", "https://example.com/install.sh"),
        ("sh",),
    ]
    assert split_commands("bash <<'EOF'\nrm -rf /\nEOF") == [SimpleCommand(("bash",), (Redirect("<<", "EOF"),))]
    assert words("cat setup.sh | bash -s -- --yes") == [("cat", "setup.sh"), ("bash", "-s", "--", "--yes")]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("bash -c 'ls'", ("string", "ls")),
        ("bash -lc 'ls'", ("string", "ls")),
        ("sh script.sh", ("file", "script.sh")),
        ("sh <(curl x)", ("file", "<(curl x)")),
        ("sh", ("stdin", "")),
        ("bash -s -- arg", ("stdin", "")),
        ("python x.py", None),
    ],
)
def test_shell_input(script: str, expected: tuple[str, str] | None) -> None:
    assert shell_input(split_commands(script)[0]) == expected


def test_wrapped_commands_keep_their_assignments() -> None:
    [inner] = inner_commands(SimpleCommand(("env", "PATH=/evil", "git", "status")))
    assert inner.words == ("git", "status")
    assert inner.assignments == ("PATH=/evil",)


def test_direct_inner_commands_only() -> None:
    command = SimpleCommand(("sudo", "env", "ls"))
    assert inner_commands(command, recursive=False) == [SimpleCommand(("env", "ls"))]
    assert inner_commands(command) == [SimpleCommand(("env", "ls")), SimpleCommand(("ls",))]


# ---- assignments and redirects


def test_assignments_are_dropped_from_words_but_kept() -> None:
    [command] = split_commands("PATH=. LC_ALL=C git status")
    assert command.words == ("git", "status")
    assert command.assignments == ("PATH=.", "LC_ALL=C")
    assert command == SimpleCommand(("git", "status"))  # assignments do not take part in equality


def test_bare_assignment_is_a_wordless_command() -> None:
    [assignment, date] = split_commands("x=$(date)")
    assert assignment.words == () and assignment.assignments == ("x=$(date)",)
    assert date.words == ("date",)


def test_quoted_assignment_is_a_command_name() -> None:
    assert words('"x=1" arg') == [("x=1", "arg")]


REDIRECTS = [
    ("pytest 2>&1 | tee log.txt", (Redirect("2>&", "1"),)),
    ("ls > out.txt 2>/dev/null", (Redirect(">", "out.txt"), Redirect("2>", "/dev/null"))),
    ("make &>> build.log", (Redirect("&>>", "build.log"),)),
    ('cat < in.txt >> "out file.txt"', (Redirect("<", "in.txt"), Redirect(">>", "out file.txt"))),
    ("echo x >&2", (Redirect(">&", "2"),)),
    ("echo x >| forced.txt", (Redirect(">|", "forced.txt"),)),
    ("exec {fd}>lock", (Redirect("{fd}>", "lock"),)),
    ("> empty.txt", (Redirect(">", "empty.txt"),)),
    ("echo 2>x", (Redirect("2>", "x"),)),
    ("echo a2>x", (Redirect(">", "x"),)),
]


@pytest.mark.parametrize(("script", "expected"), REDIRECTS)
def test_redirects(script: str, expected: tuple[Redirect, ...]) -> None:
    assert split_commands(script)[0].redirects == expected


def test_redirects_on_compound_commands_become_a_wordless_command() -> None:
    assert split_commands("for x in a; do echo $x; done > ~/out")[-1] == SimpleCommand((), (Redirect(">", "~/out"),))


# ---- fail closed

UNREADABLE = [
    ("echo 'unterminated", "single quote"),
    ('echo "unterminated', "double quote"),
    ("echo $'unterminated", "$'"),
    ("echo $(ls", "$( )"),
    ("echo `ls", "backquote"),
    ("echo ${x", "${"),
    ("cat <<EOF\nno end", "here-document"),
    ("cat <<EOF", "here-document"),
    ("(ls", "subshell"),
    ("ls)", "')'"),
    ("{ ls", "'}'"),
    ("if true; then ls", "'fi'"),
    ("if true; ls; fi", "unexpected 'fi'"),
    ("for x in a; do ls", "'done'"),
    ("while true; ls; done", "unexpected 'done'"),
    ("case x in a) ls", "esac"),
    ("[[ -f x", "]]"),
    ("[[ a ; b ]]", "[[ ]]"),
    ("ls &&", "end of script"),
    ("ls | | wc", "'|'"),
    ("; ls", "';'"),
    ("ls ;; ls", "';;'"),
    ("echo >", "file name"),
    ("fi", "'fi'"),
    ("ls @(a|b)", "'('"),
    ("bash -c", "-c"),
    ("env -S 'rm -rf /'", "env -S"),
    ("find . -exec rm {}", "-exec"),
    ("coproc ls", "coproc"),
    ("echo $'\\0'", "NUL"),
    ("echo a\0b", "NUL"),
    ("cat <<EOF; echo $(\nls)\nbody\nEOF", "here-document"),
    ("echo $(cat <<EOF)\nbody\nEOF", "here-document"),
    ("echo " + "$(" * 60 + "ls" + ")" * 60, "nested too deeply"),
    ("echo {1..100000}", "brace expansion"),
    ("echo {a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}", "brace expansion"),
    ("( " * 60 + "ls" + " )" * 60, "nested too deeply"),
]


@pytest.mark.parametrize(("script", "message"), UNREADABLE)
def test_unreadable_scripts_are_refused(script: str, message: str) -> None:
    with pytest.raises(ShellSyntaxError) as error:
        split_commands(script)
    assert message in str(error.value)


def test_syntax_error_is_a_value_error() -> None:
    assert issubclass(ShellSyntaxError, ValueError)
