"""pyexamples.PyDirectorySensor: the Python twin of examples.DirectorySensor.

Every poll it lists the files under the directories the pack's config
names, compares their modification times with the previous poll's, and
dispatches ``pyexamples.changed_file`` for each file created, modified or
deleted.
"""

import os

from st2reactor.sensor.base import PollingSensor


class PyDirectorySensor(PollingSensor):
    def setup(self):
        self._logger = self._sensor_service.get_logger(__name__)
        self._seen = self._scan()
        self._logger.info("watching %d files", len(self._seen))

    def poll(self):
        now = self._scan()
        for path in sorted(self._seen.keys() - now.keys()):
            self._emit(path, self._seen[path], "deleted")
        for path in sorted(now.keys() - self._seen.keys()):
            self._emit(path, now[path], "created")
        for path in sorted(now.keys() & self._seen.keys()):
            if now[path] != self._seen[path]:
                self._emit(path, now[path], "modified")
        self._seen = now

    def _scan(self):
        """Each file's modification time, by path."""
        found = {}
        for top in self.config.get("directories", []):
            for parent, _dirs, files in os.walk(top):
                for name in files:
                    path = os.path.join(parent, name)
                    try:
                        found[path] = os.stat(path).st_mtime
                    except FileNotFoundError:
                        pass  # gone between the listing and the stat
        return found

    def _emit(self, path, mtime, status):
        self._sensor_service.dispatch(
            trigger="pyexamples.changed_file",
            payload={"path": path, "time": "%.3f" % mtime, "status": status},
        )
