"""StackStorm's ``st2reactor`` import paths, for Python sensors run by Squall."""
