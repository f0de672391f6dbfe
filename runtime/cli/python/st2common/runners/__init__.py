"""StackStorm's runner base classes, as far as pack code imports them."""
