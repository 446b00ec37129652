"""Guarded tool-call decoding: the JSON prefix scanner and the K2 section guard."""

import json
import random

import jsonschema  # installed with mcp
import pytest

from kimicode.backends.k2.guard import ToolCallGuard
from kimicode.backends.k2.json_prefix import JsonPrefix, SchemaJsonPrefix

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

TOOLS = ["read", "read_file", "grep", "web_search", "run-shell2"]


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
    ([("web_search", '{"query": "k2 \\"moe\\" \\u00e9"}'), ("run-shell2", '{"cmd": "ls", "t": null}')], 0, " \n"),
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
    assert not guard.allows("functions.web.")
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
    assert guard.forced_text() == ("_search:2", False)
    guard.advance("_search:")
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
    "{", "}", ":", '"', " ", "\n", "functions", "functions.", ".", "read", "_file", "web_search", "grep:", ":0",
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



# ---------------------------------------------------------- SchemaJsonPrefix

FILE = {"type": "object", "additionalProperties": False, "required": ["path"], "properties": {
    "path": {"type": "string", "description": "d", "title": "Path"},
    "offset": {"type": "integer", "minimum": 1, "default": 1},
    "limit": {"type": "integer"}}}
GREP = {"type": "object", "required": ["pattern", "mode"], "properties": {
    "pattern": {"type": "string"},
    "glob": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    "mode": {"type": "string", "enum": ["content", "files", "count"]},
    "ignore_case": {"type": "boolean"},
    "scale": {"type": "number"}}}
EDIT = {"type": "object", "required": ["path", "edits", "meta"], "properties": {
    "path": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "edits": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["old", "new"],
        "properties": {"old": {"type": "string"}, "new": {"type": "string"}, "all": {"type": "boolean"}}}},
    "meta": {"type": "object", "required": ["level"],
             "properties": {"owner": {"type": "string"}, "level": {"type": "integer"}}}}}
REF = {"$defs": {"Point": {"type": "object", "required": ["x", "y"],
                           "properties": {"x": {"type": "number"}, "y": {"type": "number"}}},
                 "Color": {"type": "string", "enum": ["red", "green", 'say "hi"']}},
       "type": "object", "required": ["at", "color"], "properties": {
           "at": {"$ref": "#/$defs/Point"},
           "path": {"type": "array", "items": {"$ref": "#/$defs/Point"}},
           "color": {"$ref": "#/$defs/Color", "description": "c"},
           "note": {"anyOf": [{"$ref": "#/$defs/Color"}, {"type": "null"}]}}}

SCHEMA_DOCS = {
    "file": (FILE, ['{"path": "src/a.py"}', '{ "offset" : 10 , "path":"x\\"y \\u00e9", "limit": -3 }',
                    '{"path":"","limit":0}']),
    "grep": (GREP, ['{"pattern": "a.*b", "mode": "count"}',
                    '{"mode":"files","glob":null,"pattern":"x","ignore_case":false,"scale":-1.5e3}',
                    '{"pattern":"p","glob":"*.py","mode":"content","scale":0}']),
    "edit": (EDIT, ['{"path":"a","edits":[{"old":"x","new":"y"}],"meta":{"level":2}}',
                    '{"meta":{"owner":"me","level":0},"tags":["a", "b c", ""],"path":"p",\n'
                    ' "edits":[{"new":"", "old":"z","all":true},{"old":"1","new":"2"}]}',
                    '{"tags":[],"path":"","edits":[ {"old":"","new":""} ],"meta":{"level":-7}}']),
    "ref": (REF, ['{"at":{"x":1,"y":2.5},"color":"red"}',
                  '{"color":"green","path":[{"y":0,"x":-1},{"x":3,"y":4}],"note":null,"at":{"x":0,"y":0}}',
                  '{"note":"say \\"hi\\"","at":{"x":1e2,"y":1},"color":"red","path":[]}']),
}
ALL_SCHEMA_DOCS = [(schema, doc) for schema, docs in SCHEMA_DOCS.values() for doc in docs]


def schema_valid(text, schema):
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def test_the_corpus_is_valid_against_its_schemas():
    for schema, doc in ALL_SCHEMA_DOCS:
        assert schema_valid(doc, schema), doc


