"""StackStorm's Python sensors, on Squall.

A pack's Python sensor is a class named by the sensor's ``class_name``, in
the module its ``entry_point`` names, that subclasses ``PollingSensor`` or
``Sensor`` from ``st2reactor.sensor.base``:

>>> from st2reactor.sensor.base import PollingSensor
>>> class Heartbeat(PollingSensor):
...     def setup(self):
...         self._logger = self._sensor_service.get_logger(__name__)
...     def poll(self):
...         self._sensor_service.dispatch(trigger="mypack.beat", payload={"ok": True})
...     def cleanup(self): pass
...     def add_trigger(self, trigger): pass
...     def update_trigger(self, trigger): pass
...     def remove_trigger(self, trigger): pass

Squall runs each enabled sensor in one long-lived instance of the pack's
Python sensors' component. It calls ``setup`` once, then ``poll`` every
``poll_interval`` seconds of the metadata (a ``PollingSensor``), and tells
the sensor which triggers rules use with ``add_trigger``,
``update_trigger`` and ``remove_trigger``; ``cleanup`` comes before the
instance is dropped. Each call has a time limit. An exception from
``setup`` restarts the instance with backoff; one from ``poll`` is logged
and counted, and the next poll happens as usual.

A passive ``Sensor``'s ``run`` is called once, right after ``setup``, and
must return: Squall drives sensors by calls, so a ``run`` that loops for
ever reaches the call limit and is restarted. Write such a sensor as a
``PollingSensor`` whose ``poll`` does one round of the loop.
"""

import json
import os
import traceback

from componentize_py_types import Err
from wit_world.imports import config as _config
from wit_world.imports import events as _events

from squall_st2 import DatastoreService, get_logger

__all__ = ["PollingSensor", "Sensor", "SensorService", "SensorWorld"]

_SYSTEM = "system:"


class SensorService(DatastoreService):
    """StackStorm's ``sensor_service``: dispatching triggers, a logger, and
    the datastore.

    A local key (the default) is the sensor's own (stored as
    ``<pack>.<ClassName>:<name>``, and kept across restarts: put state that
    must survive one here). ``local=False`` reads and lists the tenant's
    shared keys; a sensor cannot change them.
    """

    def __init__(self, sensor_ref):
        self._logger = get_logger(sensor_ref)

    def _key(self, name, local):
        return name if local else _SYSTEM + name

    def get_logger(self, name):
        """A ``logging.Logger`` whose lines go to the sensor's log
        (``squall sensor logs <pack>.<ClassName>``).

        >>> self._logger = self._sensor_service.get_logger(__name__)
        """
        return get_logger(name)

    def dispatch(self, trigger, payload=None, trace_tag=None):
        """Emit a trigger instance of ``trigger`` (a trigger type the sensor
        declares, by ref or by name) with ``payload`` (a ``dict``).

        The payload is checked against the type's ``payload_schema``; one
        that fails is refused and logged with the sensor, as StackStorm
        does, and ``dispatch`` returns ``False``. On ``True`` the event is
        stored and the rules have decided.

        >>> self._sensor_service.dispatch(trigger="mypack.changed_file",
        ...                               payload={"path": "/srv/a", "status": "created"})
        True
        """
        text = json.dumps({} if payload is None else payload, default=str)
        try:
            _events.dispatch(trigger, text, None if trace_tag is None else str(trace_tag))
        except Err as e:
            self._logger.warning("dispatch of %s refused: %s", trigger, e.value)
            return False
        return True

    def dispatch_with_context(self, trigger, payload=None, trace_context=None):
        """``dispatch`` with StackStorm's trace context (an object or a
        ``dict`` with a ``trace_tag``, or the tag itself)."""
        tag = trace_context
        if isinstance(trace_context, dict):
            tag = trace_context.get("trace_tag")
        elif trace_context is not None and hasattr(trace_context, "trace_tag"):
            tag = trace_context.trace_tag
        return self.dispatch(trigger, payload, tag)


