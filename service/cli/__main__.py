"""`python -m service.cli` runs `aat` (tests and the service images start it this way)."""

from service.cli import main

if __name__ == "__main__":
    main()