@pytest.mark.parametrize("schema,doc", ALL_SCHEMA_DOCS)
def test_schema_docs_are_accepted_at_every_prefix_and_complete_only_at_the_end(schema, doc):
    scanner = SchemaJsonPrefix(schema, top_level_object=True)
    end = len(doc.rstrip())
    for i, ch in enumerate(doc, 1):
        assert scanner.feed(ch), (doc[:i])
        assert scanner.complete == (i >= end), (doc, i)


@pytest.mark.parametrize("schema,doc", ALL_SCHEMA_DOCS)
def test_schema_docs_in_random_chunks(schema, doc):
    rng = random.Random(3)
    for _ in range(20):
        scanner, i = SchemaJsonPrefix(schema), 0
        while i < len(doc):
            step = rng.randint(1, 12)
            assert scanner.feed(doc[i:i + step]), doc[:i + step]
            i += step
        assert scanner.complete


@pytest.mark.parametrize("schema,doc", ALL_SCHEMA_DOCS)
def test_schema_closing_text_gives_a_valid_document_from_every_prefix(schema, doc):
    scanner = SchemaJsonPrefix(schema, top_level_object=True)
    for i in range(len(doc) + 1):
        closing = scanner.closing_text()
        probe = scanner.copy()
        assert probe.feed(closing) and probe.complete, (doc[:i], closing)
        assert schema_valid(doc[:i] + closing, schema), (doc[:i], closing)
        if i < len(doc):
            scanner.feed(doc[i])


def test_closing_text_fills_required_keys_recursively():
    assert SchemaJsonPrefix(EDIT).closing_text() == '{"path":"","edits":[{"old":"","new":""}],"meta":{"level":0}}'
    scanner = SchemaJsonPrefix(EDIT)
    scanner.feed('{"meta":{"ow')
    assert scanner.closing_text() == 'ner":"","level":0},"path":"","edits":[{"old":"","new":""}]}'
    scanner = SchemaJsonPrefix(REF)
    scanner.feed('{"color":"say \\')
    assert scanner.closing_text() == '"hi\\""' + ',"at":{"x":0,"y":0}}'
    scanner = SchemaJsonPrefix(GREP)
    scanner.feed('{"pattern":"x",')
    assert scanner.closing_text() == '"mode":"content"}'  # after a comma a required key comes first


@pytest.mark.parametrize("schema,prefix,bad", [
    (FILE, "{", '"pathx'),            # undeclared key
    (FILE, "{", '"x"'),
    (FILE, '{"path":"a",', '"path"'),  # duplicate key
    (FILE, '{"path":"a",', '"pa'),     # ... refused as soon as no other key fits
    (FILE, '{"path":"a",', '"offset": "1"'),  # a string where an integer goes
    (FILE, '{"path":"a","offset":', "1.5"),  # a fraction in an integer
    (FILE, '{"path":"a","offset":1', "e3"),
    (FILE, '{"path":"a","offset":', "true"),
    (FILE, "{", "}"),                 # closing before a required key
    (FILE, '{"offset": 1', "}"),
    (FILE, '{"path":"a","offset":1,"limit":2', ","),  # no declared key is left
    (FILE, "{", '"\\u0070ath"'),      # keys are spelled plainly
    (FILE, "", "["),
    (FILE, "", '"path"'),
    (GREP, '{"pattern":"x","mode":"', "cop"),  # enum mismatch
    (GREP, '{"pattern":"x","mode":"count', 's"'),
    (GREP, '{"pattern":"x","mode":"', '"'),
    (GREP, '{"pattern":"x","mode":', "null"),
    (GREP, '{"pattern":"x","glob":', "1"),
    (GREP, '{"pattern":"x","glob":', "["),
    (GREP, '{"pattern":"x","ignore_case":', '"true"'),
    (GREP, '{"pattern":"x","ignore_case":', "nul"),
    (EDIT, '{"tags":[', "1"),
    (EDIT, '{"tags":["a",', "null"),
    (EDIT, '{"edits":[{"old":"a"', "}"),
    (EDIT, '{"edits":[{"old":"a","new":"b"},', '{"x"'),
    (EDIT, '{"meta":', "[]"),
    (EDIT, '{"meta":{"level":', '"1"'),
    (REF, '{"at":{"x":1', "}"),
    (REF, '{"color":', '"blue"'),
    (REF, '{"at":', "null"),
    (REF, '{"note":"re', "d2"),
])
def test_schema_violations_are_rejected_and_leave_state_alone(schema, prefix, bad):
    scanner = SchemaJsonPrefix(schema, top_level_object=True)
    assert scanner.feed(prefix), prefix
    before = scanner.closing_text(), scanner.complete
    assert not scanner.accepts(bad)
    assert not scanner.feed(bad)
    assert (scanner.closing_text(), scanner.complete) == before
    assert schema_valid(prefix + scanner.closing_text(), schema)


