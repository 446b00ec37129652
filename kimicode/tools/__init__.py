"""Tools the model can call; one module per family."""
