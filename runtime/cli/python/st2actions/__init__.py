"""StackStorm's older st2actions package, as far as pack code imports it."""
