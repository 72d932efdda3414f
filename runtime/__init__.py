"""The composition root: the ``vigil`` command, the demo and the benchmarks' runner.

It is the only package that knows every domain; it builds each process's resources and hands
them down. The kernel ``vigil/`` knows none of the domains (docs/architecture.md).
"""
