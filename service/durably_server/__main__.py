"""`python -m durably_server` is the `durably` command."""

from durably_server.cli import main

main()
