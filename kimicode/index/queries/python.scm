; Type annotations and base classes. Methods are derived in extract.py
; (a function whose nearest enclosing definition is a class).

(class_definition
  superclasses: (argument_list [
    (identifier) @name
    (attribute attribute: (identifier) @name)
  ])) @reference.class

(type [
  (identifier) @name
  (attribute attribute: (identifier) @name)
  (generic_type (identifier) @name)
]) @reference.type
