; C++ additions, placed before the C patterns (c.scm) so they take precedence.
; `Foo::bar` definitions get "Foo" as scope via @receiver.

(function_definition
  declarator: [
    (function_declarator
      declarator: (qualified_identifier
        scope: (_) @receiver
        name: [(identifier) (destructor_name) (operator_name)] @name))
    (reference_declarator
      (function_declarator
        declarator: (qualified_identifier
          scope: (_) @receiver
          name: [(identifier) (operator_name)] @name)))
    (pointer_declarator
      declarator: (function_declarator
        declarator: (qualified_identifier
          scope: (_) @receiver
          name: [(identifier) (operator_name)] @name)))
  ]) @definition.method

; Methods defined or declared inside a class body.
(function_definition
  declarator: (function_declarator
    declarator: [(field_identifier) (destructor_name) (operator_name)] @name)) @definition.method

(field_declaration
  declarator: (function_declarator
    declarator: [(field_identifier) (destructor_name) (operator_name)] @name)) @definition.method

(class_specifier
  name: (type_identifier) @name
  body: (_)) @definition.class

(namespace_definition
  name: [(namespace_identifier) (nested_namespace_specifier)] @name) @definition.module

(alias_declaration
  name: (type_identifier) @name) @definition.type

(concept_definition
  name: (identifier) @name) @definition.type

(call_expression
  function: [
    (qualified_identifier name: (identifier) @name)
    (template_function name: (identifier) @name)
    (qualified_identifier name: (template_function name: (identifier) @name))
    (field_expression field: (template_method name: (field_identifier) @name))
  ]) @reference.call

(new_expression
  type: (type_identifier) @name) @reference.class

(base_class_clause
  (type_identifier) @name) @reference.class
