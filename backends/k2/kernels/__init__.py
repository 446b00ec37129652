"""Triton kernels of the K2 engine, one module per kernel, each with its torch reference.

Imported only on demand (they pull in triton). Tests run them on the CPU with
TRITON_INTERPRET=1, which must be set before these modules are imported."""
