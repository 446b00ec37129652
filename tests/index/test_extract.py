"""Tag extraction: one realistic fixture per language, plus robustness and speed."""

from __future__ import annotations

import os
import pathlib
import textwrap
import time

import pytest

from kimicode.index import languages
from kimicode.index.extract import extract


def _tags(path: str, source: str) -> set[tuple]:
    result = extract(path, textwrap.dedent(source).encode())
    assert result.language == languages.language_for(path)
    return {(t.kind, t.name, t.category, t.line, t.scope) for t in result.tags}


def _signatures(path: str, source: str) -> dict[str, str]:
    result = extract(path, textwrap.dedent(source).encode())
    return {t.name: t.signature for t in result.tags if t.kind == "def"}


PYTHON = '''\
    import os
    MAX_SIZE = 10

    class Config(Base):
        def load(self, path: Path) -> "Config":
            def helper():
                return os.path.join(path)
            return helper()

    def main():
        Config().load("x")
'''


def test_python():
    assert _tags("pkg/config.py", PYTHON) >= {
        ("def", "MAX_SIZE", "constant", 2, ""),
        ("def", "Config", "class", 4, ""),
        ("ref", "Base", "class", 4, ""),
        ("def", "load", "method", 5, "Config"),
        ("ref", "Path", "type", 5, ""),
        ("def", "helper", "function", 6, "Config.load"),
        ("ref", "join", "call", 7, ""),
        ("def", "main", "function", 10, ""),
        ("ref", "Config", "call", 11, ""),
        ("ref", "load", "call", 11, ""),
    }
    sigs = _signatures("pkg/config.py", PYTHON)
    assert sigs["load"] == 'def load(self, path: Path) -> "Config":'
    assert sigs["Config"] == "class Config(Base):"


def test_python_definition_span_and_order():
    result = extract("a.py", textwrap.dedent(PYTHON).encode())
    config = next(t for t in result.tags if t.name == "Config" and t.kind == "def")
    assert (config.line, config.end_line) == (4, 8)
    assert list(result.tags) == sorted(result.tags, key=lambda t: (t.line, t.kind, t.name))
    assert len(set(result.tags)) == len(result.tags)


def test_go():
    source = """\
        package main

        const MaxSize = 10

        type Server struct {
        \tName string
        }

        type Handler interface {
        \tServe(s *Server) error
        }

        func (s *Server) Start() error {
        \tfmt.Println(s.Name)
        \treturn nil
        }

        func NewServer(name string) *Server { return &Server{Name: name} }
    """
    assert _tags("cmd/main.go", source) >= {
        ("def", "MaxSize", "constant", 3, ""),
        ("def", "Server", "class", 5, ""),
        ("def", "Name", "field", 6, "Server"),
        ("def", "Handler", "interface", 9, ""),
        ("def", "Serve", "method", 10, "Handler"),
        ("ref", "Server", "type", 10, ""),
        ("def", "Start", "method", 13, "Server"),
        ("ref", "Println", "call", 14, ""),
        ("def", "NewServer", "function", 18, ""),
    }
    assert _signatures("main.go", source)["Start"] == "func (s *Server) Start() error {"


def test_rust():
    source = """\
        const MAX: usize = 10;

        pub struct Point { x: i32 }

        pub enum Shape { Circle, Square }

        pub trait Area { fn area(&self) -> f64; }

        impl Area for Point {
            fn area(&self) -> f64 { helper(1) }
        }

        impl Point {
            pub fn new() -> Self { Point { x: 0 } }
        }

        fn helper(n: i32) -> f64 { let p = Point::new(); println!("{}", n); 0.0 }

        macro_rules! square { ($x:expr) => { $x * $x }; }

        mod inner { pub fn f() {} }
    """
    assert _tags("src/lib.rs", source) >= {
        ("def", "MAX", "constant", 1, ""),
        ("def", "Point", "class", 3, ""),
        ("def", "x", "field", 3, "Point"),
        ("def", "Shape", "enum", 5, ""),
        ("def", "Circle", "constant", 5, "Shape"),
        ("def", "Area", "interface", 7, ""),
        ("def", "area", "method", 7, "Area"),
        ("ref", "Area", "implementation", 9, ""),
        ("def", "area", "method", 10, "Point"),
        ("ref", "helper", "call", 10, ""),
        ("def", "new", "method", 14, "Point"),
        ("def", "helper", "function", 17, ""),
        ("ref", "new", "call", 17, ""),
        ("ref", "println", "call", 17, ""),
        ("def", "square", "macro", 19, ""),
        ("def", "inner", "module", 21, ""),
        ("def", "f", "function", 21, "inner"),
    }


