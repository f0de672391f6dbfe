"""pyexamples.output_context: append a line to the pack's log file."""

from st2common.runners.base_action import Action


class OutputContext(Action):
    def run(self, context):
        path = self.config.get("log")
        if not path:
            return (False, "the pack's config names no log file (set `log`)")
        with open(path, "a") as out:
            out.write(context + "\n")
        count = int(self.action_service.get_value("lines") or 0) + 1
        self.action_service.set_value("lines", count)
        self.logger.info("line %d written to %s", count, path)
        return {"path": path, "lines": count}
