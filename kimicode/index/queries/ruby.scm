; Ruby additions. The stock query's "every identifier is a call" pattern
; needs local-variable analysis (#is-not? local) and is disabled in languages.py.

(assignment
  left: (constant) @name) @definition.constant

(superclass [
  (constant) @name
  (scope_resolution name: (constant) @name)
]) @reference.class

(call
  receiver: [
    (constant) @name
    (scope_resolution name: (constant) @name)
  ]) @reference.class
