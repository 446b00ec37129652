; JSX (JavaScript and TSX): rendering a component counts as calling it.
; Lowercase names are HTML elements, not components.

((jsx_opening_element
  name: (identifier) @name) @reference.call
  (#match? @name "^[A-Z]"))

((jsx_self_closing_element
  name: (identifier) @name) @reference.call
  (#match? @name "^[A-Z]"))
