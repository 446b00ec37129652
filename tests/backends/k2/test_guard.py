"""Guarded tool-call decoding: the JSON prefix scanner and the K2 section guard."""

import json
import random

import pytest

from kimicode.backends.k2.guard import JsonPrefix, ToolCallGuard

CALL_BEGIN = "<|tool_call_begin|>"
ARG_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"
SECTION_END = "<|tool_calls_section_end|>"

OBJECT_DOCS = [
    "{}",
    '{"a":1}',
    '{ "path" : "src/main.py" , "line": -0.5e+10 }',
    '{"n":[1,-0,0.25,3E5,2e-3,-12.5E+07,0e0,10,[],{}],"t":true,"f":false,"z":null}',
    r'{"s":"esc \" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00 \uabcD end"}',
    '{"u":"héllo — 日本 😀","m":"<|tool_call_end|> <b> {not json","\u007f":1}',
    '{"deep":{"a":[{"b":[[[]]]},{"c":{}}],"e":[ ]}}',
    '\t{\n  "k" : [ 1 , 2 ] ,\r\n "v":{ } }',
    '{"":""}',
    r'{"k\"e\u0041y" : [true, "\u00e9"], "z\\": {"q": 0}}',
    '{"cmd":"ls -la | grep x > out.txt","timeout":30.0,"env":{"A":"1"}}',
]
VALUE_DOCS = ["[]", "0", "-0.5e+10", '"x"', "true", "false", "null", '[1,{"a":[]},"s"]', "12", "1.5", " 7 "]


def loads_ok(text, want_object):
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) or not want_object


# ---------------------------------------------------------------- JsonPrefix

@pytest.mark.parametrize("want_object,docs", [(True, OBJECT_DOCS), (False, OBJECT_DOCS + VALUE_DOCS)])
def test_every_prefix_is_accepted_and_complete_exactly_when_it_parses(want_object, docs):
    for doc in docs:
        scanner = JsonPrefix(top_level_object=want_object)
        for i, ch in enumerate(doc, 1):
            assert scanner.feed(ch), (doc, i)
            assert scanner.complete == loads_ok(doc[:i], want_object), (doc, i)
        assert scanner.complete, doc


def test_object_docs_complete_only_at_their_last_char():
    for doc in OBJECT_DOCS:
        scanner = JsonPrefix()
        end = len(doc.rstrip())
        for i, ch in enumerate(doc, 1):
            scanner.feed(ch)
            assert scanner.complete == (i >= end), (doc, i)


def test_random_chunking_gives_the_same_verdict():
    rng = random.Random(7)
    for doc in OBJECT_DOCS:
        for _ in range(20):
            scanner, i = JsonPrefix(), 0
            while i < len(doc):
                step = rng.randint(1, 12)
                assert scanner.feed(doc[i:i + step])
                i += step
            assert scanner.complete


@pytest.mark.parametrize("prefix,bad", [
    ('{"a": 1,', "}"),
    ('{"a": 1, ', ' }'),
    ('{"a": [1,', "]"),
    ('{"a": ', "01"),
    ('{"a": 0', "1"),
    ('{"a": -', "a"),
    ('{"a": 1.', "e5"),
    ('{"a": ', ".5"),
    ('{"a": ', "+1"),
    ('{"a": 1e', "}"),
    ('{"a": tru', "e1"),
    ('{"a": ', "True"),
    ('{"a": nu', "l l"),
    ("{", "'a'"),
    ('{"a": ', "'x'"),
    ('{"a": "x', "\n"),
    ('{"a": "x', "\t"),
    ('{"a": "x', "\\x"),
    ('{"a": "\\u12', "G4"),
    ('{"a"', " 1"),
    ("{", ","),
    ("", "[1]"),
    ("", '"s"'),
    ("", "1"),
    ("{}", " {}"),
    ('{"a":1}', "}"),
    ("", "}"),
])
def test_invalid_continuations_are_rejected_and_leave_state_alone(prefix, bad):
    scanner = JsonPrefix()
    assert scanner.feed(prefix)
    before = scanner.closing_text(), scanner.complete
    assert not scanner.accepts(bad)
    assert not scanner.feed(bad)
    assert (scanner.closing_text(), scanner.complete) == before
    assert loads_ok(prefix + scanner.closing_text(), want_object=True)


