"""StackStorm's Python API for pack code, on Squall.

A pack's Python actions and sensors are written as for StackStorm.
``squall pack build`` bundles the pack's actions into one WebAssembly
component of Squall's ``action`` world, and its sensors into one of the
``sensor`` world. This package is those components' side of the contract:

- ``squall_st2.actions``: ``Action`` (also importable as
  ``st2common.runners.base_action.Action`` and the older
  ``st2actions.runners.pythonrunner.Action``), its ``action_service`` and
  the dispatcher that runs the action an execution names.
- ``squall_st2.sensors``: ``Sensor`` and ``PollingSensor`` (also importable
  as ``st2reactor.sensor.base``), the ``sensor_service``, and the
  dispatcher that runs the sensor an instance is started for.
- Here: what both share, the logger and the datastore.
"""

import logging

from componentize_py_types import Err
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log

__all__ = ["DatastoreService", "KeyValuePair", "get_logger"]


class _LogHandler(logging.Handler):
    """Sends ``logging`` records to the execution's or the sensor's log."""

    def emit(self, record):
        if record.levelno >= logging.ERROR:
            level = _log.Level.ERROR
        elif record.levelno >= logging.WARNING:
            level = _log.Level.WARN
        elif record.levelno >= logging.INFO:
            level = _log.Level.INFO
        else:
            level = _log.Level.DEBUG
        try:
            _log.log(level, self.format(record))
        except Exception:  # a log line must never fail the caller
            pass


def get_logger(name):
    """A ``logging.Logger`` whose records are recorded by Squall: with the
    execution for an action, in the sensor's log for a sensor."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, _LogHandler) for h in logger.handlers):
        logger.addHandler(_LogHandler())
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return logger


class KeyValuePair:
    """One datastore entry, as StackStorm's ``list_values`` returns it."""

    def __init__(self, name, value, secret, expire_timestamp):
        self.name = name
        self.value = value
        self.secret = secret
        self.expire_timestamp = expire_timestamp

    def __repr__(self):
        return "KeyValuePair(name=%r, secret=%r)" % (self.name, self.secret)


def _kv_call(what, call, *args):
    try:
        return call(*args)
    except Err as e:
        raise ValueError("datastore %s failed: %s" % (what, e.value)) from None


class DatastoreService:
    """StackStorm's datastore methods, shared by ``action_service`` and
    ``sensor_service``.

    ``local=True`` (the default) names a key of the action or sensor itself
    (stored as ``<pack>.<ClassName>:<name>``); ``local=False`` names the
    tenant's shared key. ``decrypt`` reads a secret, ``encrypt`` stores one,
    and ``ttl`` is in seconds. ``scope`` is accepted for StackStorm's sake:
    Squall's datastore has one scope per tenant.
    """

    def _key(self, name, local):
        raise NotImplementedError

    def get_value(self, name, local=True, scope="system", decrypt=False):
        """The value of ``name``, or ``None`` when it is absent or expired.

        >>> self.action_service.get_value("last_run")
        '2026-12-05T01:00:00Z'
        """
        return _kv_call("get", _kv.get, self._key(name, local), bool(decrypt))

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        """Store ``value`` (made a string) under ``name``; ``True`` when stored.

        >>> self.action_service.set_value("token", "s3cret", ttl=3600, encrypt=True)
        True
        """
        ttl = None if ttl is None else int(ttl)
        _kv_call("set", _kv.set, self._key(name, local), str(value), ttl, bool(encrypt))
        return True

    def delete_value(self, name, local=True, scope="system"):
        """Remove ``name``; ``True`` when it existed.

        >>> self.action_service.delete_value("token")
        True
        """
        return _kv_call("delete", _kv.delete, self._key(name, local))

    def list_values(self, local=True, prefix=None):
        """Every live entry whose name starts with ``prefix``, in name order;
        secrets read as ``********``.

        >>> [kv.name for kv in self.action_service.list_values(prefix="seen.")]
        ['seen.a', 'seen.b']
        """
        entries = _kv_call("list", _kv.list, self._key(prefix or "", local))
        return [KeyValuePair(e.key, e.value, e.secret, e.expires_at) for e in entries]
