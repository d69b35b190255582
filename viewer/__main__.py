"""``python -m viewer``: the live viewer window (see viewer.app and docs/VIEWER.md)."""
from viewer.app import main

if __name__ == "__main__":
    raise SystemExit(main())
