"""``python -m realtime`` is ``python -m realtime.mic`` (see its --help)."""
from realtime.mic import main

if __name__ == "__main__":
    raise SystemExit(main())