def test_top_level_values_other_than_objects_need_opting_in():
    assert not JsonPrefix().accepts("[1]")
    assert JsonPrefix(top_level_object=False).accepts("[1]")
    scanner = JsonPrefix(top_level_object=False)
    assert scanner.feed("1 ")
    assert not scanner.accepts("2")


@pytest.mark.parametrize("want_object,docs", [(True, OBJECT_DOCS), (False, OBJECT_DOCS + VALUE_DOCS)])
def test_closing_text_completes_every_prefix(want_object, docs):
    for doc in docs:
        scanner = JsonPrefix(top_level_object=want_object)
        for i, ch in enumerate(doc):
            closing = scanner.closing_text()
            probe = scanner.copy()
            assert probe.feed(closing), (doc[:i], closing)
            assert probe.complete, (doc[:i], closing)
            assert loads_ok(doc[:i] + closing, want_object), (doc[:i], closing)
            scanner.feed(ch)


def test_copy_is_independent():
    scanner = JsonPrefix()
    scanner.feed('{"a": [')
    clone = scanner.copy()
    clone.feed("1]}")
    assert clone.complete and not scanner.complete
    assert scanner.closing_text() == "]}"


# ------------------------------------------------------------ ToolCallGuard

TOOLS = ["read", "read_file", "grep", "web.search", "run-shell2"]


def section_tokens(calls, first_index=0, ws=""):
    """A whole section as (text, special) tokens, ordinary text unsplit."""
    tokens = []
    for k, (name, args) in enumerate(calls):
        tokens += [(ws, False), (CALL_BEGIN, True), (f"{ws}functions.{name}:{first_index + k}{ws}", False),
                   (ARG_BEGIN, True), (ws + args + ws, False), (CALL_END, True)]
    tokens += [(ws, False), (SECTION_END, True)]
    return [t for t in tokens if t[0]]


def split_randomly(tokens, rng):
    out = []
    for text, special in tokens:
        if special:
            out.append((text, True))
            continue
        i = 0
        while i < len(text):
            step = rng.randint(1, 8)
            out.append((text[i:i + step], False))
            i += step
    return out


def char_tokens(tokens):
    """One token per character of ordinary text: every reachable cut point."""
    return [piece for text, special in tokens
            for piece in ([(text, True)] if special else [(c, False) for c in text])]


SECTIONS = [
    ([("read_file", '{"path": "a.py"}')], 0, ""),
    ([("read", "{}"), ("read_file", '{"path":"<|tool_call_end|>"}'), ("grep", '{"q":"x","n":[1,2.5e-3]}')], 4, ""),
    ([("web.search", '{"query": "k2 \\"moe\\" \\u00e9"}'), ("run-shell2", '{"cmd": "ls", "t": null}')], 0, " \n"),
    ([("grep", OBJECT_DOCS[3]), ("read", OBJECT_DOCS[7])], 9, "\t"),
]


def feed_all(guard, tokens):
    for text, special in tokens:
        assert guard.allows(text, special=special), (text, special)
        guard.advance(text, special=special)


@pytest.mark.parametrize("calls,first_index,ws", SECTIONS)
def test_a_valid_section_in_random_splits_yields_its_calls(calls, first_index, ws):
    rng = random.Random(1)
    for _ in range(30):
        guard = ToolCallGuard(TOOLS, first_index)
        feed_all(guard, split_randomly(section_tokens(calls, first_index, ws), rng))
        assert guard.done
        assert guard.calls == [(name, args.strip()) for name, args in calls]  # ws around JSON is dropped


def test_text_spanning_grammar_parts_is_checked_char_by_char():
    guard = ToolCallGuard(TOOLS)
    feed_all(guard, [(CALL_BEGIN, True), ("functions", False), (".read", False), ("_file:0", False),
                     (ARG_BEGIN, True), ('{"path": "a', False), ('"}', False), ("  ", False)])
    assert guard.allows(CALL_END, special=True)
    assert not guard.allows("}")


def test_wrong_tool_name_is_rejected_at_the_first_bad_char():
    guard = ToolCallGuard(TOOLS)
    guard.advance(CALL_BEGIN, special=True)
    assert guard.allows("functions.rea")
    assert not guard.allows("functions.reax")
    assert not guard.allows("function.read")
    assert not guard.allows("functions.web_")
    for spaced in ("func tions.grep", "functions .grep", "functions. grep", "functions.gr ep", "functions.grep :0"):
        assert not guard.allows(spaced), spaced
    assert guard.allows(" \n functions.grep:0 ")  # ws around the id is fine
    guard.advance("functions.gr")
    assert not guard.allows("x")
    assert not guard.allows("ep:1")
    assert guard.allows("ep:0")