class Sensor:
    """StackStorm's base class of a sensor.

    - ``self._sensor_service`` (also ``self.sensor_service``): a
      ``SensorService``;
    - ``self._config`` (also ``self.config``): the pack's config, a
      ``dict``.
    """

    def __init__(self, sensor_service, config=None):
        self._sensor_service = sensor_service
        self.sensor_service = sensor_service
        self._config = config if config is not None else {}
        self.config = self._config

    def setup(self):
        """Called once, when the instance starts."""

    def run(self):
        """A passive sensor's work, called once after ``setup``; it must
        return (see the module's notes)."""

    def cleanup(self):
        """Called before the instance is dropped (disable, shutdown)."""

    def add_trigger(self, trigger):
        """A rule now uses ``trigger``: a ``dict`` with ``id``, ``type``
        (the trigger type's ref) and ``parameters``."""

    def update_trigger(self, trigger):
        """The trigger ``trigger["id"]`` now has ``trigger["parameters"]``."""

    def remove_trigger(self, trigger):
        """No rule uses ``trigger`` any more."""


class PollingSensor(Sensor):
    """StackStorm's base class of a sensor that polls: ``poll`` is called
    every ``poll_interval`` seconds, as the sensor's metadata says."""

    def __init__(self, sensor_service, config=None, poll_interval=5):
        super().__init__(sensor_service=sensor_service, config=config)
        self._poll_interval = poll_interval

    def poll(self):
        """One round of polling: look, and ``dispatch`` what is new."""
        raise NotImplementedError("a PollingSensor implements poll(self)")

    def get_poll_interval(self):
        return self._poll_interval

    def set_poll_interval(self, poll_interval):
        """Kept for StackStorm's sake; the metadata's ``poll_interval``
        sets the schedule."""
        self._poll_interval = poll_interval


def _failure(what):
    return "%s raised:\n%s" % (what, traceback.format_exc())


class SensorWorld:
    """The ``sensor`` export: runs the sensor this instance is started for
    (``SQUALL_SENSOR``, its class name); ``sensors`` maps class names to
    modules."""

    sensors = {}
    # The sensor object lives as long as the instance, whichever export
    # object the component's runtime calls through.
    _running = None

    def _sensor(self):
        running = SensorWorld._running
        if running is None:
            raise Err("the sensor was not set up")
        return running

    def setup(self):
        name = os.environ.get("SQUALL_SENSOR", "")
        module = self.sensors.get(name)
        if module is None:
            raise Err("this component has no Python sensor '%s' (it has: %s)"
                      % (name, ", ".join(sorted(self.sensors)) or "none"))
        cls = getattr(module, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Sensor)):
            raise Err("%s.py has no subclass of Sensor or PollingSensor named %s"
                      % (module.__name__.replace(".", "/"), name))
        try:
            config = json.loads(_config.get())
            service = SensorService("%s.%s" % (cls.__module__, name))
            sensor = cls(sensor_service=service, config=config)
            sensor.setup()
            if not isinstance(sensor, PollingSensor):
                sensor.run()
        except Exception:
            raise Err(_failure("%s.setup" % name)) from None
        SensorWorld._running = sensor

    def poll(self):
        sensor = self._sensor()
        if not isinstance(sensor, PollingSensor):
            return
        try:
            sensor.poll()
        except Exception:
            raise Err(_failure("%s.poll" % type(sensor).__name__)) from None

    def _announce(self, what, t):
        sensor = self._sensor()
        trigger = {"id": t.id, "type": t.type, "parameters": json.loads(t.parameters)}
        try:
            getattr(sensor, what)(trigger)
        except Exception:
            sensor._sensor_service._logger.error(_failure("%s.%s" % (type(sensor).__name__, what)))

    def add_trigger(self, t):
        self._announce("add_trigger", t)

    def update_trigger(self, t):
        self._announce("update_trigger", t)

    def remove_trigger(self, t):
        self._announce("remove_trigger", t)

    def cleanup(self):
        sensor = SensorWorld._running
        SensorWorld._running = None
        if sensor is None:
            return
        try:
            sensor.cleanup()
        except Exception:
            sensor._sensor_service._logger.error(_failure("%s.cleanup" % type(sensor).__name__))
