"""The in-process K2 engine (extra "engine"). Import submodules explicitly:
nothing here may pull in torch at package import time."""
