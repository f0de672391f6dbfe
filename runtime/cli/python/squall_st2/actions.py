"""StackStorm's Python actions, on Squall.

A pack's Python action is a module with one subclass of ``Action``
(imported from ``st2common.runners.base_action``, or the older
``st2actions.runners.pythonrunner``) whose ``run(self, **parameters)``
returns a value, or ``(succeeded, value)``:

>>> from st2common.runners.base_action import Action
>>> class Greet(Action):
...     def run(self, name):
...         self.logger.info("greeting %s", name)
...         return "%s, %s" % (self.config.get("greeting", "hello"), name)

The pack's metadata says ``runner_type: python-script`` (or StackStorm's
older ``run-python``) and ``entry_point: greet.py``.
"""

import io
import json
import sys
import traceback

from componentize_py_types import Err
from wit_world.imports import config as _config
from wit_world.imports import squall_automation_types as _types

from squall_st2 import DatastoreService, get_logger

__all__ = ["Action", "ActionService", "ActionWorld"]


class ActionService(DatastoreService):
    """StackStorm's ``action_service``: the datastore, as an action sees it.

    A local key (the default) is the action's own,
    ``<pack>.<ActionClass>:<name>``; ``local=False`` names the tenant's
    shared key, as ``st2 key get <name>`` shows it.
    """

    def __init__(self, prefix):
        self._prefix = prefix

    def _key(self, name, local):
        return self._prefix + name if local else name


class Action:
    """StackStorm's base class of a Python action.

    - ``self.config``: the pack's config (``config.yaml``, checked against
      ``config.schema.yaml`` with its defaults), a ``dict``;
    - ``self.logger``: a ``logging.Logger`` whose lines are recorded with
      the execution (``squall execution get ID``);
    - ``self.action_service``: the datastore (``get_value``, ``set_value``,
      ``delete_value``, ``list_values``).

    ``print`` goes to the execution's ``stdout``. An exception fails the
    execution with its traceback in ``stderr``.
    """

    def __init__(self, config=None, action_service=None):
        self.config = config if config is not None else {}
        self.action_service = action_service
        self.logger = get_logger("%s.%s" % (type(self).__module__, type(self).__name__))

    def run(self, **kwargs):
        """Run the action with its parameters (validated, defaults applied).
        Return the result, or ``(succeeded, result)``."""
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
    """Runs the action an execution names; ``actions`` maps names to
    modules. Results are shaped as StackStorm's python runner shapes them:
    ``{"result", "stdout", "stderr", "exit_code"}``, plus ``"error"`` and
    ``"traceback"`` when ``run`` raised."""

    actions = {}
    # Each action's class, found when the component is built.
    classes = {}

    @classmethod
    def prepare(cls):
        """Called when the component is built, so that its snapshot holds
        what every execution would otherwise redo in a fresh interpreter:
        each action's class and logger found, and the dispatcher's own
        code (output capture, JSON, the result's shape) run, with a
        built-in action, until CPython has specialised it. None of the
        pack's code runs but its imports."""
        for name, module in cls.actions.items():
            try:
                found = action_class(module)
            except TypeError:
                continue  # reported when the action runs
            cls.classes[name] = found
            get_logger("%s.%s" % (found.__module__, found.__name__))
        for _ in range(8):
            _execute(lambda: _Warm, "squall", lambda: "{}", '{"message": "warm", "n": [1, 2.5, null]}',
                     io.StringIO(), io.StringIO())

    def run(self, ctx, parameters):
        module = self.actions.get(ctx.action)
        if module is None:
            raise Err(_types.ActionError_Failed(
                "this component has no Python action '%s'" % ctx.action))
        succeeded, text = _execute(
            lambda: self.classes.get(ctx.action) or action_class(module),
            ctx.pack, _config.get, parameters, sys.stdout, sys.stderr)
        if succeeded:
            return text
        raise Err(_types.ActionError_Failed(text))


class _Warm(Action):
    """The action ``ActionWorld.prepare`` runs at build time."""

    def run(self, message, n):
        print(message, n)
        return (True, {"message": message, "n": n})


def _execute(find_class, pack, read_config, parameters, stdout, stderr):
    """Run the action class ``find_class()`` returns with ``parameters``
    (JSON text) and the config ``read_config()`` returns (JSON text),
    capturing what it prints while passing it on to ``stdout`` and
    ``stderr``; (succeeded, the result as JSON)."""
    saved = sys.stdout, sys.stderr
    out, err = _Tee(stdout), _Tee(stderr)
    sys.stdout, sys.stderr = out, err
    failure = None
    try:
        cls = find_class()
        service = ActionService("%s.%s:" % (pack, cls.__name__))
        action = cls(config=json.loads(read_config()), action_service=service)
        value = action.run(**json.loads(parameters))
        succeeded = True
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
            succeeded, value = value
    except Exception as e:
        trace = traceback.format_exc()
        sys.stderr.write(trace)
        succeeded, value = False, None
        failure = ("%s: %s" % (type(e).__name__, e), trace)
    finally:
        sys.stdout, sys.stderr = saved
        stdout.flush()
        stderr.flush()
    result = {
        "result": value,
        "stdout": out.kept.getvalue(),
        "stderr": err.kept.getvalue(),
        "exit_code": 0 if succeeded else 1,
    }
    if failure is not None:
        result["error"], result["traceback"] = failure
    return succeeded, json.dumps(result, default=str)
