; TypeScript/TSX additions, combined with the JavaScript tags query.

(interface_declaration
  name: (type_identifier) @name) @definition.interface

(type_alias_declaration
  name: (type_identifier) @name) @definition.type

(enum_declaration
  name: (identifier) @name) @definition.enum

(abstract_class_declaration
  name: (type_identifier) @name) @definition.class

[
  (method_signature name: (property_identifier) @name)
  (abstract_method_signature name: (property_identifier) @name)
] @definition.method

(property_signature
  name: (property_identifier) @name) @definition.field

(module
  name: [(identifier) (nested_identifier) (string)] @name) @definition.module

(internal_module
  name: [(identifier) (nested_identifier)] @name) @definition.module

(enum_body [
  (property_identifier) @name
  (enum_assignment name: (property_identifier) @name)
] @definition.constant)

; Exported `const X = <literal>`: the JS query only knows CommonJS exports.
(export_statement
  (lexical_declaration
    (variable_declarator
      name: (identifier) @name
      value: [(number) (string) (template_string) (object) (array) (true) (false) (new_expression)]) @definition.constant))

(implements_clause
  [(type_identifier) @name (generic_type name: (type_identifier) @name)]) @reference.implementation

(extends_type_clause
  [(type_identifier) @name (generic_type name: (type_identifier) @name)]) @reference.implementation
