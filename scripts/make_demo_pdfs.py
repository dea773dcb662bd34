"""Write the demo's product documents (data/pdfs/): small real PDFs, made in the repo as the images are.

    python scripts/make_demo_pdfs.py
"""

from __future__ import annotations

from pathlib import Path

from ai_assets.testing.documents import pdf

ROOT = Path(__file__).resolve().parents[1] / "data" / "pdfs"
DOCUMENTS = {
    "x2-phone-manual": ["X2 phone quick guide.", "Charge the battery fully before first use: about two hours.",
                        "The screen dims after 30 seconds to save power.",
                        "Warranty: two years; a cracked screen is not covered."],
    "aero-laptop-warranty": ["Aero 14 laptop warranty.", "Hinges and keyboard are covered for three years.",
                             "Battery capacity below 70 percent within a year gets a free replacement.",
                             "Send the laptop in its original box."],
    "buds-care-sheet": ["Buds Pro care sheet.", "Clean the ear tips weekly with a dry cloth.",
                        "Noise cancelling drains the battery twice as fast.",
                        "Keep the case closed to avoid losing a bud."],
}


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    for name, lines in DOCUMENTS.items():
        (ROOT / f"{name}.pdf").write_bytes(pdf(lines))


if __name__ == "__main__":
    main()
