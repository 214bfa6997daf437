"""The chapter registry, `notebooks/chapters.yml`: the book's chapters in order, what each reads
and which claims each owns.

One entry registers a chapter: the runner executes only registered templates, `_toc.yml` is
generated from it (`toc`), the ledger takes the verdict of each claim from the chapter that
owns it, and a parameter sweep tabulates each run's `headline` numbers
(`precisionlab.engine.headline`).
Profile parameters stay in `notebooks/profiles.yml`.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from precisionlab.validate import ParameterError

FILE = "notebooks/chapters.yml"
PROFILES = ("cpu", "smoke", "gpu")
NAME = re.compile(r"^\d\d_[a-z0-9_]+$")
PART_FIELDS = ("caption", "chapters")
CHAPTER_FIELDS = ("name", "claims", "inputs", "ledger", "headline")
HEADLINE_FIELDS = ("name", "file", "value", "where")
TOP_FIELDS = ("parts", "pages", "untested")


class RegistryError(ParameterError):
    """`notebooks/chapters.yml` (or profiles.yml) says something the book cannot build from."""


@dataclass(frozen=True)
class Headline:
    """Headline numbers of a chapter: the mean of column `value` of its results file `file`, over
    the rows whose columns equal `where`, one number per `name` formatted from the row."""

    name: str
    file: str
    value: str
    where: tuple[tuple[str, str | int | float | bool], ...] = ()  # (column, value) pairs


@dataclass(frozen=True)
class Chapter:
    """One registered chapter: template `notebooks/<name>.ipynb`, in part `part`."""

    name: str
    part: str
    claims: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    ledger: bool = False
    headline: tuple[Headline, ...] = ()


@dataclass(frozen=True)
class Part:
    caption: str
    chapters: tuple[Chapter, ...]


@dataclass(frozen=True)
class Registry:
    parts: tuple[Part, ...]
    untested: tuple[str, ...] = ()
    pages: tuple[str, ...] = ()  # Markdown pages of book/, in one part after every chapter

    @property
    def chapters(self) -> list[Chapter]:
        return [c for part in self.parts for c in part.chapters]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.chapters]

    def chapter(self, name: str) -> Chapter:
        """The entry of `name`, or an error saying how to register it."""
        for c in self.chapters:
            if c.name == name:
                return c
        raise RegistryError(f"chapter: {name!r} is not in {FILE}; add `- name: {name}` with the "
                            f"claims it owns to a part there (registered: {', '.join(self.names)})")

    def owners(self) -> dict[str, str]:
        """Claim id -> the chapter that owns it."""
        return {claim: c.name for c in self.chapters for claim in c.claims}

    def before(self, name: str) -> list[str]:
        """The chapters before `name`, in book order."""
        return self.names[: self.names.index(self.chapter(name).name)]

    def inputs(self, name: str) -> list[str]:
        """Globs of the files `name` reads: its declared inputs, and for a ledger chapter the
        verdict files of every chapter before it."""
        chapter = self.chapter(name)
        own = [f"data/verdicts/{c}.json" for c in self.before(name)] if chapter.ledger else []
        return [*chapter.inputs, *own]

    def depends_on(self, name: str) -> list[str]:
        """The chapters before `name` (book order) whose outputs its inputs read: a glob
        `data/<X>/...` reads each chapter matching X, `data/verdicts/<F>` each whose verdict file
        matches F; a parallel book runs `name` only after them."""
        earlier = self.before(name)
        found = set()
        for glob in self.inputs(name):
            parts = glob.split("/")
            if len(parts) < 3 or parts[0] != "data":
                continue
            if parts[1] == "verdicts":
                found |= {c for c in earlier if fnmatchcase(f"{c}.json", parts[2])}
            else:
                found |= {c for c in earlier if fnmatchcase(c, parts[1])}
        return [c for c in earlier if c in found]


def _fields(where: str, entry: object, allowed: tuple[str, ...], *required: str) -> dict:
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: must be a mapping with fields {', '.join(allowed)}; "
                            f"got {entry!r}")
    unknown = [k for k in entry if k not in allowed]
    if unknown:
        raise RegistryError(f"{where}.{unknown[0]}: unknown field; allowed: {', '.join(allowed)}")
    missing = [k for k in required if k not in entry]
    if missing:
        raise RegistryError(f"{where}.{missing[0]}: required field missing")
    return entry


def _strings(where: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RegistryError(f"{where}: must be a list of non-empty strings; got {value!r}")
    return tuple(value)


def _headline(where: str, value: object) -> tuple[Headline, ...]:
    """A chapter's `headline` list, each entry checked: a sweep must not find the typo."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RegistryError(f"{where}: must be a list of mappings with fields "
                            f"{', '.join(HEADLINE_FIELDS)}; got {value!r}")
    entries = []
    for k, raw in enumerate(value):
        at = f"{where}[{k}]"
        h = _fields(at, raw, HEADLINE_FIELDS, "name", "file", "value")
        for field in ("name", "file", "value"):
            if not isinstance(h[field], str) or not h[field].strip():
                raise RegistryError(f"{at}.{field}: must be a non-empty string; got {h[field]!r}")
        try:
            columns = [f for _, f, _, _ in string.Formatter().parse(h["name"]) if f is not None]
        except ValueError as err:
            raise RegistryError(f"{at}.name: not a valid name template ({err}); write a literal "
                                f"brace as {{{{ or }}}}; got {h['name']!r}") from None
        if not all(f and not f.isdigit() and not set(f) & set(".[]") for f in columns):
            raise RegistryError(f"{at}.name: each {{placeholder}} must name a column of the file "
                                f"(not {{}}, {{0}}, .attribute or [index]); got {h['name']!r}")
        if "/" in h["file"] or "\\" in h["file"] or not h["file"].endswith(".csv"):
            raise RegistryError(f"{at}.file: must be the name of a CSV file in the chapter's "
                                f"results folder data/<chapter>/ (e.g. final_accuracy.csv); "
                                f"got {h['file']!r}")
        rows = {} if h.get("where") is None else h["where"]
        if not isinstance(rows, dict) or not all(
                isinstance(c, str) and c and isinstance(v, (str, int, float, bool))
                for c, v in rows.items()):
            raise RegistryError(f"{at}.where: must map column names to single values "
                                f"(string, number or boolean); got {h.get('where')!r}")
        entries.append(Headline(h["name"], h["file"], h["value"], tuple(rows.items())))
    return tuple(entries)