def test_non_object_schemas_at_the_top():
    scanner = SchemaJsonPrefix({"type": "array", "items": {"type": "integer"}})
    assert scanner.feed("[1, 2")
    assert not scanner.accepts(".5")
    assert scanner.closing_text() == "]"
    assert SchemaJsonPrefix({"anyOf": [{"type": "integer"}, {"type": "null"}]}).closing_text() == "null"
    number = SchemaJsonPrefix({"type": "number"})
    assert number.feed("12") and number.complete and number.accepts("e5")
    assert not SchemaJsonPrefix({"type": "string"}).accepts("1")
    assert SchemaJsonPrefix({"type": ["string", "integer"]}).accepts("1")
    assert SchemaJsonPrefix({"const": "k"}).accepts('"k"') and not SchemaJsonPrefix({"const": "k"}).accepts('"j')


UNSUPPORTED = {"type": "object", "required": ["x"], "properties": {
    "x": {"not": {"type": "string"}},
    "y": {"allOf": [{"type": "string"}, {"minLength": 1}]},
    "z": {"type": "array", "prefixItems": [{"type": "integer"}]},
    "w": {"enum": [1, "two"]},
    "v": {"type": "object", "additionalProperties": {"type": "integer"}},
    "u": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
    "t": {"$ref": "#/$defs/Missing"},
    "s": {"type": "object"}}}


def test_unsupported_keywords_fall_back_to_generic_json():
    doc = ('{"x": {"any": [1, "two", null]}, "y": 5, "z": ["a"], "w": "str", "v": {"k": "not int", "j": [true]},'
           ' "u": 1.5, "t": false, "s": {"free": {}}}')
    scanner = SchemaJsonPrefix(UNSUPPORTED)
    for i, ch in enumerate(doc, 1):
        assert scanner.feed(ch), doc[:i]
        probe = scanner.copy()
        assert probe.feed(probe.closing_text()) and probe.complete, doc[:i]
        assert loads_ok(doc[:i] + scanner.closing_text(), want_object=True), doc[:i]
    assert scanner.complete
    # Generic sub-values are still JSON, and the declared keys still rule.
    scanner = SchemaJsonPrefix(UNSUPPORTED)
    assert scanner.feed('{"v": {"k": 1')
    assert not scanner.accepts("]")
    assert scanner.feed("}")
    assert not scanner.accepts(', "q"')
    assert not scanner.accepts("}")  # "x" is required
    assert scanner.closing_text() == ',"x":null}'


def test_bounds_are_not_checked_but_the_type_is():
    schema = {"type": "object", "required": ["s", "n"], "properties": {
        "s": {"type": "string", "pattern": "^a+$", "minLength": 3, "format": "email"},
        "n": {"type": "integer", "minimum": 5, "maximum": 7}}}
    scanner = SchemaJsonPrefix(schema)
    assert scanner.accepts('{"s":"b","n":100}')
    assert not scanner.accepts('{"s":1')
    assert not scanner.accepts('{"n":5.5')
    assert scanner.closing_text() == '{"s":"xxx","n":5}'  # fillers respect minLength and minimum


def test_a_ref_cycle_is_checked_down_to_the_cycle():
    tree = {"$defs": {"Tree": {"type": "object", "required": ["v"], "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/Tree"}}}}},
        "$ref": "#/$defs/Tree"}
    assert SchemaJsonPrefix(tree).accepts('{"v":1,"kids":[{"v":"anything"}, 2]}')
    assert not SchemaJsonPrefix(tree).accepts('{"v":"s"')
    assert SchemaJsonPrefix(tree).closing_text() == '{"v":0}'


def test_schema_copy_is_independent():
    scanner = SchemaJsonPrefix(EDIT)
    scanner.feed('{"edits": [')
    clone = scanner.copy()
    assert clone.feed('{"old":"a","new":"b"}],"path":"p","meta":{"level":1}}')
    assert clone.complete and not scanner.complete
    assert scanner.closing_text() == '{"old":"","new":""}],"path":"","meta":{"level":0}}'


