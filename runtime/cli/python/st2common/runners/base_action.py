"""StackStorm's ``Action`` base class, for Python actions run by Squall.

A pack's action subclasses ``Action`` and implements ``run(self, **parameters)``,
exactly as for StackStorm. It may return a value (the execution succeeds with
it), or ``(succeeded, value)``.
"""

from squall_st2.actions import Action

__all__ = ["Action"]
