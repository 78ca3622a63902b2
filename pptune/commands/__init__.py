"""One module per CLI subcommand: ``add_parser(subparsers, name)`` and a ``run(args) -> int`` it sets as default."""