# ------------------------------------------------- ToolCallGuard with schemas

def tool(name, parameters=None):
    function = {"name": name, "description": "d"}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


SCHEMA_TOOLS = [tool("read_file", FILE), tool("grep", GREP), tool("multi", EDIT), tool("ref_tool", REF),
                tool("free", {"type": "object"}), "ping"]
TOOL_SCHEMAS = {"read_file": FILE, "grep": GREP, "multi": EDIT, "ref_tool": REF,
                "free": {"type": "object"}, "ping": {"type": "object"}}


def assert_calls_fit_schemas(guard, schemas):
    for name, args in guard.calls:
        assert schema_valid(args, schemas[name]), (name, args)
        assert isinstance(json.loads(args), dict)


SCHEMA_SECTIONS = [
    ([("read_file", SCHEMA_DOCS["file"][1][1]), ("ping", '{"any": [1]}')], 0, ""),
    ([("grep", SCHEMA_DOCS["grep"][1][1]), ("multi", SCHEMA_DOCS["edit"][1][1])], 2, " "),
    ([("ref_tool", SCHEMA_DOCS["ref"][1][1]), ("free", '{"k": {"deep": null}}')], 5, "\n"),
]


def test_tools_may_be_names_or_openai_entries():
    guard = ToolCallGuard(SCHEMA_TOOLS)
    feed_all(guard, [(CALL_BEGIN, True), ("functions.read_file:0", False), (ARG_BEGIN, True)])
    assert not guard.allows('{"x"')
    assert guard.forced_text() == ('{"path":""}', False)
    by_kwarg = ToolCallGuard(["read_file"], schemas={"read_file": FILE})
    feed_all(by_kwarg, [(CALL_BEGIN, True), ("functions.read_file:0", False), (ARG_BEGIN, True)])
    assert not by_kwarg.allows('{"x"') and by_kwarg.allows('{"path"')
    overridden = ToolCallGuard([tool("read_file", FILE)], schemas={"read_file": {"type": "object"}})
    feed_all(overridden, [(CALL_BEGIN, True), ("functions.read_file:0", False), (ARG_BEGIN, True)])
    assert overridden.allows('{"x"')
    with pytest.raises(ValueError):
        ToolCallGuard([tool("bad name", FILE)])


@pytest.mark.parametrize("calls,first_index,ws", SCHEMA_SECTIONS)
def test_a_schema_valid_section_in_random_splits_yields_its_calls(calls, first_index, ws):
    rng = random.Random(5)
    for _ in range(20):
        guard = ToolCallGuard(SCHEMA_TOOLS, first_index)
        feed_all(guard, split_randomly(section_tokens(calls, first_index, ws), rng))
        assert guard.done
        assert guard.calls == [(name, args.strip()) for name, args in calls]
        assert_calls_fit_schemas(guard, TOOL_SCHEMAS)


@pytest.mark.parametrize("calls,first_index,ws", SCHEMA_SECTIONS)
def test_forcing_gives_schema_valid_calls_from_every_reachable_state(calls, first_index, ws):
    tokens = char_tokens(section_tokens(calls, first_index, ws))
    for cut in range(len(tokens)):
        guard = ToolCallGuard(SCHEMA_TOOLS, first_index)
        feed_all(guard, tokens[:cut])
        force_to_end(guard)
        assert_calls_fit_schemas(guard, TOOL_SCHEMAS)


def test_call_end_waits_for_the_required_keys():
    guard = ToolCallGuard(SCHEMA_TOOLS)
    feed_all(guard, [(CALL_BEGIN, True), ("functions.grep:0", False), (ARG_BEGIN, True), ('{"pattern": "x"', False)])
    assert not guard.allows("}")
    guard.advance(', "mode": "count"}')
    assert guard.allows(CALL_END, special=True)


_SCHEMA_FRAGMENTS = _FRAGMENTS + [
    '"path"', '"pattern":', '"mode": "count"', '"mode":"', "cou", '"edits": [', '"old"', '"new"', '"tags":["',
    '"meta": {"level": 1}', '"at": {"x": 1, "y": 2}', '"color": "red"', '"x"', '"y"', '"note":', "1.5", "3",
    "functions.grep:", "functions.multi:", "functions.ref_tool:", "functions.read_file:", "functions.ping:",
    '"offset":', '"glob":', '"level":', '"all":', ",", "},{",
]