def test_a_name_that_prefixes_another_works_both_ways():
    for name in ("read", "read_file"):
        guard = ToolCallGuard(["read_file", "read"])
        feed_all(guard, section_tokens([(name, "{}")]))
        assert guard.calls == [(name, "{}")]
    guard = ToolCallGuard(["read_file", "read"])
    guard.advance(CALL_BEGIN, special=True)
    assert not guard.allows("functions.read_:0")
    assert not guard.allows("functions.re:0")


def test_the_index_must_be_the_running_call_index():
    guard = ToolCallGuard(TOOLS, first_index=3)
    guard.advance(CALL_BEGIN, special=True)
    assert not guard.allows("functions.grep:2")
    assert not guard.allows("functions.grep:30")
    assert not guard.allows("functions.grep:03")
    assert guard.allows("functions.grep:")  # a prefix of the id is fine
    feed_all(guard, [("functions.grep:3", False), (ARG_BEGIN, True), ("{}", False), (CALL_END, True),
                     (CALL_BEGIN, True)])
    assert not guard.allows("functions.grep:3")
    assert guard.allows("functions.grep:4")


def test_argument_begin_waits_for_a_complete_id():
    guard = ToolCallGuard(TOOLS, first_index=10)
    guard.advance(CALL_BEGIN, special=True)
    for text in ("functions.", "gre", "p", ":", "1"):
        assert not guard.allows(ARG_BEGIN, special=True), text
        guard.advance(text)
    assert not guard.allows(ARG_BEGIN, special=True)
    guard.advance("0")
    assert guard.allows(ARG_BEGIN, special=True)
    guard.advance(" ")
    assert guard.allows(ARG_BEGIN, special=True)


def test_call_end_waits_for_a_complete_json_object():
    guard = ToolCallGuard(TOOLS)
    feed_all(guard, [(CALL_BEGIN, True), ("functions.grep:0", False), (ARG_BEGIN, True)])
    for text in ('{"q"', ":", ' "a', '"', ', "n": [1', "]"):
        assert not guard.allows(CALL_END, special=True), text
        guard.advance(text)
    assert not guard.allows(CALL_END, special=True)
    guard.advance("}")
    assert guard.allows(CALL_END, special=True)
    assert not guard.allows(SECTION_END, special=True)


def test_other_special_tokens_never_pass_inside_a_section():
    guard = ToolCallGuard(TOOLS)
    for text, special in char_tokens(section_tokens([("grep", '{"q":"x"}')])):
        for other in ("<|im_end|>", "<think>", "<|tool_calls_section_begin|>", "<|im_middle|>"):
            assert not guard.allows(other, special=True)
        guard.advance(text, special=special)


def test_ordinary_text_never_spells_a_marker():
    guard = ToolCallGuard(TOOLS)
    assert not guard.allows(CALL_BEGIN)
    guard.advance(CALL_BEGIN, special=True)
    guard.advance("functions.grep:0")
    assert not guard.allows(ARG_BEGIN)
    guard.advance(ARG_BEGIN, special=True)
    guard.advance('{"q": "')
    assert guard.allows(CALL_END)  # inside a JSON string it is just text
    guard.advance('"}')
    assert not guard.allows(CALL_END)
    assert not guard.allows(" " + CALL_END)


def test_advance_raises_on_what_allows_refuses():
    guard = ToolCallGuard(TOOLS)
    with pytest.raises(ValueError):
        guard.advance("hello")
    with pytest.raises(ValueError):
        guard.advance("<|im_end|>", special=True)
    guard.advance(CALL_BEGIN, special=True)  # state survived the failures


def test_without_tools_only_the_section_end_is_allowed():
    guard = ToolCallGuard([])
    assert not guard.allows(CALL_BEGIN, special=True)
    assert guard.forced_text() == (SECTION_END, True)
    guard.advance(SECTION_END, special=True)
    assert guard.done and guard.calls == []
    assert not guard.allows(" ")
    with pytest.raises(RuntimeError):
        guard.forced_text()