def parse(table: object) -> Registry:
    """Validate the YAML content of the registry; every error names the field at fault."""
    top = _fields("chapters.yml", table, TOP_FIELDS, "parts")
    if not isinstance(top["parts"], list) or not top["parts"]:
        raise RegistryError("parts: must be a non-empty list of parts")
    parts = []
    for i, raw in enumerate(top["parts"]):
        if isinstance(raw, dict) and "pages" in raw:
            raise RegistryError(f"parts[{i}].pages: pages are listed once, at the top level "
                                "(`pages:`): they follow every chapter, so chapter NN is "
                                "numbered NN")
        part = _fields(f"parts[{i}]", raw, PART_FIELDS, "caption")
        chapters = []
        for j, rc in enumerate(part.get("chapters") or []):
            where = f"parts[{i}].chapters[{j}]"
            c = _fields(where, rc, CHAPTER_FIELDS, "name")
            if not isinstance(c["name"], str) or not NAME.match(c["name"]):
                raise RegistryError(f"{where}.name: must look like NN_topic (two digits, "
                                    f"lower-case words); got {c['name']!r}")
            if c.get("ledger", False) not in (True, False):
                raise RegistryError(f"{where}.ledger: must be one of true, false; "
                                    f"got {c['ledger']!r}")
            chapters.append(Chapter(c["name"], str(part["caption"]),
                                    _strings(f"{where}.claims", c.get("claims")),
                                    _strings(f"{where}.inputs", c.get("inputs")),
                                    bool(c.get("ledger", False)),
                                    _headline(f"{where}.headline", c.get("headline"))))
        if not chapters:
            raise RegistryError(f"parts[{i}].chapters: a part needs at least one chapter")
        parts.append(Part(str(part["caption"]), tuple(chapters)))
    registry = Registry(tuple(parts), _strings("untested", top.get("untested")),
                        _strings("pages", top.get("pages")))
    names = registry.names
    if names != sorted(set(names)):
        raise RegistryError(f"chapters: names must be unique and in book order (NN ascending); "
                            f"got {', '.join(names)}")
    owned = [claim for c in registry.chapters for claim in c.claims] + list(registry.untested)
    twice = sorted({claim for claim in owned if owned.count(claim) > 1})
    if twice:
        raise RegistryError(f"claims: {', '.join(twice)} listed more than once (a claim has one "
                            "owning chapter, or is untested)")
    return registry


