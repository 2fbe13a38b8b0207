"""A module of the script's own (beside it): the warm process never imports it."""
import os

PID = os.getpid()
