"""The compute chip's RTL (``rtl/``), board files (``board/``) and ICD, shipped as package
data so an installed orbithil can simulate and synthesise outside a checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
RTL_DIR = PACKAGE_DIR / "rtl"
BOARD_DIR = PACKAGE_DIR / "board"
ICD_PATH = PACKAGE_DIR / "ICD.md"