def test_a_section_needs_at_least_one_call():
    guard = ToolCallGuard(TOOLS)
    assert not guard.allows(SECTION_END, special=True)
    assert guard.allows(" \n")
    assert guard.forced_text() == (CALL_BEGIN, True)


def test_bad_tool_names_are_refused_up_front():
    with pytest.raises(ValueError):
        ToolCallGuard(["ok", "bad name"])
    with pytest.raises(ValueError):
        ToolCallGuard(["a:b"])


def test_forced_text_examples():
    guard = ToolCallGuard(TOOLS, first_index=2)
    guard.advance(CALL_BEGIN, special=True)
    assert guard.forced_text() == ("functions.grep:2", False)
    guard.advance("functions.web")
    assert guard.forced_text() == (".search:2", False)
    guard.advance(".search:")
    assert guard.forced_text() == ("2", False)
    guard.advance("2")
    assert guard.forced_text() == (ARG_BEGIN, True)
    guard.advance(ARG_BEGIN, special=True)
    assert guard.forced_text() == ("{}", False)
    guard.advance('{"q": "ab')
    assert guard.forced_text() == ('"}', False)
    guard.advance('"}')
    assert guard.forced_text() == (CALL_END, True)
    guard.advance(CALL_END, special=True)
    assert guard.forced_text() == (SECTION_END, True)


def force_to_end(guard, limit=6):
    for _ in range(limit):
        if guard.done:
            break
        text, special = guard.forced_text()
        assert text
        assert guard.allows(text, special=special), (text, special)
        guard.advance(text, special=special)
    assert guard.done


def assert_calls_are_sound(guard, names):
    for name, args in guard.calls:
        assert name in names
        assert isinstance(json.loads(args), dict)


@pytest.mark.parametrize("calls,first_index,ws", SECTIONS)
def test_forcing_finishes_from_every_reachable_state(calls, first_index, ws):
    tokens = char_tokens(section_tokens(calls, first_index, ws))
    for cut in range(len(tokens)):
        guard = ToolCallGuard(TOOLS, first_index)
        feed_all(guard, tokens[:cut])
        force_to_end(guard)
        assert_calls_are_sound(guard, TOOLS)


def test_forcing_finishes_inside_json_prefixes_of_the_corpus():
    for doc in OBJECT_DOCS:
        for cut in range(len(doc) + 1):
            guard = ToolCallGuard(TOOLS)
            feed_all(guard, [(CALL_BEGIN, True), ("functions.read:0", False), (ARG_BEGIN, True)])
            if cut:
                guard.advance(doc[:cut])
            force_to_end(guard, limit=3)
            assert_calls_are_sound(guard, TOOLS)


# ----------------------------------------------------- an adversarial model

_FRAGMENTS = [
    '{"', '":', '"}', '", "', "true", "null", "false", "1.5e", "-0", "e+", "\\u00", "\\", '\\"', ", ", "]", "[",
    "{", "}", ":", '"', " ", "\n", "functions", "functions.", ".", "read", "_file", "web.search", "grep:", ":0",
    ":1", "0", "1", "2", "é日😀", "<|", "|>", "<b>", "\x01", "'", "NaN",
] + [m for m in ToolCallGuard.MARKERS]  # markers as ordinary text too
_SPECIALS = list(ToolCallGuard.MARKERS) + ["<|im_end|>", "<think>", "</think>"]
_ALPHABET = '{}[]":,\\ -+.0123456789eEtrufalsn<|>_\t\nxyz'


def random_candidate(rng):
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(_SPECIALS), True
    if roll < 0.7:
        return "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 3))), False
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 5))), False


def test_an_adversarial_model_can_only_produce_sound_calls():
    rng = random.Random(2024)
    finished = 0
    for episode in range(300):
        guard = ToolCallGuard(TOOLS, first_index=episode % 3)
        for _ in range(40):
            if guard.done:
                break
            candidates = [random_candidate(rng) for _ in range(20)]
            chosen = next(((t, s) for t, s in candidates if guard.allows(t, special=s)), None)
            text, special = chosen or guard.forced_text()
            guard.advance(text, special=special)
        finished += guard.done
        assert_calls_are_sound(guard, TOOLS)
        force_to_end(guard)
        assert_calls_are_sound(guard, TOOLS)
    assert finished > 0  # the random model sometimes closes a section on its own
