"""The bibliography's labels in author-year form, matching the book's citations.

The book cites author-year ({cite:p}`li2022fdcam` -> "(Li et al., 2022)", `_config.yml`:
``bibtex_reference_style: author_year``), but pybtex's formatting styles label the entries
of the bibliography list alpha ("[LLMW22]") or by number. This Sphinx extension registers the
pybtex style ``author_year``: the ``plain`` formatting with labels "Li et al., 2022", sorted
by author and year; `_config.yml` selects it with ``bibtex_default_style``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


class AuthorYearLabels(BaseLabelStyle):
    """"Li et al., 2022"; "Simonyan and Zisserman, 2015"; "Everingham et al., 2010"."""

    def format_labels(self, sorted_entries: Iterable[Any]) -> Iterator[str]:
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [" ".join(p.last_names) or " ".join(p.first_names) for p in people]
            if not names:
                who = entry.fields.get("title", entry.key)[:20]
            elif len(names) == 1:
                who = names[0]
            elif len(names) == 2:
                who = f"{names[0]} and {names[1]}"
            else:
                who = f"{names[0]} et al."
            yield f"{who}, {entry.fields.get('year', 'n.d.')}".replace("{", "").replace("}", "")


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabels
    default_sorting_style = "author_year_title"


def setup(app: Any) -> dict[str, Any]:
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
