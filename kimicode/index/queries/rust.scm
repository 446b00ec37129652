; Rust additions. `impl` blocks are scopes (not tags) so methods get the
; implementing type as scope; functions directly in a `mod` stay functions.

(impl_item
  type: [
    (type_identifier) @scope.name
    (generic_type type: (type_identifier) @scope.name)
    (scoped_type_identifier name: (type_identifier) @scope.name)
  ]) @scope

(mod_item
  body: (declaration_list
    (function_item name: (identifier) @name) @definition.function))

(enum_item
  name: (type_identifier) @name) @definition.enum

(trait_item
  body: (declaration_list
    [
      (function_signature_item name: (identifier) @name)
      (function_item name: (identifier) @name)
    ] @definition.method))

(const_item
  name: (identifier) @name) @definition.constant

(static_item
  name: (identifier) @name) @definition.constant

(field_declaration
  name: (field_identifier) @name) @definition.field

(enum_variant
  name: (identifier) @name) @definition.constant

(call_expression
  function: (scoped_identifier name: (identifier) @name)) @reference.call

(call_expression
  function: (generic_function
    function: [
      (identifier) @name
      (scoped_identifier name: (identifier) @name)
      (field_expression field: (field_identifier) @name)
    ])) @reference.call
