"""``python -m cosim``: the ``cosim`` command."""

if __name__ == "__main__":
    from cosim.cli.main import main

    raise SystemExit(main())
