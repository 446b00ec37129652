"""Model backends (import path `kimicode.backends`). Heavy ones load lazily."""