def test_java():
    source = """\
        package demo;

        public class Shop extends Base implements Runnable {
            static final int MAX = 10;

            enum Color { RED, GREEN }

            public Shop(String name) { super(); }

            public void run() {
                Item item = new Item();
                item.price();
            }
        }

        interface Priced { int price(); }
    """
    assert _tags("src/Shop.java", source) >= {
        ("def", "Shop", "class", 3, ""),
        ("ref", "Base", "class", 3, ""),
        ("ref", "Runnable", "implementation", 3, ""),
        ("def", "MAX", "field", 4, "Shop"),
        ("def", "Color", "enum", 6, "Shop"),
        ("def", "RED", "constant", 6, "Shop.Color"),
        ("def", "Shop", "method", 8, "Shop"),
        ("def", "run", "method", 10, "Shop"),
        ("ref", "Item", "class", 11, ""),
        ("ref", "Item", "type", 11, ""),
        ("ref", "price", "call", 12, ""),
        ("def", "Priced", "interface", 16, ""),
        ("def", "price", "method", 16, "Priced"),
    }


def test_c():
    source = """\
        #include <stdio.h>
        #define MAX 10
        #define SQ(x) ((x) * (x))

        typedef struct point {
            int x;
        } point_t;

        enum color { RED, GREEN };

        int area(point_t *p);

        static char *name(void) { return "x"; }

        int area(point_t *p) {
            printf("%d", SQ(p->x));
            return p->x;
        }
    """
    result = extract("src/geo.c", textwrap.dedent(source).encode())
    assert {(t.kind, t.name, t.category, t.line, t.end_line, t.scope) for t in result.tags} >= {
        ("def", "MAX", "macro", 2, 2, ""),
        ("def", "SQ", "macro", 3, 3, ""),
        ("def", "point", "class", 5, 7, ""),
        ("def", "point_t", "type", 5, 7, ""),
        ("def", "x", "field", 6, 6, "point"),
        ("def", "color", "enum", 9, 9, ""),
        ("def", "RED", "constant", 9, 9, "color"),
        ("def", "area", "function", 11, 11, ""),  # the prototype
        ("ref", "point_t", "type", 11, 11, ""),
        ("def", "name", "function", 13, 13, ""),
        ("def", "area", "function", 15, 18, ""),
        ("ref", "printf", "call", 16, 16, ""),
        ("ref", "SQ", "call", 16, 16, ""),
    }
    assert extract("geo.h", b"int f(void);").language == "c"


def test_cpp():
    source = """\
        namespace geo {

        class Shape : public Base {
        public:
            Shape();
            virtual double area() const = 0;
            void draw() { render(1); }
        };

        double Shape::area() const {
            return std::sqrt(2.0);
        }

        enum class Kind { Circle, Square };

        using Id = int;

        }  // namespace geo
    """
    assert _tags("src/shape.cpp", source) >= {
        ("def", "geo", "module", 1, ""),
        ("def", "Shape", "class", 3, "geo"),
        ("ref", "Base", "class", 3, ""),
        ("def", "Shape", "method", 5, "geo.Shape"),
        ("def", "area", "method", 6, "geo.Shape"),
        ("def", "draw", "method", 7, "geo.Shape"),
        ("ref", "render", "call", 7, ""),
        ("def", "area", "method", 10, "geo.Shape"),
        ("ref", "sqrt", "call", 11, ""),
        ("def", "Kind", "enum", 14, "geo"),
        ("def", "Circle", "constant", 14, "geo.Kind"),
        ("def", "Id", "type", 16, "geo"),
    }


def test_ruby():
    source = """\
        module Shop
          MAX = 10

          class Cart < Base
            def add(item)
              items.push(item)
              Item.new
            end

            def self.build
              new
            end
          end
        end
    """
    tags = _tags("lib/shop.rb", source)
    assert tags >= {
        ("def", "Shop", "module", 1, ""),
        ("def", "MAX", "constant", 2, "Shop"),
        ("def", "Cart", "class", 4, "Shop"),
        ("ref", "Base", "class", 4, ""),
        ("def", "add", "method", 5, "Shop.Cart"),
        ("ref", "push", "call", 6, ""),
        ("ref", "Item", "class", 7, ""),
        ("ref", "new", "call", 7, ""),
        ("def", "build", "method", 10, "Shop.Cart"),
    }
    # Local variables are not calls (the stock query needs locals analysis for that).
    assert not any(t[1] == "item" for t in tags)


def test_javascript():
    source = """\
        class Cart {
          constructor() { this.items = []; }
          add(item) { this.items.push(item); }
        }

        function total(cart) {
          return sum(cart.items);
        }

        const render = () => <Cart />;
    """
    assert _tags("web/cart.jsx", source) == {
        ("def", "Cart", "class", 1, ""),
        ("def", "add", "method", 3, "Cart"),
        ("ref", "push", "call", 3, ""),
        ("def", "total", "function", 6, ""),
        ("ref", "sum", "call", 7, ""),
        ("def", "render", "function", 10, ""),
        ("ref", "Cart", "call", 10, ""),
    }