def test_an_adversarial_model_can_only_produce_schema_valid_calls():
    rng = random.Random(99)
    finished = 0
    for episode in range(300):
        guard = ToolCallGuard(SCHEMA_TOOLS, first_index=episode % 3)
        for _ in range(60):
            if guard.done:
                break
            candidates = []
            for _ in range(20):
                if rng.random() < 0.5:
                    candidates.append(("".join(rng.choice(_SCHEMA_FRAGMENTS) for _ in range(rng.randint(1, 3))),
                                       False))
                else:
                    candidates.append(random_candidate(rng))
            chosen = next(((t, s) for t, s in candidates if guard.allows(t, special=s)), None)
            text, special = chosen or guard.forced_text()
            guard.advance(text, special=special)
        finished += guard.done
        assert_calls_fit_schemas(guard, TOOL_SCHEMAS)
        force_to_end(guard)
        assert_calls_fit_schemas(guard, TOOL_SCHEMAS)
    assert finished > 0


def kimicode_tool_classes():
    from kimicode.tools.files import EditFile, MultiEdit, ReadFile, WriteFile
    from kimicode.tools.plan import UpdatePlan
    from kimicode.tools.search import Glob, Grep, ListDir
    from kimicode.tools.shell import Shell
    from kimicode.tools.symbols import FindReferences, FindSymbol, RepoMap
    return [ReadFile, WriteFile, EditFile, MultiEdit, Glob, Grep, ListDir, Shell, UpdatePlan, FindSymbol,
            FindReferences, RepoMap]


@pytest.mark.parametrize("tool_class", kimicode_tool_classes(), ids=lambda c: c.name)
@pytest.mark.parametrize("start", ["", "{", '{"'])
def test_real_tool_schemas_force_a_valid_call(tool_class, start):
    tools = [c.schema() for c in kimicode_tool_classes()]
    guard = ToolCallGuard(tools)
    feed_all(guard, [(CALL_BEGIN, True), (f"functions.{tool_class.name}:0", False), (ARG_BEGIN, True)])
    if start and not guard.allows(start):
        assert start == '{"' and not tool_class.schema()["function"]["parameters"].get("properties")
        return
    if start:
        guard.advance(start)
    force_to_end(guard)
    (name, args), = guard.calls
    assert name == tool_class.name
    jsonschema.validate(json.loads(args), tool_class.schema()["function"]["parameters"])
    tool_class.Params.model_validate_json(args)  # what the agent will parse it with


def test_a_tool_name_with_a_dot_is_refused_up_front():
    """K2's parsers keep only what follows the last "." of functions.NAME:INDEX."""
    with pytest.raises(ValueError, match="cannot carry"):
        ToolCallGuard(["files.read"])


def test_forced_numbers_fit_open_intervals():
    schema = {"type": "object", "properties": {"p": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
              "q": {"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": -0.5}}, "required": ["p", "q"]}
    prefix = SchemaJsonPrefix(schema, top_level_object=True)
    assert prefix.feed("{")
    document = json.loads("{" + prefix.closing_text())
    jsonschema.validate(document, schema)


SOURCE = {"type": "object", "required": ["source"], "properties": {"source": {"anyOf": [
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": False},
    {"type": "object", "properties": {"url": {"type": "string"}, "depth": {"type": "integer"}}, "required": ["url"],
     "additionalProperties": False},
]}}}


@pytest.mark.parametrize("value", ['{"source": {"path": "a.py"}}', '{"source": {"url": "https://x", "depth": 2}}'])
def test_a_union_of_object_schemas_takes_a_value_of_either_branch(value):
    scanner = SchemaJsonPrefix(SOURCE)
    assert scanner.feed(value) and scanner.complete


def test_a_union_of_object_schemas_still_checks_keys_and_their_values():
    scanner = SchemaJsonPrefix(SOURCE)
    assert scanner.feed('{"source": {"url": "u", ')
    assert not scanner.accepts('"nope"')  # a key no branch declares
    assert not scanner.accepts('"depth": "deep"')  # declared an integer
    assert scanner.feed('"depth": 3')
    assert schema_valid('{"source": {"url": "u", "depth": 3' + scanner.closing_text(), SOURCE)
    forced = SchemaJsonPrefix(SOURCE)
    assert schema_valid(forced.closing_text(), SOURCE)  # forced from nothing: the first branch's shortest value
