"""One module per `fwbench` subcommand, each with its arguments and its handler."""
