"""Pure functions from the recorded session to the report dict. Starts no process and
imports no measuring code."""
