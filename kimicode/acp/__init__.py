"""`kimicode acp`: the agent served over the Agent Client Protocol (stdio) for editors."""
