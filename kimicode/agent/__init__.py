"""The agent core: the model ↔ tools loop, budgets and session log."""
