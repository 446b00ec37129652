; Any other type name is a type reference. Listed last so that more specific
; patterns (implementation, class) win for the same name.

(type_identifier) @name @reference.type
