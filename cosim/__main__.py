"""``python -m cosim``: the ``cosim`` command."""

from cosim.cli.main import main

raise SystemExit(main())
