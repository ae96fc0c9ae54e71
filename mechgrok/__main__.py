"""`python -m mechgrok`: the command line."""

from mechgrok.cli import main

main()
