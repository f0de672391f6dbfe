"""StackStorm's st2common, as far as pack code imports it under Squall."""
