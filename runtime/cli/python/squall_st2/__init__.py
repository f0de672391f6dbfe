"""StackStorm's Python API for actions, on Squall.

A pack's Python action is written as for StackStorm: a module with one
subclass of ``Action`` (imported from ``st2common.runners.base_action``, or
the older ``st2actions.runners.pythonrunner``) whose ``run(self, **parameters)``
returns a value, or ``(succeeded, value)``. ``squall pack build`` bundles the
pack's actions into one WebAssembly component of Squall's ``action`` world;
this module is that component's side of the contract:

- ``Action``: ``self.config`` (the pack's config), ``self.logger`` (lines
  recorded with the execution) and ``self.action_service`` (the datastore).
- ``ActionService``: StackStorm's ``get_value``, ``set_value``,
  ``delete_value`` and ``list_values``. ``local=True`` (the default) keeps a
  key to the action (``<pack>.<ActionClass>:<name>``), ``local=False`` names
  the tenant's shared key; ``decrypt`` and ``encrypt`` read and write
  secrets; ``ttl`` is in seconds.
- ``ActionWorld``: runs the action an execution names and shapes its result
  as StackStorm's python runner does: ``{"result", "stdout", "stderr",
  "exit_code"}``, plus ``"error"`` and ``"traceback"`` when ``run`` raised.
"""

import io
import json
import logging
import sys
import traceback

from componentize_py_types import Err
from wit_world.imports import config as _config
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log
from wit_world.imports import types as _types

__all__ = ["Action", "ActionService", "ActionWorld", "KeyValuePair"]


class _LogHandler(logging.Handler):
    """Sends ``logging`` records to the execution's log."""

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
        except Exception:  # a log line must never fail the action
            pass


def _logger(name):
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


class ActionService:
    """StackStorm's ``action_service``: the datastore, as an action sees it."""

    def __init__(self, prefix):
        self._prefix = prefix

    def _key(self, name, local):
        return self._prefix + name if local else name

    def get_value(self, name, local=True, scope="system", decrypt=False):
        """The value of ``name``, or ``None`` when it is absent or expired."""
        return _kv_call("get", _kv.get, self._key(name, local), bool(decrypt))

    def set_value(self, name, value, ttl=None, local=True, scope="system", encrypt=False):
        """Store ``value`` (a string) under ``name``; ``ttl`` in seconds."""
        ttl = None if ttl is None else int(ttl)
        _kv_call("set", _kv.set, self._key(name, local), str(value), ttl, bool(encrypt))
        return True

    def delete_value(self, name, local=True, scope="system"):
        """Remove ``name``; ``True`` when it existed."""
        return _kv_call("delete", _kv.delete, self._key(name, local))

    def list_values(self, local=True, prefix=None):
        """Every live entry whose name starts with ``prefix``."""
        entries = _kv_call("list", _kv.list, self._key(prefix or "", local))
        return [KeyValuePair(e.key, e.value, e.secret, e.expires_at) for e in entries]


class Action:
    """StackStorm's base class of a Python action."""

    def __init__(self, config=None, action_service=None):
        self.config = config if config is not None else {}
        self.action_service = action_service
        self.logger = _logger("%s.%s" % (type(self).__module__, type(self).__name__))

    def run(self, **kwargs):
        raise NotImplementedError("an action implements run(self, **parameters)")


class _Tee(io.TextIOBase):
    """Keeps what is written, and passes it on to the real stream."""

    def __init__(self, inner):
        self.inner = inner
        self.kept = io.StringIO()

    def write(self, text):
        self.kept.write(text)
        self.inner.write(text)
        return len(text)

    def flush(self):
        self.inner.flush()


def action_class(module):
    """The one subclass of ``Action`` that ``module`` defines."""
    found = [
        c
        for c in vars(module).values()
        if isinstance(c, type)
        and issubclass(c, Action)
        and c is not Action
        and c.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise TypeError(
            "%s.py must define exactly one subclass of Action (found: %s)"
            % (module.__name__.replace(".", "/"), names)
        )
    return found[0]


class ActionWorld:
    """Runs the action an execution names; ``actions`` maps names to modules."""

    actions = {}

    def run(self, ctx, parameters):
        module = self.actions.get(ctx.action)
        if module is None:
            raise Err(_types.ActionError_Failed(
                "this component has no Python action '%s'" % ctx.action))
        out, err = _Tee(sys.stdout), _Tee(sys.stderr)
        sys.stdout, sys.stderr = out, err
        failure = None
        try:
            cls = action_class(module)
            config = json.loads(_config.get())
            service = ActionService("%s.%s:" % (ctx.pack, cls.__name__))
            value = cls(config=config, action_service=service).run(**json.loads(parameters))
            succeeded = True
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
                succeeded, value = value
        except Exception as e:
            trace = traceback.format_exc()
            sys.stderr.write(trace)
            succeeded, value = False, None
            failure = ("%s: %s" % (type(e).__name__, e), trace)
        finally:
            sys.stdout, sys.stderr = out.inner, err.inner
            sys.stdout.flush()
            sys.stderr.flush()
        result = {
            "result": value,
            "stdout": out.kept.getvalue(),
            "stderr": err.kept.getvalue(),
            "exit_code": 0 if succeeded else 1,
        }
        if failure is not None:
            result["error"], result["traceback"] = failure
        text = json.dumps(result, default=str)
        if succeeded:
            return text
        raise Err(_types.ActionError_Failed(text))
