"""StackStorm's older runner modules, as far as pack code imports them."""
