"""Where the browser tests leave their screenshots (under the git-ignored var/)."""
from pathlib import Path

SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "test" / "screenshots"