TYPESCRIPT = """\
    export interface Shape {
      area(): number;
      name: string;
    }

    export type Id = string | number;

    export enum Color { Red, Green = 2 }

    export abstract class Base implements Shape {
      abstract area(): number;
      describe(): string { return format(this.name); }
    }

    export function first<T>(items: T[]): T | undefined {
      return items[0];
    }

    export const MAX = 10;

    namespace Geo { export const pi = 3.14; }
"""


def test_typescript():
    assert _tags("src/shape.ts", TYPESCRIPT) >= {
        ("def", "Shape", "interface", 1, ""),
        ("def", "area", "method", 2, "Shape"),
        ("def", "name", "field", 3, "Shape"),
        ("def", "Id", "type", 6, ""),
        ("def", "Color", "enum", 8, ""),
        ("def", "Green", "constant", 8, "Color"),
        ("def", "Base", "class", 10, ""),
        ("ref", "Shape", "implementation", 10, ""),
        ("def", "area", "method", 11, "Base"),
        ("def", "describe", "method", 12, "Base"),
        ("ref", "format", "call", 12, ""),
        ("def", "first", "function", 15, ""),
        ("def", "MAX", "constant", 19, ""),
        ("def", "Geo", "module", 21, ""),
        ("def", "pi", "constant", 21, "Geo"),
    }
    sigs = _signatures("src/shape.ts", TYPESCRIPT)
    assert sigs["first"] == "export function first<T>(items: T[]): T | undefined {"
    assert sigs["Id"] == "export type Id = string | number;"


def test_tsx_component():
    source = """\
        import React from "react";

        interface Props { title: string }

        export function Header({ title }: Props) {
          return <div><Title text={title} /></div>;
        }

        export const Footer = (props: Props) => <footer>{props.title}</footer>;
    """
    tags = _tags("ui/Header.tsx", source)
    assert tags >= {
        ("def", "Props", "interface", 3, ""),
        ("def", "Header", "function", 5, ""),
        ("ref", "Props", "type", 5, ""),
        ("ref", "Title", "call", 6, ""),
        ("def", "Footer", "function", 9, ""),
    }
    assert not any(t[1] in {"div", "footer"} for t in tags)  # HTML elements are not components


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("a.pyi", "python"),
        ("a.mjs", "javascript"),
        ("a.cts", "typescript"),
        ("a.tsx", "tsx"),
        ("a.hpp", "cpp"),
        ("A.CPP", "cpp"),
        ("README.md", None),
        ("Makefile", None),
    ],
)
def test_language_for(path, language):
    assert languages.language_for(path) == language


def test_unknown_extension_is_listed_without_tags():
    result = extract("docs/notes.txt", b"def f(): pass")
    assert (result.path, result.language, result.tags) == ("docs/notes.txt", None, ())


def test_bad_input_does_not_raise():
    invalid_utf8 = b"def caf\xe9():\n    return '\xff\xfe'\n\nclass Ok:\n    pass\n"
    tags = extract("bad.py", invalid_utf8).tags
    assert ("Ok", "class") in {(t.name, t.category) for t in tags}
    junk = os.urandom(64 * 1024)
    for path in ("junk.py", "junk.ts", "junk.c", "junk.rs", "junk.rb"):
        assert extract(path, junk).language is not None
    assert extract("empty.go", b"").tags == ()


def test_syntax_error_keeps_earlier_definitions():
    source = b"def before():\n    pass\n\nclass Early:\n    x = 1\n\ndef broken(:\n    )))\n"
    names = {t.name for t in extract("broken.py", source).tags if t.kind == "def"}
    assert {"before", "Early"} <= names


def test_long_signature_is_truncated():
    source = ("def f(" + ", ".join(f"a{i}" for i in range(200)) + "):\n    pass\n").encode()
    (tag,) = extract("long.py", source).tags
    assert len(tag.signature) == 200


def test_throughput_on_installed_package(capsys):
    rich = pytest.importorskip("rich")
    files = sorted(pathlib.Path(rich.__file__).parent.rglob("*.py"))
    sources = [(str(f), f.read_bytes()) for f in files]
    start = time.perf_counter()
    count = sum(len(extract(path, source).tags) for path, source in sources)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nextract over rich: {len(sources)} files, {count} tags in {elapsed:.2f}s "
              f"= {len(sources) / elapsed:.0f} files/s, {count / elapsed:.0f} tags/s")
    assert count > 0
