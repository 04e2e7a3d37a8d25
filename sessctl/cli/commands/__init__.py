"""One module per command group; :mod:`sessctl.cli.root` adds them to the ``sessctl`` group.

Each command is thin: it parses, calls the library, and formats. Runtime
modules are imported inside each command, so importing a command costs only click.
"""
