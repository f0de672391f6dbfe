"""The older import path of StackStorm's ``Action`` base class."""

from squall_st2.actions import Action

__all__ = ["Action"]
