"""Glyph masks from the fonts that ship inside matplotlib, and the choice of glyph classes.

A class is one Unicode code point. Each font that really draws it (in its character map,
not blank, not the `.notdef` box) gives one clean mask: the glyph scaled so that its
bounding box's longer side fills a fixed fraction of a square canvas, centred. Classes that
render alike (Latin A / Greek Alpha / Cyrillic A, l / 1 / I, o / O, ...) are dropped greedily.

Rendering goes through matplotlib's FT2Font, i.e. the FreeType that matplotlib vendors, so
the masks depend only on the pinned matplotlib wheel, not on system libraries.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.ft2font import FT2Font, LoadFlags

# Text fonts in matplotlib's ttf folder. The Computer Modern fonts use TeX encodings in which
# only the ASCII letters and digits sit at their Unicode positions; other code points in their
# character maps are different glyphs, so they are used for ASCII only (cmsy10 and cmex10,
# symbol fonts, not at all).
TEXT_FONTS: tuple[str, ...] = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
    "cmr10", "cmb10", "cmss10", "cmti10", "cmtt10", "cmmi10",
)
ASCII_ONLY_PREFIX = "cm"
# Fonts whose renders decide which classes look alike: the upright regular faces.
REFERENCE_FONTS: tuple[str, ...] = ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "STIXGeneral")

# Candidate classes as code point ranges, in order of preference: when two render alike, the
# earlier one is kept.
CANDIDATE_RANGES: tuple[tuple[int, int], ...] = (
    (0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A),            # digits, Latin
    (0xC6, 0xC6), (0xD0, 0xD0), (0xD8, 0xD8), (0xDE, 0xDF), (0xE6, 0xE6), (0xF0, 0xF0),
    (0xF8, 0xF8), (0xFE, 0xFE), (0x110, 0x111), (0x126, 0x127), (0x131, 0x131),
    (0x141, 0x142), (0x14A, 0x14B), (0x152, 0x153),      # Latin letters without diacritics
    (0x391, 0x3A9), (0x3B1, 0x3C9),                        # Greek
    (0x410, 0x44F),                                        # Cyrillic
    (0x531, 0x556), (0x561, 0x586),                        # Armenian
    (0x10D0, 0x10F0),                                      # Georgian
)
# Look-alikes that differ mainly in width or a small stroke, which the comparison of
# size-normalised, pooled masks cannot see.
KNOWN_LOOKALIKES: tuple[str, ...] = (
    "0O",          # zero, capital O
    "6\u0431",     # six, Cyrillic small be
    "y\u03b3",     # small y, Greek small gamma
    "\u03a6\u0444",  # Greek capital phi, Cyrillic small ef
)
MIN_INK = 20.0  # a render with less ink (in full pixels on the 64-pixel canvas) is blank
SIMILARITY_POOL = 4  # masks are compared at canvas / 4 resolution, which ignores small details


@dataclass(frozen=True)
class GlyphFont:
    """One font file, opened.

    Args:
        name: file name without `.ttf`.
        face: the FreeType face.
        codes: code points this font may draw (its character map, ASCII only for TeX fonts).
        notdef: the mask of its `.notdef` glyph, to recognise a missing character.
    """

    name: str
    face: FT2Font
    codes: frozenset[int]
    notdef: np.ndarray | None


def font_dir() -> Path:
    """matplotlib's folder of TrueType fonts."""
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def load_fonts(names: tuple[str, ...] = TEXT_FONTS, canvas: int = 64,
               fill: float = 0.75) -> list[GlyphFont]:
    """Open the text fonts that matplotlib ships, in the order of `names`.

    Args:
        names: font file names without `.ttf`; missing files are skipped.
        canvas: side of the square masks, in pixels.
        fill: fraction of the canvas that a glyph's longer side fills.
    """
    fonts = []
    for name in names:
        path = font_dir() / f"{name}.ttf"
        if not path.is_file():
            continue
        face = FT2Font(str(path))
        codes = face.get_charmap().keys()
        if name.startswith(ASCII_ONLY_PREFIX):
            codes = [code for code in codes if code < 0x80]
        notdef = render_glyph(face, 0, canvas, fill, glyph_index=True)
        fonts.append(GlyphFont(name, face, frozenset(codes), notdef))
    return fonts


