"""The command line: argv → calls into the library → rendered output and exit codes.

Only this package prints. It imports rich (and the heavy parts of pybuild) lazily, per command.
"""
