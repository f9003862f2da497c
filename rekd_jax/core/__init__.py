"""The lowest layer: what every other package may use, importing none of them.

parallel (the pmap axis name, replication), fileio (crash-safe outputs, the workdir lock,
local and gs:// paths), errors (the one-line failures of the command-line entry points),
progress (rate-limited progress lines with an ETA), logging (metric writers, quiet library
logs), checkpoint (Orbax), distributed (multi-host set-up), run_record (what a run leaves in its
workdir and the mode of run it holds) and invocation (how a command is started where the user
is).
"""
