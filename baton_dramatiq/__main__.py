"""``python -m baton_dramatiq ...``: the same as the `baton` command."""

from .cli import main

if __name__ == "__main__":
    main()