def load(root: Path) -> Registry:
    """The project's registry, validated."""
    import yaml

    path = root / FILE
    if not path.is_file():
        raise RegistryError(f"{FILE}: not found; it lists the book's chapters (CONTRIBUTING.md)")
    try:
        table = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RegistryError(f"{FILE}: not valid YAML: {err}") from None
    return parse(table)


def check_claims(registry: Registry, catalog_ids: list[str]) -> None:
    """Every claim of data/claims.csv is owned by one chapter or listed as untested, and every
    id the registry names is in data/claims.csv."""
    named = set(registry.owners()) | set(registry.untested)
    unknown = sorted(named - set(catalog_ids))
    if unknown:
        raise RegistryError(f"claims: {', '.join(unknown)} in {FILE} are not ids of "
                            "data/claims.csv")
    orphans = [c for c in catalog_ids if c not in named]
    if orphans:
        raise RegistryError(f"claims: {', '.join(orphans)} of data/claims.csv have no owner; add "
                            f"each to the `claims` of the chapter that tests it, or to "
                            f"`untested` in {FILE}")


def check_templates(registry: Registry, root: Path) -> None:
    """Each template `notebooks/NN_*.ipynb` is registered, and each registered one exists."""
    found = sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for name in found:
        registry.chapter(name)
    missing = [n for n in registry.names if n not in found]
    if missing:
        raise RegistryError(f"chapters: {', '.join(missing)} in {FILE} have no template "
                            f"notebooks/<name>.ipynb")


def check_profiles(registry: Registry, table: object) -> dict:
    """`notebooks/profiles.yml`: chapter -> profile -> parameters, for registered chapters and
    known profiles only (cpu sets nothing: the templates' defaults are the cpu book)."""
    table = table or {}
    if not isinstance(table, dict):
        raise RegistryError(f"profiles.yml: must map chapter names to profiles; got {table!r}")
    for name, profiles in table.items():
        registry.chapter(name)
        for profile in profiles or {}:
            if profile not in PROFILES[1:]:
                raise RegistryError(f"profiles.yml: {name}.{profile}: must be one of "
                                    f"{', '.join(PROFILES[1:])}")
    return table


PAGES_CAPTION = "Beyond the chapters"


def toc(registry: Registry) -> str:
    """The text of `_toc.yml` (Jupyter Book 1): the intro, each part's chapters, then the
    pages in one last part, so a chapter's number is its NN. (An unnumbered part breaks
    sphinx-external-toc's numbering styles, so the pages are numbered after the chapters.)"""
    lines = ["# Generated from notebooks/chapters.yml by `precisionlab toc`: edit that file.",
             "format: jb-book", "root: book/intro", "parts:"]
    for part in registry.parts:
        lines += [f"  - caption: {_caption(part.caption)}", "    numbered: true", "    chapters:"]
        lines += [f"      - file: book/{c.name}" for c in part.chapters]
    pages = list(registry.pages)
    if pages:
        lines += [f"  - caption: {PAGES_CAPTION}", "    numbered: true", "    chapters:"]
        lines += [f"      - file: book/{page}" for page in pages]
    return "\n".join(lines) + "\n"


def _caption(text: str) -> str:
    return json.dumps(text) if set(text) & set(":#'\"") else text
