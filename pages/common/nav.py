"""The app's pages, read from the pages themselves: every file in pages/ whose docstring
names an icon is a concept page. Its docstring's first line is the title, the line
`icon: :material/name:` its icon, the paragraph after it what Home says of it. A new page is
listed by adding its file; ORDER only says where the known ones go."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parents[1]
ORDER = (
    "recommend",
    "gd1d",
    "sharpness",
    "lr",
    "schedules",
    "batch",
    "lr_batch_map",
    "bs_schedule",
    "noise",
    "autotune",
    "history",
)


@dataclass(frozen=True)
class PageInfo:
    path: str
    title: str
    icon: str
    concept: str  # the few sentences home shows


def read_page(path: Path) -> PageInfo | None:
    doc = ast.get_docstring(ast.parse(path.read_text(), filename=str(path))) or ""
    title, _, rest = doc.partition("\n")
    lines = rest.strip().splitlines()
    if not lines or not lines[0].startswith("icon:"):
        return None
    concept = " ".join(line.strip() for line in lines[1:] if line.strip())
    icon = lines[0].removeprefix("icon:").strip()
    return PageInfo(f"pages/{path.name}", title.strip(), icon, concept)


def concept_pages() -> list[PageInfo]:
    found = {p.stem: read_page(p) for p in sorted(PAGES_DIR.glob("*.py"))}
    known = [s for s in ORDER if found.get(s)]
    rest = [s for s in found if found[s] and s not in ORDER]
    return [found[s] for s in known + rest]


PAGES = concept_pages()
