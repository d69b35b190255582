"""Tiny PNG plotting for evaluation reports (no matplotlib): a numpy canvas, line panels, a zlib PNG writer."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

_FONT = {  # 3x5 glyphs, one octal digit (3 pixels) per row
    "0": "75557", "1": "26227", "2": "71747", "3": "71717", "4": "55711", "5": "74717", "6": "74757", "7": "71122",
    "8": "75757", "9": "75717", "A": "25755", "B": "65656", "C": "34443", "D": "65556", "E": "74647", "F": "74644",
    "G": "34553", "H": "55755", "I": "72227", "J": "11152", "K": "55655", "L": "44447", "M": "57755", "N": "65555",
    "O": "25552", "P": "65644", "Q": "25563", "R": "65655", "S": "34216", "T": "72222", "U": "55557", "V": "55552",
    "W": "55775", "X": "55255", "Y": "55222", "Z": "71247", " ": "00000", ".": "00002", ",": "00024", "-": "00700",
    "+": "02720", ":": "02020", "/": "11244", "(": "24442", ")": "21112", "=": "07070", "%": "51245", "_": "00007",
    "<": "12421", ">": "42124",
}
COLORS = {"gt": (40, 90, 200), "model": (230, 120, 20), "baseline": (60, 160, 60), "swapped": (150, 150, 150),
          "aux": (200, 40, 40), "axis": (60, 60, 60), "grid": (225, 225, 225)}


class Canvas:
    """An RGB image with lines, boxes and 3x5 text."""

    def __init__(self, width: int, height: int):
        self.img = np.full((height, width, 3), 255, np.uint8)

    def dot(self, x: np.ndarray, y: np.ndarray, color: tuple[int, int, int]) -> None:
        h, w = self.img.shape[:2]
        x, y = np.round(x).astype(int), np.round(y).astype(int)
        ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        self.img[y[ok], x[ok]] = color

    def polyline(self, x: np.ndarray, y: np.ndarray, color: tuple[int, int, int]) -> None:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x) == 1:
            self.dot(x, y, color)
        for i in range(len(x) - 1):
            n = int(max(abs(x[i + 1] - x[i]), abs(y[i + 1] - y[i]))) + 2
            t = np.linspace(0.0, 1.0, n)
            xs, ys = x[i] + t * (x[i + 1] - x[i]), y[i] + t * (y[i + 1] - y[i])
            for dx, dy in ((0, 0), (1, 0), (0, 1)):  # 2 px wide
                self.dot(xs + dx, ys + dy, color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        self.polyline(np.array([x0, x1, x1, x0, x0]), np.array([y0, y0, y1, y1, y0]), color)

    def text(self, x: int, y: int, s: str, color: tuple[int, int, int] = (0, 0, 0), scale: int = 2) -> None:
        for k, ch in enumerate(s.upper()):
            g = _FONT.get(ch, _FONT["-"])
            for r, digit in enumerate(g):
                bits = int(digit)
                for c in range(3):
                    if bits & (4 >> c):
                        x0, y0 = x + k * 4 * scale + c * scale, y + r * scale
                        self.img[max(0, y0):y0 + scale, max(0, x0):x0 + scale] = color


def write_png(path: str | Path, img: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG (zlib, no filter)."""
    img = np.ascontiguousarray(img, np.uint8)
    h, w = img.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    path = Path(path)
    path.write_bytes(png)
    return path


def plot_panels(path: str | Path, panels: list[dict[str, Any]], width: int = 960, panel_h: int = 200) -> Path:
    """Stacked line-plot panels. Each panel: title, series [(x, y, color, label)], optional vlines, logy, xlabel."""
    cv = Canvas(width, panel_h * len(panels))
    for k, p in enumerate(panels):
        _draw_panel(cv, p, k * panel_h, width, panel_h)
    return write_png(path, cv.img)


def _draw_panel(cv: Canvas, p: dict[str, Any], top: int, width: int, panel_h: int) -> None:
    pad_l, pad_r, pad_t, pad_b = 70, 20, 28, 22
    x0, x1, y0, y1 = pad_l, width - pad_r, top + pad_t, top + panel_h - pad_b
    series = [(np.asarray(x, np.float64), np.asarray(y, np.float64), c, lab) for x, y, c, lab in p["series"]]
    if p.get("logy"):
        series = [(x, np.log10(np.maximum(y, 1e-12)), c, lab) for x, y, c, lab in series]
    xs = np.concatenate([x for x, *_ in series]) if series else np.zeros(1)
    ys = np.concatenate([y for _, y, *_ in series]) if series else np.zeros(1)
    ys = ys[np.isfinite(ys)] if np.isfinite(ys).any() else np.zeros(1)
    xa, xb = float(np.nanmin(xs)), float(np.nanmax(xs))
    ya, yb = float(ys.min()), float(ys.max())
    if yb - ya < 1e-12:
        ya, yb = ya - 0.5, yb + 0.5
    if xb - xa < 1e-12:
        xb = xa + 1.0
    ya, yb = ya - 0.05 * (yb - ya), yb + 0.05 * (yb - ya)

    def px(x: np.ndarray) -> np.ndarray:
        return x0 + (x - xa) / (xb - xa) * (x1 - x0)

    def py(y: np.ndarray) -> np.ndarray:
        return y1 - (y - ya) / (yb - ya) * (y1 - y0)

    for v in p.get("vlines", []):
        if xa <= v <= xb:
            cv.polyline(px(np.array([v, v])), np.array([y0, y1], float), COLORS["grid"])
    cv.rect(x0, y0, x1, y1, COLORS["axis"])
    for x, y, c, _ in series:
        cv.polyline(px(x), py(y), c)
    cv.text(x0, top + 6, p["title"], (0, 0, 0))
    lx = width - pad_r
    for _, _, c, lab in reversed(series):
        lx -= (len(lab) + 2) * 8
        cv.text(lx, top + 6, lab, c)
    fy = (lambda v: f"1E{v:.1f}") if p.get("logy") else (lambda v: f"{v:.3g}")
    cv.text(4, y0, fy(yb), COLORS["axis"])
    cv.text(4, y1 - 10, fy(ya), COLORS["axis"])
    cv.text(x0, y1 + 6, f"{xa:.3g}", COLORS["axis"])
    xl = f"{xb:.3g} {p.get('xlabel', '')}".strip()
    cv.text(x1 - len(xl) * 8, y1 + 6, xl, COLORS["axis"])
