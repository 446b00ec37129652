"""The interactive front end: a Textual app that renders the agent core's events."""
