"""StackStorm's ``st2reactor.sensor`` import path."""
