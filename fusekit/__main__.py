"""``python -m fusekit`` is the ``fusekit`` command."""

from fusekit.cli import main

main()