def render_glyph(face: FT2Font, code: int, canvas: int = 64, fill: float = 0.75,
                 glyph_index: bool = False) -> np.ndarray | None:
    """Render one glyph as a uint8 mask [canvas, canvas], scaled to fit and centred.

    Args:
        face: an opened font file.
        code: the code point (or the glyph index, with `glyph_index=True`).
        canvas: side of the mask in pixels.
        fill: fraction of the canvas that the glyph's longer side fills.
        glyph_index: treat `code` as a glyph index (0 is `.notdef`).

    Returns:
        The mask, or None where the font lacks the character or its glyph has no outline.
    """
    def load(points: float):
        face.set_size(points, 72)  # at 72 dpi one point is one pixel
        if glyph_index:
            return face.load_glyph(code, LoadFlags.NO_HINTING)
        return face.load_char(code, LoadFlags.NO_HINTING)

    if not glyph_index and face.get_char_index(code) == 0:  # glyph 0 is .notdef
        return None
    reference_points = 64.0
    x0, y0, x1, y1 = load(reference_points).bbox  # 26.6 fixed point: 64 units per pixel
    side = max(x1 - x0, y1 - y0) / 64.0
    if side <= 0:
        return None
    glyph = load(reference_points * fill * canvas / side)
    buffer = np.zeros((2 * canvas, 2 * canvas), dtype=np.uint8)
    face.draw_glyph_to_bitmap(buffer, canvas // 2, canvas // 2, glyph)
    rows, cols = np.flatnonzero(buffer.any(axis=1)), np.flatnonzero(buffer.any(axis=0))
    if rows.size == 0:
        return None
    crop = buffer[rows.min():rows.max() + 1, cols.min():cols.max() + 1][:canvas, :canvas]
    mask = np.zeros((canvas, canvas), dtype=np.uint8)
    top, left = (canvas - crop.shape[0]) // 2, (canvas - crop.shape[1]) // 2
    mask[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    return mask


def is_drawn(font: GlyphFont, mask: np.ndarray | None) -> bool:
    """Whether a render shows a real glyph: not missing, not blank, not the `.notdef` box."""
    if mask is None or mask.sum(dtype=np.float64) / 255.0 < MIN_INK:
        return False
    return font.notdef is None or not np.array_equal(mask, font.notdef)


def candidate_code_points() -> list[int]:
    """Letters and digits that may become classes, in order of preference."""
    codes = [code for start, stop in CANDIDATE_RANGES for code in range(start, stop + 1)]
    return [code for code in codes if unicodedata.category(chr(code)) in ("Lu", "Ll", "Lo", "Nd")]


def class_name(code: int) -> str:
    """The class name of a code point: its Unicode name in lower case."""
    return unicodedata.name(chr(code)).lower()


def same_letter(a: int, b: int) -> bool:
    """Whether two code points are the upper and lower case of one letter."""
    return a != b and chr(a).casefold() == chr(b).casefold()


def similarity_features(masks: list[np.ndarray], pool: int = SIMILARITY_POOL) -> np.ndarray:
    """Unit-norm, zero-mean, average-pooled masks [len(masks), (canvas / pool)**2], float64."""
    stack = np.stack(masks).astype(np.float64) / 255.0
    count, side = stack.shape[0], stack.shape[1] // pool
    blocks = stack[:, :side * pool, :side * pool].reshape(count, side, pool, side, pool)
    pooled = blocks.mean(axis=(2, 4))
    flat = pooled.reshape(count, -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)


def glyph_similarity(fonts: list[GlyphFont], codes: list[int], canvas: int = 64,
                     fill: float = 0.75,
                     reference: tuple[str, ...] = REFERENCE_FONTS) -> np.ndarray:
    """Pairwise similarity [len(codes), len(codes)] of classes: the highest cosine similarity of
    their pooled masks over the reference fonts that draw both (-1 where none does).

    Args:
        fonts: opened fonts, see `load_fonts`.
        codes: the code points to compare.
        canvas: mask side in pixels.
        fill: fraction of the canvas a glyph fills.
        reference: names of the fonts to compare in.
    """
    best = np.full((len(codes), len(codes)), -1.0)
    for font in fonts:
        if font.name not in reference:
            continue
        masks = [render_glyph(font.face, code, canvas, fill) if code in font.codes else None
                 for code in codes]
        drawn = [i for i, mask in enumerate(masks) if is_drawn(font, mask)]
        if not drawn:
            continue
        features = similarity_features([masks[i] for i in drawn])
        index = np.ix_(drawn, drawn)
        best[index] = np.maximum(best[index], features @ features.T)
    return best


def drop_lookalikes(codes: list[int], similarity: np.ndarray, duplicate: float,
                    case_pair: float, known: tuple[str, ...] = KNOWN_LOOKALIKES) -> list[int]:
    """Keep, greedily in order, the classes that do not render like an earlier candidate.

    A candidate is dropped when it is at least `duplicate` similar to any earlier candidate, kept
    or dropped (so a look-alike of a dropped look-alike goes too: o ~ O, Greek omicron ~ o), at
    least `case_pair` similar to its other case (o / O, s / S, x / X, ...), or in a `known`
    group with an earlier candidate.

    Args:
        codes: candidates in order of preference.
        similarity: [len(codes), len(codes)] from `glyph_similarity`.
        duplicate: similarity from which two classes count as the same.
        case_pair: lower threshold for the two cases of one letter.
        known: strings of characters that count as the same.
    """
    similarity = similarity.copy()
    position = {code: i for i, code in enumerate(codes)}
    for group in known:
        members = [position[ord(char)] for char in group if ord(char) in position]
        similarity[np.ix_(members, members)] = 1.0
    kept = []
    for i, code in enumerate(codes):
        earlier = similarity[i, :i]
        case = np.array([same_letter(code, other) for other in codes[:i]], dtype=bool)
        if not (np.any(earlier >= duplicate) or np.any(earlier[case] >= case_pair)):
            kept.append(code)
    return kept
