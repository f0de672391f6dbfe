"""StackStorm's sensor base classes, for Python sensors run by Squall.

A pack's sensor subclasses ``PollingSensor`` (``poll`` every
``poll_interval`` seconds) or ``Sensor``, exactly as for StackStorm; see
``squall_st2.sensors``.
"""

from squall_st2.sensors import PollingSensor, Sensor

__all__ = ["PollingSensor", "Sensor"]
