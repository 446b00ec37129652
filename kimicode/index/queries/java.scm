; Java additions: enums, records, constructors, fields, type references.

(enum_declaration
  name: (identifier) @name) @definition.enum

(record_declaration
  name: (identifier) @name) @definition.class

(annotation_type_declaration
  name: (identifier) @name) @definition.interface

(constructor_declaration
  name: (identifier) @name) @definition.method

(enum_constant
  name: (identifier) @name) @definition.constant

(field_declaration
  declarator: (variable_declarator name: (identifier) @name)) @definition.field
