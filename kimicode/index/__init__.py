"""The repository index: tree-sitter tags, a persistent symbol store, the ranked repo map."""
