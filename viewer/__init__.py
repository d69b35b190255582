"""Viewing the avatar: offline headless rendering (``python -m viewer.render``) and the live window
(``python -m viewer``). See docs/VIEWER.md."""
